"""The bundled PAS data: golden few-shot examples and the generated (prompt, complement) pairs.

Invariants run on the committed files and on a fresh build from the fixture knowledge base; the committed
files must also equal a fresh build from the committed prompt pool (``test_starter_data`` regenerates
everything; this checks the two PAS files alone, quickly).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from finloom.data.langid import identify_language
from finloom.starter.generate import DATA_DIR, build_scenarios, load_knowledge_base, proper_words, to_jsonl
from finloom.starter.kb_schema import SCENARIO_FAMILIES
from finloom.starter.pas_data import (
    KEEP_LIMITS,
    LONG_PROMPT,
    NO_RAG_ABILITIES,
    PAS_COUNT,
    PHRASES,
    RAG_COUNT,
    RAG_KEYWORDS,
    NearCopies,
    build_pas_complements,
    compose_complement,
    pas_category,
    prompt_keywords,
    term_forms,
)
from finloom.starter.pas_examples import COMPLEMENT_LENGTH, GOLDEN, PAS_CATEGORIES, build_pas_fewshot
from finloom.starter.prompt_pool import build_prompt_pool
from finloom.starter.rl_prompts import text_length

FIXTURE_KB = Path(__file__).parent / "fixtures" / "kb"
LANGS = ("en", "zh")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module", params=["fixture", "committed"])
def dataset(request: pytest.FixtureRequest) -> dict:
    """pool, scenarios, few-shot and complement records, and the knowledge base they come from."""
    if request.param == "fixture":
        kb = load_knowledge_base(FIXTURE_KB)
        pool, scenarios = build_prompt_pool(kb, 0, proper_words(kb.finance + kb.general)), build_scenarios(kb)
        return {"kb": kb, "pool": pool, "scenarios": scenarios, "fewshot": build_pas_fewshot(),
                "complements": build_pas_complements(kb, pool, scenarios, 0)}
    if not (DATA_DIR / "pas_complements.jsonl").exists():
        pytest.skip("no committed PAS data yet")
    return {"kb": load_knowledge_base(), "pool": read(DATA_DIR / "prompt_pool.jsonl"),
            "scenarios": read(DATA_DIR / "eval_scenarios.jsonl"), "fewshot": read(DATA_DIR / "pas_fewshot.jsonl"),
            "complements": read(DATA_DIR / "pas_complements.jsonl")}


def test_committed_files_equal_a_fresh_build():
    if not (DATA_DIR / "pas_complements.jsonl").exists():
        pytest.skip("no committed PAS data yet")
    assert (DATA_DIR / "pas_fewshot.jsonl").read_text(encoding="utf-8") == to_jsonl(build_pas_fewshot())
    fresh = build_pas_complements(load_knowledge_base(), read(DATA_DIR / "prompt_pool.jsonl"),
                                  read(DATA_DIR / "eval_scenarios.jsonl"), 0)
    assert (DATA_DIR / "pas_complements.jsonl").read_text(encoding="utf-8") == to_jsonl(fresh)


def test_categories_are_the_ability_tags_then_the_scenario_families():
    from finloom.prompts.tags import VALUES

    assert PAS_CATEGORIES == VALUES["ability"] + SCENARIO_FAMILIES and len(set(PAS_CATEGORIES)) == 20
    assert sorted(GOLDEN) == sorted(PAS_CATEGORIES) == sorted(PHRASES)


def test_fewshot_has_four_examples_per_category_in_both_languages(dataset):
    records = dataset["fewshot"]
    assert [r["category"] for r in records] == [c for c in PAS_CATEGORIES for _ in GOLDEN[c]]  # file order
    for category in PAS_CATEGORIES:
        langs = [r["lang"] for r in records if r["category"] == category]
        assert len(langs) >= 4 and langs.count("en") >= 2 and langs.count("zh") >= 1, category
    assert all(set(r) == {"category", "lang", "prompt", "complement"} for r in records)
    assert len({r["prompt"] for r in records}) == len(records)


def test_phrase_banks_are_complete_figure_free_and_in_their_language():
    for category in PAS_CATEGORIES:
        for lang in LANGS:
            bank = PHRASES[category][lang]
            assert len(bank["requirement"]) >= 3 and len(bank["extension"]) >= 2 and len(bank["format"]) >= 2
            for phrase in (p for part in bank.values() for p in part):
                assert not re.search(r"\d", phrase), phrase
                if lang == "en":
                    assert not re.search(r"[\u4e00-\u9fff]", phrase) and phrase.endswith("."), phrase
                else:
                    assert not re.search(r"[A-Za-z]", phrase) and phrase.endswith("。"), phrase


def _all_pairs(dataset) -> list[dict]:
    return dataset["fewshot"] + dataset["complements"]


def test_complements_are_in_their_prompts_language(dataset):
    for record in _all_pairs(dataset):
        assert identify_language(record["complement"])[0] == record["lang"], record["complement"]
        assert identify_language(record["prompt"])[0] == record["lang"], record["prompt"]


def test_complement_lengths_are_within_bounds(dataset):
    for record in _all_pairs(dataset):
        low, high = COMPLEMENT_LENGTH[record["lang"]]
        assert low <= text_length(record["complement"], record["lang"]) <= high, record["complement"]


def test_complements_hold_no_number_their_prompt_lacks(dataset):
    """A cheap guard against answering: a complement that computes or quotes a figure names a new number."""
    for record in _all_pairs(dataset):
        assert [n for n in re.findall(r"\d+", record["complement"]) if n not in record["prompt"]] == [], record


def test_complements_layout_spread_and_source(dataset):
    records, pool = dataset["complements"], {r["id"]: r for r in dataset["pool"]}
    assert len({r["id"] for r in records}) == len(records) and len({r["prompt"] for r in records}) == len(records)
    for record in records:
        source = pool[record["id"]]
        assert record["prompt"] == source["messages"][0]["content"] and record["lang"] == source["lang"]
        assert record["category"] == pas_category(source["generator_tags"]) and record["category"] in PAS_CATEGORIES
        assert source.get("planted") in (None, "template")
        assert set(record) == {"id", "category", "lang", "prompt", "complement", "mode"} | ({"keywords"} if record["mode"] == "rag" else set())
    cells = {(pas_category(r["generator_tags"]), r["lang"]) for r in dataset["pool"]
             if r.get("planted") in (None, "template")}
    assert {(r["category"], r["lang"]) for r in records} == cells  # every cell the pool offers
    counts = [sum((r["category"], r["lang"]) == cell for r in records) for cell in cells]
    if len(dataset["pool"]) > PAS_COUNT * 2:  # the committed pool: enough prompts for the full count, spread evenly
        assert len(records) == PAS_COUNT
        assert max(counts) - min(c for c in counts if c >= 10) <= 1 and min(counts) >= 3


def test_complements_respect_the_prompts_own_limits_and_demands(dataset):
    """A prompt stating limits gets no format phrase of ours but a reminder of them; a demanding one no extension."""
    pool = {r["id"]: r for r in dataset["pool"]}
    for record in dataset["complements"]:
        tags, lang, text = pool[record["id"]]["generator_tags"], record["lang"], record["complement"]
        bank = PHRASES[record["category"]][lang]
        assert any(p in text for p in KEEP_LIMITS[lang]) == (tags["constraint"] != "none"), record
        if tags["constraint"] != "none":
            assert not any(p in text for p in bank["format"]), record
        if record["mode"] == "plain" and (tags["constraint"] == "strong" or text_length(record["prompt"], lang) > LONG_PROMPT[lang]):
            assert not any(p in text for p in bank["extension"]), record


def test_rag_complements_stay_within_their_keywords(dataset):
    pool = {r["id"]: r for r in dataset["pool"]}
    rag = [r for r in dataset["complements"] if r["mode"] == "rag"]
    assert {r["lang"] for r in rag} == set(LANGS) and len(rag) <= RAG_COUNT
    if len(dataset["pool"]) > PAS_COUNT * 2:
        assert [sum(r["lang"] == lang for r in rag) for lang in LANGS] == [RAG_COUNT // 2] * 2
    low, high = RAG_KEYWORDS
    for record in rag:
        keywords, prompt = record["keywords"], record["prompt"]
        assert low <= len(keywords) <= high and all(k in prompt for k in keywords), record
        assert pool[record["id"]]["generator_tags"]["ability"] not in NO_RAG_ABILITIES
        assert all(k in record["complement"] for k in keywords)
        rest = record["complement"]
        for keyword in sorted(keywords, key=len, reverse=True):
            rest = rest.replace(keyword, "")
        assert not re.search(r"\d", rest), record
        if record["lang"] == "zh":
            assert not re.search(r"[A-Za-z]", rest), record
        else:  # capitals only where a sentence starts
            assert re.findall(r"(?<![.;!?]\s)(?<!^)\b[A-Z]\w*", rest) == [], record


def test_no_evaluation_scenario_prompt_or_near_copy_is_used(dataset):
    scenarios = [s["prompt"] for s in dataset["scenarios"]]
    evaluation = NearCopies(scenarios)
    texts = "\x00".join(r["prompt"] + "\x00" + r["complement"] for r in _all_pairs(dataset))
    assert [s for s in scenarios if s in texts] == []
    assert [r["id"] for r in dataset["complements"] if r["prompt"] in evaluation] == []


def test_near_copies_of_evaluation_prompts_are_left_out():
    kb = load_knowledge_base(FIXTURE_KB)
    scenario = build_scenarios(kb)[0]["prompt"]
    tags = {"ability": "writing", "attributes": "banking", "domain": "customer_service", "language": "en",
            "difficulty": "medium", "constraint": "none"}
    edited = scenario.replace(" the ", " teh ", 1) + " Thanks."
    pool = [{"id": f"p{i}", "lang": "en", "generator_tags": tags, "messages": [{"role": "user", "content": text}]}
            for i, text in enumerate([scenario, edited, scenario[: len(scenario) // 2], "Write a short reply to a client."])]
    assert [r["id"] for r in build_pas_complements(kb, pool, [{"prompt": scenario}], 0)] == ["p3"]
    evaluation = NearCopies([scenario])
    assert edited in evaluation and "Write a short reply to a client." not in evaluation


def test_prompt_keywords_prefer_knowledge_base_terms_and_come_from_the_prompt():
    terms = {"en": ["net interest margin", "WHO"], "zh": ["净息差"]}
    prompt = "Summarise: The net interest margin of Pine Bank narrowed because of deposit costs. Who benefits from deposit costs?"
    keywords = prompt_keywords(prompt, "en", terms["en"])
    # the term, then the repeated phrase, then the others; a closing past participle is trimmed, "Who" is no "WHO"
    assert keywords == ["net interest margin", "deposit costs", "Pine Bank", "benefits"]
    assert prompt_keywords("请概括：净息差是指银行净利息收入与生息资产的比率，净息差收窄会影响银行盈利。", "zh", terms["zh"])[0] == "净息差"


def test_term_forms_split_abbreviations_and_skip_single_characters():
    forms = term_forms(load_knowledge_base(FIXTURE_KB))
    assert all(len(term) > 1 for term in forms["zh"])
    assert forms["en"] == sorted(forms["en"], key=lambda t: (-len(t), t))


def test_compose_complement_drops_the_extension_for_demanding_prompts():
    rng = random.Random(0)
    for category in PAS_CATEGORIES:
        for lang in LANGS:
            bank = PHRASES[category][lang]
            demanding = compose_complement(rng, category, lang, demanding=True, limited=True)
            assert not any(p in demanding for p in bank["extension"]) and any(p in demanding for p in KEEP_LIMITS[lang])
            plain = compose_complement(rng, category, lang, demanding=False, limited=False)
            assert sum(p in plain for p in bank["extension"]) == 1 and sum(p in plain for p in bank["format"]) == 1
