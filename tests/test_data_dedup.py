"""Fuzzy dedup (datatrove MinHash stages, CJK-aware shingles) and eval-set decontamination."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

from finloom.data.decontam import Decontaminate, question_stem
from finloom.data.dedup import MinhashSettings, run_minhash_dedup, shingle_set, stage_stats
from finloom.data.minhash_pairs import MinhashComponents, MinhashVerifyPairs
from finloom.recipe import STARTER_DATA_DIR

EN_VOCAB = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in ("", "n", "r", "sh")]
ZH_CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你主下"
            "而过子后年发经同工已方动想都两体制机当使点从业本去把性好应开它合还因由其些然前外"
            "天政四日那社义事平形相全表间")


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _read(folder: Path) -> dict[str, dict]:
    records = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            records[record["id"]] = record
    return records


def _english_doc(rng: random.Random, words: int = 200) -> list[str]:
    return [rng.choice(EN_VOCAB) for _ in range(words)]


def _substitute(rng: random.Random, tokens: list[str], count: int, vocab) -> list[str]:
    edited = list(tokens)
    for index in rng.sample(range(len(edited)), count):
        edited[index] = rng.choice(vocab)
    return edited


def _chinese_clauses(rng: random.Random, clauses: int = 60, length: int = 20) -> list[str]:
    return ["".join(rng.choice(ZH_CHARS) for _ in range(length)) for _ in range(clauses)]


def _chinese_text(clauses: list[str]) -> str:
    return "，".join(clauses) + "。"


def _run(tmp: Path, records: list[dict], settings: MinhashSettings | None = None, name: str = "run"):
    _write(tmp / "input" / "docs.jsonl", records)
    counts = run_minhash_dedup(tmp / "input", tmp / name / "kept", tmp / name / "work", settings or MinhashSettings(),
                               exclusion_folder=tmp / name / "removed")
    return counts, _read(tmp / name / "kept"), _read(tmp / name / "removed")


@pytest.fixture(scope="module")
def english_records() -> list[dict]:
    rng = random.Random(0)
    records = []
    for index in range(30):
        base = _english_doc(rng)
        records.append({"id": f"en{index}", "text": " ".join(base) + "."})
        if index < 10:
            records.append({"id": f"en{index}-near", "text": " ".join(_substitute(rng, base, 2, EN_VOCAB)) + "."})
        elif index < 15:
            records.append({"id": f"en{index}-rewrite", "text": " ".join(_substitute(rng, base, 40, EN_VOCAB)) + "."})
    return records


def test_english_near_duplicates_removed_distinct_kept_and_counts_add_up(tmp_path, english_records):
    counts, kept, removed = _run(tmp_path, english_records)
    pairs = [(f"en{i}", f"en{i}-near") for i in range(10)]
    assert all((a in removed) != (b in removed) for a, b in pairs)
    assert set(removed) <= {doc_id for pair in pairs for doc_id in pair}
    assert {f"en{i}-rewrite" for i in range(10, 15)} <= set(kept)
    assert counts["documents"] == len(english_records) == 45
    assert counts["removed"] == len(removed) == 10
    assert counts["kept"] == len(kept) == 35
    assert {r["metadata"]["filter_reason"] for r in removed.values()} == {"near_duplicate"}
    assert kept.keys().isdisjoint(removed)


def test_chinese_near_duplicates_need_character_shingles(tmp_path):
    rng = random.Random(1)
    records = []
    for index in range(8):
        clauses = _chinese_clauses(rng)
        # one character changed in every eighth clause: 8 edits in 1,200 characters
        edited = [c[:7] + rng.choice(ZH_CHARS.replace(c[7], "")) + c[8:] if i % 8 == 3 else c
                  for i, c in enumerate(clauses)]
        records += [{"id": f"zh{index}", "text": _chinese_text(clauses)},
                    {"id": f"zh{index}-near", "text": _chinese_text(edited)}]
    records += [{"id": f"zh-other{i}", "text": _chinese_text(_chinese_clauses(rng))} for i in range(8)]

    chars, words = MinhashSettings(), MinhashSettings(shingle="words")

    def jaccard(settings: MinhashSettings) -> float:
        a, b = shingle_set(records[0]["text"], settings), shingle_set(records[1]["text"], settings)
        return len(a & b) / len(a | b)

    # datatrove's word tokenizers leave each unspaced clause as one "word": every 5-clause shingle
    # around an edit changes, while character shingles barely move.
    assert jaccard(chars) > 0.9
    assert jaccard(words) < 0.3

    counts, _, removed = _run(tmp_path, records, chars, "chars")
    assert counts["removed"] == 8
    assert all((f"zh{i}" in removed) != (f"zh{i}-near" in removed) for i in range(8))
    assert not any(doc_id.startswith("zh-other") for doc_id in removed)

    counts, _, removed = _run(tmp_path, records, words, "words")
    assert counts["removed"] == 0 and not removed


def test_dedup_is_deterministic_and_resumes_from_markers(tmp_path, english_records):
    _run(tmp_path, english_records, name="first")
    _run(tmp_path, english_records, name="second")
    for folder in ("kept", "removed"):
        first = sorted((tmp_path / "first" / folder).glob("*.jsonl"))
        second = sorted((tmp_path / "second" / folder).glob("*.jsonl"))
        assert [p.name for p in first] == [p.name for p in second]
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    before = (tmp_path / "first" / "kept" / "00000.jsonl").stat().st_mtime_ns
    counts, _, _ = _run(tmp_path, english_records, name="first")
    assert (tmp_path / "first" / "kept" / "00000.jsonl").stat().st_mtime_ns == before
    assert counts == {"documents": 45, "kept": 35, "removed": 10,
                      "candidate_pairs": counts["candidate_pairs"], "duplicate_pairs": counts["duplicate_pairs"]}


def test_bundled_corpora_planted_near_duplicates(tmp_path):
    """Which copy of a pair survives is the clusterer's choice (the bundled copies come before their
    original as often as after), so a planted group counts as found when exactly one member is kept."""
    records = [json.loads(line) for name in ("finance_corpus", "general_corpus")
               for line in (STARTER_DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    counts, _, removed = _run(tmp_path, records)
    groups: dict[str, set[str]] = {}
    for record in records:
        if record.get("planted") in ("near_dup", "exact_dup"):
            groups.setdefault(record["dup_of"], {record["dup_of"]}).add(record["id"])
    near_dups = [r for r in records if r.get("planted") == "near_dup"]
    found = [r for r in near_dups if len(groups[r["dup_of"]] - set(removed)) == 1]
    in_groups = set().union(*groups.values())
    others = [r["id"] for r in records if r["id"] not in in_groups]
    assert len(found) / len(near_dups) >= 0.9
    assert sum(doc_id in removed for doc_id in others) <= 0.01 * len(others)
    assert counts["documents"] == len(records) == counts["kept"] + counts["removed"]


EVAL_STEM = ("Which of the following statements about the liquidity coverage ratio of a commercial bank "
             "under stress are correct?")
EVAL_OPTION = ("It compares the stock of high quality liquid assets with total net cash outflows over the next "
               "thirty calendar days.")
ZH_STEM = "下列关于商业银行流动性覆盖率在压力情景下的计算口径与监管要求的表述中，正确的是："


@pytest.fixture()
def eval_files(tmp_path) -> list[Path]:
    mcq = tmp_path / "eval_mcq.jsonl"
    _write(mcq, [
        {"id": "q1", "question": f"{EVAL_STEM}\nA.{EVAL_OPTION}\nB.It is a capital ratio.\nC.None.\nD.All.",
         "answer": "A"},
        {"id": "q2", "question": f"{ZH_STEM}\nA．按三十天压力情景计算。\nB．不适用于银行。", "answer": "A"},
    ])
    scenarios = tmp_path / "eval_scenarios.jsonl"
    _write(scenarios, [{"id": "s1", "prompt": "Draft a memo for the board explaining why the bank's net stable "
                                              "funding ratio fell below one hundred percent last quarter."}])
    return [mcq, scenarios]


def _docs(texts: dict[str, str]) -> list[Document]:
    return [Document(text=text, id=doc_id) for doc_id, text in texts.items()]


def test_question_stem_stops_at_first_option_line():
    assert question_stem(f"{EVAL_STEM}\nA.{EVAL_OPTION}\nB.x") == f"{EVAL_STEM}\n"
    assert question_stem(f"{ZH_STEM}\nA．按三十天\nB．不") == f"{ZH_STEM}\n"
    assert question_stem("No options here.") == "No options here."


def test_decontaminate_drops_stems_keeps_short_phrases_and_options(eval_files):
    texts = {
        "leak": "Exam prep notes. " + EVAL_STEM.upper().replace(" ", "  ") + " The answer is A.",
        "leak-zh": "复习笔记：" + ZH_STEM.replace("，", ",") + "答案是A。",
        "phrase": "The liquidity coverage ratio of a commercial bank is watched by supervisors every day.",
        "phrase-zh": "商业银行流动性覆盖率是重要的监管指标。",
        "option": f"Definition: {EVAL_OPTION}",
        "scenario": "Board memo: why the bank's net stable funding ratio fell below one hundred percent "
                    "last quarter.",
    }
    step = Decontaminate(eval_files)
    kept = {doc.id for doc in step.run(_docs(texts))}
    assert kept == {"phrase", "phrase-zh", "option"}
    assert step.stats["dropped_contaminated"].total == 3
    assert step.stats["hits_eval_mcq"].total == 2
    assert step.stats["hits_eval_scenarios"].total == 1
    assert step.index_summary["eval_mcq"] == {"items": 2, "indexed_items": 2,
                                              "ngrams": step.index_summary["eval_mcq"]["ngrams"]}
    assert step.hits(texts["leak"]) == {"eval_mcq": ["q1"]}
    assert step.hits(texts["leak-zh"]) == {"eval_mcq": ["q2"]}

    with_options = Decontaminate(eval_files, include_options=True)
    assert with_options.hits(texts["option"]) == {"eval_mcq": ["q1"]}


def test_decontaminate_flag_mode_keeps_documents_with_hits(eval_files):
    step = Decontaminate(eval_files, action="flag")
    docs = list(step.run(_docs({"leak": f"Notes: {EVAL_STEM}", "clean": "Nothing to see here."})))
    assert [doc.id for doc in docs] == ["leak", "clean"]
    assert docs[0].metadata["decontam_hits"] == {"eval_mcq": ["q1"]}
    assert "decontam_hits" not in docs[1].metadata
    assert step.stats["flagged"].total == 1


def test_bundled_mcq_options_appear_in_corpora_but_stems_do_not():
    evals = [STARTER_DATA_DIR / f"eval_{name}.jsonl" for name in ("finance_mcq", "general_mcq")]
    corpus = [json.loads(line)["text"] for name in ("finance_corpus", "general_corpus")
              for line in (STARTER_DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    stems, options = Decontaminate(evals), Decontaminate(evals, include_options=True)
    assert sum(bool(stems.hits(text)) for text in corpus) == 0
    assert sum(bool(options.hits(text)) for text in corpus) > 0.9 * len(corpus)


def test_several_signature_tasks_find_the_same_duplicates(tmp_path, english_records):
    """Pair verification maps (file, document) of every signature task to one row space: with the input in
    two files and two tasks, the removed documents are those of one task."""
    _write(tmp_path / "input" / "a.jsonl", english_records[: len(english_records) // 2])
    _write(tmp_path / "input" / "b.jsonl", english_records[len(english_records) // 2:])
    removed = {}
    for tasks in (1, 2):
        counts = run_minhash_dedup(tmp_path / "input", tmp_path / f"kept{tasks}", tmp_path / f"work{tasks}",
                                   exclusion_folder=tmp_path / f"removed{tasks}", tasks=tasks)
        removed[tasks] = set(_read(tmp_path / f"removed{tasks}"))
        assert counts["removed"] == len(removed[tasks]) == 10
    assert removed[1] == removed[2]


def test_verify_in_parts_under_a_small_budget_removes_the_same(tmp_path, english_records):
    """A budget below what the pairs need makes the check split them into units (one more read of the
    signatures each); the verified pairs, and so the removals, are the same as in one unit."""
    _write(tmp_path / "input" / "docs.jsonl", english_records)
    outcome = {}
    for name, memory_mb in (("one", 1024), ("parts", 0.0004)):
        counts = run_minhash_dedup(tmp_path / "input", tmp_path / name / "kept", tmp_path / name / "work",
                                   MinhashSettings(verify_memory_mb=memory_mb), exclusion_folder=tmp_path / name / "removed")
        verify = stage_stats(tmp_path / name / "work" / "logs" / "minhash_verify", MinhashVerifyPairs)
        outcome[name] = (counts, set(_read(tmp_path / name / "removed")), verify)
    (one_counts, one_removed, one_stats), (parts_counts, parts_removed, parts_stats) = outcome["one"], outcome["parts"]
    assert one_stats["units"] == 1 and one_stats["unit_splits"] == 0
    assert parts_stats["units"] > 2 and parts_stats["unit_splits"] >= parts_stats["units"] - 1
    assert parts_stats["unique_candidate_pairs"] == one_stats["unique_candidate_pairs"]
    assert parts_counts == one_counts and parts_removed == one_removed and len(one_removed) == 10


def _pair_graph(folder: Path, docs_per_file: list[int], pairs: list[tuple[int, int, int, int]]) -> None:
    """Signature files of bucket 0 holding ``docs_per_file`` documents each, and ``pairs`` as one .dups file."""
    dtype = np.dtype([("sig", "<u8", (MinhashSettings.hashes_per_bucket,)), ("doc", "<u4")])
    for file_id, count in enumerate(docs_per_file):
        path = folder / "signatures" / "bucket_000" / f"{file_id:05d}.minhash.sig"
        path.parent.mkdir(parents=True, exist_ok=True)
        records = np.zeros(count, dtype)
        records["doc"] = np.arange(count)
        path.write_bytes(records.tobytes())
    (folder / "pairs").mkdir(parents=True, exist_ok=True)
    (folder / "pairs" / "00000_00.dups").write_bytes(np.array(pairs, "<u4").reshape(-1, 4).tobytes())


def _read_u4(path: Path, columns: int) -> list[list[int]]:
    return np.frombuffer(path.read_bytes(), "<u4").reshape(-1, columns).tolist() if path.exists() else []


def test_components_keep_the_first_document_of_each_chain_across_files(tmp_path):
    # file 0 docs 0-5, file 1 docs 0-3 (rows 6-9). A chain 5 - (1,2) - 3 - (1,0) spanning both files,
    # given out of order; a pair 1 - 4 and one colliding twice (as in two buckets); 0, 2 and (1,1), (1,3) alone.
    pairs = [(0, 3, 1, 0), (0, 5, 1, 2), (1, 2, 0, 3), (0, 4, 0, 1), (0, 1, 0, 4)]
    _pair_graph(tmp_path, [6, 4], pairs)
    step = MinhashComponents(str(tmp_path / "signatures"), str(tmp_path / "pairs"), str(tmp_path / "out"),
                             MinhashSettings().minhash_config(), save_cluster_id=True)
    step.run()
    assert _read_u4(tmp_path / "out" / "000000.remove", 1) == [[4], [5]]
    assert _read_u4(tmp_path / "out" / "000001.remove", 1) == [[0], [2]]
    # cluster 0 is the one kept by row 1, cluster 1 the one kept by row 3
    assert _read_u4(tmp_path / "out" / "000000.clusters", 2) == [[1, 0], [3, 1], [4, 0], [5, 1]]
    assert _read_u4(tmp_path / "out" / "000001.clusters", 2) == [[0, 1], [2, 1]]
    assert step.stats["to_remove"].total == 4 and step.stats["clusters"].total == 2


def test_components_group_like_datatrove_union_find(tmp_path):
    """On a random pair graph the groups are those of datatrove's MinhashDedupCluster; only the survivor
    differs (datatrove keeps a union-by-size root, finloom the first document)."""
    rng = random.Random(3)
    docs = [300, 200]
    nodes = [(f, d) for f, n in enumerate(docs) for d in range(n)]
    pairs = [(*a, *b) for a, b in (rng.sample(nodes, 2) for _ in range(320))]
    _pair_graph(tmp_path, docs, pairs)
    config = MinhashSettings(num_buckets=1).minhash_config()
    MinhashComponents(str(tmp_path / "signatures"), str(tmp_path / "pairs"), str(tmp_path / "ours"), config,
                      save_cluster_id=True, chunk_pairs=50).run()
    MinhashDedupCluster(str(tmp_path / "pairs"), str(tmp_path / "theirs"), config=config, save_cluster_id=True).run()

    def groups(folder: Path) -> set[frozenset]:
        members: dict[int, set] = {}
        for file_id in range(len(docs)):
            for doc, cluster in _read_u4(folder / f"{file_id:06d}.clusters", 2):
                members.setdefault(cluster, set()).add((file_id, doc))
        return {frozenset(group) for group in members.values()}

    def removed(folder: Path) -> int:
        return sum(len(_read_u4(folder / f"{file_id:06d}.remove", 1)) for file_id in range(len(docs)))

    assert groups(tmp_path / "ours") == groups(tmp_path / "theirs")
    assert len(groups(tmp_path / "ours")) > 20
    assert removed(tmp_path / "ours") == removed(tmp_path / "theirs") == sum(len(g) - 1 for g in groups(tmp_path / "ours"))


def test_pairs_at_jaccard_half_to_three_quarters_are_kept(tmp_path):
    """Below the 0.8 threshold is not a near duplicate: pairs whose true shingle Jaccard is 0.5-0.75 both stay."""
    rng = random.Random(7)
    records, jaccards = [], []
    for index, edits in enumerate((7, 8, 9, 10, 11, 12)):
        base = _english_doc(rng)
        edited = list(base)
        for position in range(3, 3 + 16 * edits, 16):  # spaced apart: each edit breaks its own 5 shingles
            edited[position] = f"x{index}{position}"
        first, second = " ".join(base) + ".", " ".join(edited) + "."
        a, b = shingle_set(first, MinhashSettings()), shingle_set(second, MinhashSettings())
        jaccards.append(len(a & b) / len(a | b))
        records += [{"id": f"b{index}", "text": first}, {"id": f"b{index}-edited", "text": second}]
    assert all(0.5 <= j <= 0.75 for j in jaccards), jaccards
    counts, kept, removed = _run(tmp_path, records)
    assert removed == {} and counts["removed"] == 0 and len(kept) == 12
