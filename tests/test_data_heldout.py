"""Held-out text is really held out: documents overlapping the training text leave it, and the bundled sets are
written about topics no training text is about."""

from __future__ import annotations

import json

from finloom.data.heldout import remove_heldout_overlap

TRAIN = ("The central bank raised its policy rate by a quarter point on Tuesday, citing persistent services "
         "inflation and a tight labour market, and said further increases were possible if wage growth did not slow.")


def _write(path, texts):
    path.write_text("".join(json.dumps({"id": f"{path.stem}-{i}", "text": t, "metadata": {}}) + "\n"
                            for i, t in enumerate(texts)), encoding="utf-8")


def test_heldout_documents_sharing_training_ngrams_are_removed(tmp_path):
    clean, removed = tmp_path / "clean", tmp_path / "removed"
    clean.mkdir()
    removed.mkdir()
    _write(clean / "general.jsonl", [TRAIN, "Rivers carry sediment from mountains to the sea over thousands of years."])
    _write(clean / "finance.jsonl", [])
    unrelated = ("Mortgage lenders reported a sharp fall in applications for fixed-rate loans during the third quarter "
                 "as households waited for clearer signals on the direction of borrowing costs in the coming year.")
    half = TRAIN.split(", and said")[0] + ", and analysts in the city expected the statement to weigh on equities."
    _write(clean / "general_heldout.jsonl", [TRAIN, half, unrelated])
    result = remove_heldout_overlap(clean, removed, word_n=13, char_n=20, max_share=0.2)
    kept = [json.loads(line)["id"] for line in (clean / "general_heldout.jsonl").read_text().splitlines()]
    gone = [json.loads(line) for line in (removed / "heldout_overlap.jsonl").read_text().splitlines()]
    assert kept == ["general_heldout-2"]  # the unrelated document stays
    assert [d["id"] for d in gone] == ["general_heldout-0", "general_heldout-1"]  # the copy and the near copy go
    assert gone[0]["metadata"]["heldout_overlap"] == 1.0 and 0.2 < gone[1]["metadata"]["heldout_overlap"] < 1.0
    assert result == {"checked": 3, "removed": 2, "max_share_found": 1.0, "threshold": 0.2}


def test_the_data_stage_reports_heldout_overlap_and_the_funnel_adds_up(tiny_run):
    manifest = json.loads((tiny_run / "data" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["heldout_overlap"]["checked"] == 8  # the tiny held-out files: 4 + 4 documents
    funnel = metrics["funnel"]
    assert funnel["read"] == sum(funnel["kept"].values()) + sum(funnel["removed"].values())


def test_bundled_heldout_text_is_about_topics_no_training_text_is_about():
    """One entry in five is held out; its documents share few n-grams with the training text (before: every
    held-out document shared over a third of its 13-word n-grams with the corpus)."""
    from finloom.data.decontam import text_ngrams
    from finloom.recipe import STARTER_DATA_DIR
    from finloom.starter.generate import KB_DIR, load_knowledge_base

    kb = load_knowledge_base(KB_DIR)
    for corpus in ("finance", "general"):
        heldout_ids = {topic.id for topic in kb.heldout_topics(corpus)}
        assert heldout_ids and not heldout_ids & {topic.id for topic in kb.training_topics(corpus)}
        assert 0.1 < len(heldout_ids) / len(kb.topics(corpus)) < 0.3
        training = set()
        for name in (f"{corpus}_corpus.jsonl", f"sft_{corpus}.jsonl"):
            for line in (STARTER_DATA_DIR / name).read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                texts = [record["text"]] if "text" in record else [m["content"] for m in record["messages"]]
                training |= text_ngrams(texts, 13, 20)
        heldout = [json.loads(line)["text"] for line in
                   (STARTER_DATA_DIR / f"{corpus}_heldout.jsonl").read_text(encoding="utf-8").splitlines()]
        shares = [len(grams & training) / len(grams) for grams in (text_ngrams([t], 13, 20) for t in heldout) if grams]
        assert len(heldout) == 150
        assert max(shares) <= 0.2 and sum(shares) / len(shares) < 0.05, (corpus, max(shares))
