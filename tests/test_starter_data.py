"""The bundled starter data: generator invariants on a tiny fixture KB, and the committed files.

Every invariant runs on two datasets: a fresh generation from ``tests/fixtures/kb`` (always), and
the files committed under ``src/finloom/starter/data`` (when present), which must also equal a
fresh generation from the real knowledge base so they cannot drift from the code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finloom.starter.generate import (
    CLEAN_DOCS_PER_CORPUS,
    HELDOUT_DOCS_PER_CORPUS,
    DATA_DIR,
    KB_DIR,
    check_heldout,
    cn_id_check_char,
    Topic,
    generate_starter_data,
    heldout_split,
    iban_check_digits,
    load_knowledge_base,
    luhn_check_digit,
    planted_counts,
    question_stem,
)
from finloom.starter.kb_schema import CERTIFICATIONS, FINANCE_DOMAINS, GENERAL_CATEGORIES
from finloom.starter.rl_prompts import MCQ_MAX_LENGTH, text_length

FIXTURE_KB = Path(__file__).parent / "fixtures" / "kb"
REPO_ROOT = Path(__file__).resolve().parents[1]
CORPORA = ("general_corpus.jsonl", "finance_corpus.jsonl")
HELDOUT = ("general_heldout.jsonl", "finance_heldout.jsonl")
MCQ = ("eval_finance_mcq.jsonl", "eval_general_mcq.jsonl")
# Minimum sizes promised for the bundled files (the fixture KB is far too small to reach them).
MINIMUM_RECORDS = {
    "general_corpus.jsonl": 300, "finance_corpus.jsonl": 300, "sft_finance.jsonl": 300, "sft_general.jsonl": 100,
    "preferences.jsonl": 200, "eval_finance_mcq.jsonl": 300, "eval_general_mcq.jsonl": 150, "eval_finance_calc.jsonl": 200,
    "eval_scenarios.jsonl": 100, "general_heldout.jsonl": 150, "finance_heldout.jsonl": 150, "quality_labels.jsonl": 200,
    "domain_labels.jsonl": 300, "rl_prompts.jsonl": 450,
}
# Minimum RL prompts per category in each language (the committed files).
MINIMUM_RL_PER_LANGUAGE = {"mcq": 80, "calculation": 40, "constraints": 80}
MINIMUM_CORPUS_CHARS = 400_000


def read_dir(directory: Path) -> dict[str, list[dict]]:
    return {path.name: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            for path in sorted(directory.glob("*.jsonl"))}


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fixture-data")
    generate_starter_data(out, FIXTURE_KB)
    return out


@pytest.fixture(scope="module", params=["fixture", "committed"])
def dataset(request: pytest.FixtureRequest) -> tuple[dict[str, list[dict]], object]:
    """(records per file, knowledge base) for the fixture generation or the committed files."""
    if request.param == "fixture":
        return read_dir(request.getfixturevalue("fixture_dir")), load_knowledge_base(FIXTURE_KB)
    if not any(DATA_DIR.glob("*.jsonl")):
        pytest.skip("no committed starter data yet")
    return read_dir(DATA_DIR), load_knowledge_base(KB_DIR)


# ---------------------------------------------------------------------------------------------
# Checksums, against examples verified by hand
# ---------------------------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in reversed(re.sub(r"\D", "", number))]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def cn_id_valid(number: str) -> bool:
    """ISO 7064 MOD 11-2: weighted digit sum plus the check value (X = 10) is 1 mod 11."""
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    check = 10 if number[17] == "X" else int(number[17])
    return len(number) == 18 and (sum(int(d) * w for d, w in zip(number[:17], weights)) + check) % 11 == 1


def test_luhn_check_digit_matches_known_numbers():
    assert luhn_check_digit("7992739871") == "3"  # the textbook example 79927398713
    assert luhn_check_digit("411111111111111") == "1"  # Visa test card 4111 1111 1111 1111
    assert luhn_check_digit("622202100112345678") == "9"  # digit sum 61 by hand -> 9
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_iban_check_digits_match_published_examples():
    assert iban_check_digits("GB", "WEST12345698765432") == "82"  # GB82 WEST 1234 5698 7654 32
    assert iban_check_digits("DE", "370400440532013000") == "89"  # DE89 3704 0044 0532 0130 00
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB83 WEST 1234 5698 7654 32")


def test_cn_id_check_char_matches_standard_example():
    # GB 11643 example 11010519491231002X: weighted sum 167, 167 mod 11 = 2 -> "X".
    assert cn_id_check_char("11010519491231002") == "X"
    assert cn_id_check_char("44030519900101001") == "8"  # weighted sum 180 by hand, 180 mod 11 = 4 -> "8"
    assert cn_id_valid("11010519491231002X") and not cn_id_valid("110105194912310021")


# ---------------------------------------------------------------------------------------------
# Determinism and size
# ---------------------------------------------------------------------------------------------


def test_generation_is_byte_identical(fixture_dir: Path, tmp_path: Path):
    counts = generate_starter_data(tmp_path, FIXTURE_KB)
    assert sorted(counts) == sorted(p.name for p in fixture_dir.glob("*.jsonl"))
    for name, count in counts.items():
        assert (tmp_path / name).read_bytes() == (fixture_dir / name).read_bytes(), name
        assert len((tmp_path / name).read_text(encoding="utf-8").splitlines()) == count


def test_another_seed_gives_other_documents(fixture_dir: Path, tmp_path: Path):
    generate_starter_data(tmp_path, FIXTURE_KB, seed=1)
    assert (tmp_path / "finance_corpus.jsonl").read_bytes() != (fixture_dir / "finance_corpus.jsonl").read_bytes()


def test_files_are_sorted_key_utf8_jsonl(fixture_dir: Path):
    for path in fixture_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert line == json.dumps(record, ensure_ascii=False, sort_keys=True)


def test_committed_data_equals_fresh_generation(tmp_path: Path):
    committed = sorted(p.name for p in DATA_DIR.glob("*.jsonl"))
    if not committed:
        pytest.skip("no committed starter data yet")
    counts = generate_starter_data(tmp_path)
    assert committed == sorted(counts)
    for name in committed:
        assert (DATA_DIR / name).read_bytes() == (tmp_path / name).read_bytes(), f"{name} drifted from the generator"


def test_committed_data_meets_minimum_sizes():
    files = read_dir(DATA_DIR)
    if not files:
        pytest.skip("no committed starter data yet")
    for name, minimum in MINIMUM_RECORDS.items():
        assert len(files[name]) >= minimum, name
    for name in CORPORA:
        docs = files[name]
        assert sum(len(d["text"]) for d in docs) >= MINIMUM_CORPUS_CHARS, name
        share_en = sum(d["lang"] == "en" for d in docs) / len(docs)
        assert 0.4 <= share_en <= 0.6, name


def test_data_md_counts_match_committed_files():
    files = read_dir(DATA_DIR)
    if not files:
        pytest.skip("no committed starter data yet")
    table = dict(re.findall(r"^\|\s*`([a-z_]+\.jsonl)`\s*\|\s*([\d,]+)\s*\|", (REPO_ROOT / "DATA.md").read_text(encoding="utf-8"), re.M))
    assert sorted(table) == sorted(files)
    assert {name: int(count.replace(",", "")) for name, count in table.items()} == {n: len(r) for n, r in files.items()}


# ---------------------------------------------------------------------------------------------
# Corpora: layout, true material only, planted ground truth
# ---------------------------------------------------------------------------------------------


def false_statements(kb) -> list[str]:
    return [s for topic in kb.finance + kb.general for block in topic.blocks.values() for s in block.false]


def test_corpus_layout_and_planted_shares(dataset):
    files, _ = dataset
    expected = planted_counts(CLEAN_DOCS_PER_CORPUS)
    for name, source in zip(CORPORA, ("starter-general", "starter-finance")):
        docs = files[name]
        assert len({d["id"] for d in docs}) == len(docs)
        assert {d["source"] for d in docs} == {source}
        assert {d["lang"] for d in docs} == {"en", "zh"}
        assert {d["kind"] for d in docs} == {"explainer", "news", "report", "qa", "story", "glossary", "spam"}
        planted = {kind: sum(d.get("planted") == kind for d in docs) for kind in expected}
        assert planted == expected
        assert len(docs) == CLEAN_DOCS_PER_CORPUS + sum(expected.values())
        assert all(d["kind"] == "spam" for d in docs if d.get("planted") == "spam")
    for name in HELDOUT:
        assert len(files[name]) == HELDOUT_DOCS_PER_CORPUS and not any("planted" in d for d in files[name])


def test_training_text_holds_no_false_statement(dataset):
    files, kb = dataset
    clean = [d["text"] for name in CORPORA + HELDOUT for d in files[name]]
    clean += [m["content"] for name in ("sft_finance.jsonl", "sft_general.jsonl") for r in files[name] for m in r["messages"]]
    clean += [r["chosen"][0]["content"] for r in files["preferences.jsonl"]]
    blob = "\x00".join(clean)
    assert [s for s in false_statements(kb) if s in blob] == []


def shingles(text: str, size: int = 5) -> set[str]:
    return {text[i:i + size] for i in range(len(text) - size + 1)}


def test_duplicate_ground_truth_is_consistent(dataset):
    files, _ = dataset
    for name in CORPORA:
        docs = {d["id"]: d for d in files[name]}
        clean_texts = [d["text"] for d in docs.values() if "planted" not in d]
        assert len(set(clean_texts)) == len(clean_texts), "unplanted exact duplicates"
        for doc in docs.values():
            if doc.get("planted") in ("exact_dup", "near_dup"):
                original = docs[doc["dup_of"]]
                assert "planted" not in original and (original["lang"], original["kind"]) == (doc["lang"], doc["kind"])
                a, b = shingles(doc["text"]), shingles(original["text"])
                if doc["planted"] == "exact_dup":
                    assert doc["text"] == original["text"]
                else:
                    assert doc["text"] != original["text"] and len(a & b) / len(a | b) >= 0.7
            else:
                assert "dup_of" not in doc


PII_PATTERNS = {
    "email": r"[a-z0-9.]+@example\.(?:com|org|net)",
    "phone": r"1[3-9]\d{9}|\+44 (?:20 7946 0\d{3}|7700 900\d{3})|\+1 \d{3}-555-01\d{2}",
    "us_ssn": r"(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}",
    "cn_resident_id": r"\d{17}[\dX]",
    "bank_card": r"\d{16,19}|\d{4} \d{4} \d{4} \d{4}",
    "iban": r"(?:GB\d{2}[A-Z]{4}\d{14}|DE\d{20})|(?:GB\d{2} [A-Z]{4}|DE\d{2} \d{4})(?: \d{4}){3} \d{2}",
}


def test_planted_pii_is_valid_and_only_where_marked(dataset):
    files, _ = dataset
    for name in CORPORA:
        for doc in files[name]:
            if doc.get("planted") != "pii":
                assert "pii" not in doc and "@" not in doc["text"] and not re.search(r"\d{11}", doc["text"])
                continue
            assert doc["pii"]
            for item in doc["pii"]:
                value = item["value"]
                assert value in doc["text"] and re.fullmatch(PII_PATTERNS[item["type"]], value), item
                compact = value.replace(" ", "")
                if item["type"] == "bank_card":
                    assert 16 <= len(compact) <= 19 and luhn_valid(compact)
                if item["type"] == "iban":
                    assert len(compact) == 22 and iban_valid(compact)
                if item["type"] == "cn_resident_id":
                    assert cn_id_valid(value)


# ---------------------------------------------------------------------------------------------
# Evaluation sets
# ---------------------------------------------------------------------------------------------


def test_mcq_items_are_well_formed_and_correct(dataset):
    files, kb = dataset
    for name, topics, tasks in (("eval_finance_mcq.jsonl", kb.finance, CERTIFICATIONS), ("eval_general_mcq.jsonl", kb.general, GENERAL_CATEGORIES)):
        items = files[name]
        assert len(items) == 2 * len(topics)
        multi = 0
        for item in items:
            lines = item["question"].split("\n")
            assert [line[:1] for line in lines[1:]] == list("ABCD") and all(line[1] in ".\uff0e" for line in lines[1:])
            options = {line[0]: line[2:] for line in lines[1:]}
            answer = item["answer"]
            assert answer == "".join(sorted(set(answer))) and set(answer) <= set(options)
            assert item["task_name"] in tasks and question_stem(item["question"]) == lines[0]
            blocks = [t.blocks[item["lang"]] for t in topics if t.blocks[item["lang"]].subject == item["second_level"]]
            block = max((b for b in blocks if b.term.casefold() in lines[0].casefold()), key=lambda b: len(b.term))
            correct = {options[letter] for letter in answer}
            wrong = {options[letter] for letter in "ABCD" if letter not in answer}
            if len(answer) == 1:
                assert correct == {block.definition} and block.definition not in wrong and len(set(options.values())) == 4
            else:
                multi += 1
                assert 2 <= len(answer) <= 3 and correct <= set(block.facts) and wrong <= set(block.false)
        assert 0.15 <= multi / len(items) <= 0.45
    zh = [item for name in MCQ for item in files[name] if item["lang"] == "zh"]
    assert 0.25 <= sum("\uff0e" in item["question"] for item in zh) / len(zh) <= 0.75


def test_no_eval_prompt_occurs_in_training_files(dataset):
    files, _ = dataset
    training = "\x00".join(
        [d["text"] for name in CORPORA for d in files[name]]
        + [m["content"] for name in ("sft_finance.jsonl", "sft_general.jsonl") for r in files[name] for m in r["messages"]]
        + [m["content"] for r in files["preferences.jsonl"] for key in ("prompt", "chosen", "rejected") for m in r[key]]
    )
    stems = [question_stem(item["question"]) for name in MCQ for item in files[name]]
    stems += [r["question"] for r in files["eval_finance_calc.jsonl"]] + [r["prompt"] for r in files["eval_scenarios.jsonl"]]
    assert [s for s in stems if s in training] == []


def test_heldout_split_never_leaves_a_side_empty():
    topics = [Topic(id=f"t{i}", group="g", certification=None, blocks={}) for i in range(12)]
    for size in range(2, 13):
        heldout = heldout_split(topics[:size])
        assert 1 <= len(heldout) <= size - 1
        assert heldout == heldout_split(list(reversed(topics[:size])))[::-1]  # chosen by id, not by order
    assert 1 <= len(heldout_split(topics)) <= 12 // 2  # about one in five, not "the first"
    with pytest.raises(ValueError, match="at least 2 topics"):
        heldout_split(topics[:1])


def test_heldout_check_raises_on_a_leak(dataset):
    files, _ = dataset
    leaky = dict(files)
    stem = question_stem(files["eval_finance_mcq.jsonl"][0]["question"])
    leaky["sft_finance.jsonl"] = files["sft_finance.jsonl"] + [{"messages": [{"role": "user", "content": stem}]}]
    with pytest.raises(ValueError, match="evaluation prompt"):
        check_heldout(leaky)
    leaky = dict(files, **{"domain_labels.jsonl": [{"text": files["finance_corpus.jsonl"][0]["text"]}]})
    with pytest.raises(ValueError, match="occur in a corpus"):
        check_heldout(leaky)


def test_scenarios_one_record_per_entry_and_language(dataset):
    files, kb = dataset
    records = files["eval_scenarios.jsonl"]
    assert sorted(r["id"] for r in records) == sorted(f"{e.id}-{lang}" for e in kb.scenarios for lang in ("en", "zh"))
    assert all(sum(r["weights"].values()) == 100 and len(r["checklist"]) >= 3 for r in records)


def test_calc_problems_are_bundled(dataset):
    files, _ = dataset
    problems = files["eval_finance_calc.jsonl"]
    assert len(problems) >= 200 and {p["lang"] for p in problems} == {"en", "zh"}
    assert all(isinstance(p["answer"], float) and p["question"] for p in problems)


# ---------------------------------------------------------------------------------------------
# SFT, preferences, classifier labels
# ---------------------------------------------------------------------------------------------


def test_sft_conversations_are_chat_formatted(dataset):
    files, kb = dataset
    for name, corpus in (("sft_finance.jsonl", "finance"), ("sft_general.jsonl", "general")):
        records = files[name]
        assert len(records) == 2 * len(kb.training_topics(corpus))
        for record in records:
            roles = [m["role"] for m in record["messages"] if m["role"] != "system"]
            assert roles == ["user", "assistant"] * (len(roles) // 2) and all(m["content"] for m in record["messages"])
            assert record["messages"][0]["role"] in ("system", "user") and [m["role"] for m in record["messages"]].count("system") <= 1
        user_turns = [sum(m["role"] == "user" for m in r["messages"]) for r in records]
        assert max(user_turns) >= 2 and min(user_turns) == 1 and max(user_turns) <= 3
    records = files["sft_finance.jsonl"] + files["sft_general.jsonl"]
    assert 0.05 <= sum(r["messages"][0]["role"] == "system" for r in records) / len(records) <= 0.4


def test_preference_pairs(dataset):
    files, kb = dataset
    records = files["preferences.jsonl"]
    falsehoods = false_statements(kb)
    general_terms = {t.blocks[lang].term.casefold() for t in kb.general for lang in ("en", "zh")}
    scored = with_false = 0
    for record in records:
        assert [m["role"] for m in record["prompt"]] == ["user"]
        chosen, rejected = record["chosen"][0]["content"], record["rejected"][0]["content"]
        assert record["chosen"][0]["role"] == record["rejected"][0]["role"] == "assistant" and chosen != rejected
        with_false += any(s in rejected for s in falsehoods)
        if "score_chosen" in record:
            scored += 1
            assert 0.8 <= record["score_chosen"] <= 1.0 and 0.0 <= record["score_rejected"] <= 0.4
        else:
            assert "score_rejected" not in record
    assert 0.3 <= scored / len(records) <= 0.5 and with_false >= 0.2 * len(records)
    general = sum(any(term in r["prompt"][0]["content"].casefold() for term in general_terms) for r in records)
    assert 0.1 <= general / len(records) <= 0.3


def test_classifier_labels_are_balanced_and_disjoint_from_corpora(dataset):
    files, _ = dataset
    corpus = "\x00".join(d["text"] for name in CORPORA for d in files[name])
    quality, domain = files["quality_labels.jsonl"], files["domain_labels.jsonl"]
    assert {r["label"] for r in quality} == {"good", "bad"} and 0.4 <= sum(r["label"] == "good" for r in quality) / len(quality) <= 0.6
    assert {r["label"] for r in domain} == {"finance", "general"}
    for record in domain:
        assert (record["subdomain"] in FINANCE_DOMAINS) if record["label"] == "finance" else record["subdomain"] is None
    texts = [r["text"] for r in quality + domain] + [d["text"] for name in HELDOUT for d in files[name]]
    assert len(set(texts)) == len(texts) and not [t for t in texts if t in corpus]


# ---------------------------------------------------------------------------------------------
# RL prompts with verifiable answers
# ---------------------------------------------------------------------------------------------

RL_CATEGORIES = {"mcq": ("answer", "valid"), "calculation": ("expected", "unit", "tolerance"), "constraints": ("checks",)}
# A reply in the other language than the answer's, without a list or a risk warning.
WRONG_LANGUAGE_REPLY = {"en": "抱歉，这个问题我无法回答。", "zh": "Sorry, I cannot help with that."}


def rl_prompt(record: dict) -> str:
    assert [m["role"] for m in record["prompt"]] == ["user"]
    return record["prompt"][0]["content"]


def test_rl_prompts_layout_and_topics(dataset):
    files, kb = dataset
    records = files["rl_prompts.jsonl"]
    assert {(r["category"], r["lang"]) for r in records} == {(c, lang) for c in RL_CATEGORIES for lang in ("en", "zh")}
    assert len({r["id"] for r in records}) == len(records) and len({rl_prompt(r) for r in records}) == len(records)
    training = {t.id for corpus in ("finance", "general") for t in kb.training_topics(corpus)}
    finance_training = {t.id for t in kb.training_topics("finance")}
    for record in records:
        assert re.fullmatch(rf"rl-{record['category']}-\d{{4}}", record["id"]) and record["reference"]
        assert all(key in record for key in RL_CATEGORIES[record["category"]])
        if record["category"] == "mcq":
            assert record["topic"] in training and record["valid"] == "ABCD"
            assert record["answer"] == "".join(sorted(set(record["answer"]))) and 1 <= len(record["answer"]) <= 3
            lines = rl_prompt(record).split("\n")
            assert [line[:3] for line in lines[1:5]] == ["A. ", "B. ", "C. ", "D. "] and len(lines) == 6
            assert "letter" in lines[-1] or "字母" in lines[-1]  # the letters-only instruction comes last
            assert text_length(rl_prompt(record), record["lang"]) <= MCQ_MAX_LENGTH[record["lang"]]
        elif record["category"] == "constraints":
            assert record["topic"] in finance_training and 1 <= len(record["checks"]) <= 3
            assert {c["type"] for c in record["checks"]} <= {"max_words", "max_chars", "language", "has_list", "risk_disclaimer"}
        else:
            assert isinstance(record["expected"], float) and record["unit"] in ("yuan", "10k_yuan", "%", "ratio", "units")


def test_rl_references_earn_full_reward_and_wrong_replies_less(dataset):
    from finloom.grading.rewards import verifiable_rewards

    files, _ = dataset
    components = {"mcq": {"format", "mcq"}, "calculation": {"format", "calculation"}, "constraints": {"format", "constraints"}}
    for record in files["rl_prompts.jsonl"]:
        rewards = verifiable_rewards(record["reference"], record)
        assert set(rewards) == components[record["category"]] and set(rewards.values()) == {1.0}, (record["id"], rewards)
        category = record["category"]
        if category == "mcq":
            wrong = [next(letter for letter in "ABCD" if letter not in record["answer"])]
        elif category == "calculation":
            wrong = [f"Answer: {record['expected'] * 1.1:.4f}"]
        else:
            answer_lang = next((c["value"] for c in record["checks"] if c["type"] == "language"), record["lang"])
            wrong = [WRONG_LANGUAGE_REPLY[answer_lang]] if {c["type"] for c in record["checks"]} - {"max_words", "max_chars"} else []
            if {c["type"] for c in record["checks"]} & {"max_words", "max_chars"}:
                wrong.append("\n".join([record["reference"]] * 4))  # over-long
        for reply in wrong:
            assert verifiable_rewards(reply, record)[category] < 1.0, (record["id"], reply)


def test_rl_prompts_hold_no_eval_prompt(dataset):
    files, _ = dataset
    rl = "\x00".join(rl_prompt(r) for r in files["rl_prompts.jsonl"])
    stems = [question_stem(item["question"]) for name in MCQ for item in files[name]]
    questions = [r["question"] for r in files["eval_finance_calc.jsonl"]]
    assert [s for s in stems + questions + [r["prompt"] for r in files["eval_scenarios.jsonl"]] if s in rl] == []
    leaky = dict(files, **{"rl_prompts.jsonl": files["rl_prompts.jsonl"] + [{"prompt": [{"role": "user", "content": questions[0]}]}]})
    with pytest.raises(ValueError, match="evaluation prompt"):
        check_heldout(leaky)


def test_committed_rl_prompts_meet_minimum_counts():
    files = read_dir(DATA_DIR)
    if not files:
        pytest.skip("no committed starter data yet")
    records = files["rl_prompts.jsonl"]
    for category, minimum in MINIMUM_RL_PER_LANGUAGE.items():
        for lang in ("en", "zh"):
            assert sum(r["category"] == category and r["lang"] == lang for r in records) >= minimum, (category, lang)
    short = sum(text_length(rl_prompt(r), r["lang"]) <= {"en": 120, "zh": 250}[r["lang"]] for r in records)
    assert short >= 0.9 * len(records)
    multi = [r for r in records if r["category"] == "mcq" and len(r["answer"]) > 1]
    assert 0.15 <= len(multi) / sum(r["category"] == "mcq" for r in records) <= 0.45
