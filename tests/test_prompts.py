"""The prompts stage: selection rules on crafted pools, the bundled pool through the CLI, the teacher path
against a scripted judge behind a real HTTP server (parse failures counted, resume re-asks nothing) and against a
real `finloom serve` of a tiny model."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import finloom_cli, scripted_chat, write_recipe

from finloom.prompts.select import apply_quotas, lcs_length, near_duplicates, similar_pairs, template_families, tokens
from finloom.prompts.tags import constraint_level, parse_tags
from finloom.prompts.quality import parse_comparison
from finloom.recipe import NearDuplicateSettings, Quota, STARTER_DATA_DIR, TemplateSettings, load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest


def _lcs_dp(a: list, b: list) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_the_dynamic_programme():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == _lcs_dp(a, b)
    long = list(range(200))
    assert lcs_length(long, long[5:] + [999]) == 195


def test_constraint_level_matches_what_the_generator_wrote():
    labelled = [json.loads(line) for line in (STARTER_DATA_DIR / "prompt_tags.jsonl").read_text(encoding="utf-8").splitlines()]
    agree = sum(constraint_level(r["text"]) == r["constraint"] for r in labelled) / len(labelled)
    assert agree >= 0.97
    assert constraint_level("What is a bond?") == "none"
    assert constraint_level("What is a bond? Answer in no more than 50 words.") == "simple"
    assert constraint_level("什么是债券？回答不超过50字。请分点作答。") == "strong"


def test_tag_replies_parse_as_models_write_them():
    fenced = '```json\n{"ability": "Knowledge QA", "attributes": "banking", "domain": "compliance", "difficulty": "easy"}\n```'
    assert parse_tags(fenced) == {"ability": "knowledge_qa", "attributes": "banking", "domain": "compliance",
                                  "difficulty": "easy"}
    assert parse_tags('Sure! {"ability": "poetry", "attributes": "banking", "domain": "general", "difficulty": "easy"}') is None
    assert parse_tags("The ability is knowledge_qa.") is None
    assert parse_comparison('{"clarity": "A", "practicality": "tie", "complexity": "b", "novelty": "A"}') == \
        {"clarity": 1.0, "practicality": 0.5, "complexity": 0.0, "novelty": 1.0}


def _unit(vectors: list[list[float]]) -> np.ndarray:
    matrix = np.array(vectors, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_near_duplicates_are_small_edits_not_another_slot():
    texts = ["Tell me two important facts about the coffee plant and its history.",
             "Tell me two important facts about the cofee plant and its history.",  # a typo: near duplicate
             "Tell me two important facts about how gravity shapes the tides.",  # another request in the same frame
             "help", "help me"]  # too short to judge
    embeddings = _unit([[1, 0.1, 0], [1, 0.2, 0], [1, 0.3, 0], [1, 0, 0.1], [1, 0, 0.2]])
    found = near_duplicates(texts, similar_pairs(embeddings, 0.6, 10), NearDuplicateSettings())
    assert found == {1: (0, pytest.approx(0.9951, abs=1e-3))}
    strict = near_duplicates(texts, similar_pairs(embeddings, 0.6, 10), NearDuplicateSettings(candidate_similarity=0.999))
    assert strict == {}  # the embedding proposes, the common subsequence confirms


def test_neighbour_search_is_exact_and_earlier_only():
    rng = np.random.default_rng(0)
    embeddings = _unit(rng.normal(size=(1300, 8)).tolist())  # more rows than one search block
    pairs = similar_pairs(embeddings, -1.0, 3)
    similarity = embeddings @ embeddings.T
    for later in (0, 1, 700, 1299):
        expected = sorted(np.argsort(-similarity[later, :later])[:3].tolist()) if later else []
        assert sorted(first for row, first, _ in pairs if row == later) == expected
    assert all(first < later for later, first, _ in pairs)


def test_template_families_need_a_long_shared_frame():
    frame = ("You are the assistant of a retail bank's service desk. A customer has written in to ask about {}. Reply "
             "politely, explain it in plain words and do not give investment advice.")
    slots = ["bonds", "a certificate of deposit", "the money multiplier", "deed tax", "vega", "an annuity"]
    texts = [frame.format(s) for s in slots] + ["What is a bond?", "What is deed tax?"]
    embeddings = _unit([[1, 0, 0]] * len(texts))
    families = template_families(texts, similar_pairs(embeddings, 0.8, 10), list(range(len(texts))), TemplateSettings())
    assert families == [list(range(len(slots)))]
    assert len(tokens(texts[0])) >= TemplateSettings().min_frame_tokens


def test_quotas_hold_in_the_kept_set():
    tags = {i: {"ability": "calculation" if i % 2 else "knowledge_qa", "domain": "compliance" if i in (17, 19) else "x"}
            for i in range(20)}
    order = list(range(20))
    kept, reasons, shortfalls = apply_quotas(order, tags, {"ability": {"calculation": Quota(max_share=0.25)},
                                                           "domain": {"compliance": Quota(min_share=0.1)}}, budget=12)
    assert len(kept) == 12 and set(kept) | set(reasons) == set(order) and not set(kept) & set(reasons)
    assert sum(tags[i]["ability"] == "calculation" for i in kept) / len(kept) <= 0.25
    assert {17, 19} <= set(kept) and not shortfalls  # the minimum share is served first
    assert {reasons[i] for i in reasons} == {"quota:ability=calculation", "over_budget"}
    _, _, short = apply_quotas(order, tags, {"domain": {"absent": Quota(min_share=0.1)}}, budget=None)
    assert short == {"domain=absent": {"min_share": 0.1, "share": 0.0, "available": 0}}


def _prompts_recipe(**prompts) -> dict:
    section = {"sources": [{"path": "starter:prompt_pool.jsonl"}], "quality": {"method": "annotations", "drop_below": 0.4}}
    section.update(prompts)
    return {"name": "prompts", "prompts": section}


def _decisions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "prompts" / "decisions.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prompts")
    recipe = write_recipe(folder, _prompts_recipe(selection={"quotas": {"ability": {"calculation": {"max_share": 0.02}}}}))
    result = finloom_cli("run", str(recipe), "--run-dir", str(folder / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def test_bundled_pool_funnel_adds_up_and_planted_cases_are_found(bundled_run):
    pool = {json.loads(line)["id"]: json.loads(line) for line in
            (STARTER_DATA_DIR / "prompt_pool.jsonl").read_text(encoding="utf-8").splitlines()}
    decisions = _decisions(bundled_run)
    metrics = read_manifest(bundled_run, "prompts")["metrics"]
    kept = [d for d in decisions if d["kept"]]
    assert len(decisions) == len(pool) == metrics["read"]
    assert len(kept) == metrics["kept"] and metrics["kept"] + sum(metrics["dropped"].values()) == metrics["read"]
    assert {d["id"] for d in decisions} == set(pool)
    conversations = [json.loads(line) for line in (bundled_run / "prompts" / "sft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [c["id"] for c in conversations] == [d["id"] for d in kept]
    assert all(c["messages"][-1] == pool[c["id"]]["messages"][-1] for c in conversations)  # the given answers
    # every low-quality plant is gone; every exact duplicate pair keeps exactly one
    assert all(not d["kept"] for d in decisions if pool[d["id"]].get("planted") == "low_quality")
    by_id = {d["id"]: d for d in decisions}
    for item, record in pool.items():
        if record.get("planted") == "exact_dup":
            assert by_id[item]["kept"] + by_id[record["dup_of"]]["kept"] <= 1
    # each planted template family keeps at most template.keep prompts
    families: dict[str, int] = {}
    for item, record in pool.items():
        if record.get("planted") == "template" and by_id[item]["kept"]:
            families[record["template"]] = families.get(record["template"], 0) + 1
    assert families and max(families.values()) <= TemplateSettings().keep
    # the quota binds: at most 2% calculation prompts, where the selection would keep about 3%
    calculation = sum(d["tags"]["ability"] == "calculation" for d in kept)
    assert calculation / len(kept) <= 0.02 and metrics["dropped"].get("quota:ability=calculation", 0) > 0
    assert metrics["tagging"]["agreement"]["ability"] >= 0.9 and metrics["teacher_requests"] == 0


def test_the_prompts_stages_sft_set_loads_one_conversation_per_kept_prompt(bundled_run):
    """The file the sft stage reads (tests/test_wiring.py: it does, where the prompt system is on)."""
    from finloom.llm.chat_data import load_conversations
    from finloom.recipe import ChatSource

    rows = load_conversations([ChatSource(path=str(bundled_run / "prompts" / "sft.jsonl"))], Path, bundled_run / "r.jsonl", "sft")
    assert len(rows) == read_manifest(bundled_run, "prompts")["metrics"]["kept"]


def test_report_shows_the_selection(bundled_run):
    result = finloom_cli("report", str(bundled_run))
    assert result.returncode == 0, result.stderr[-2000:]
    text = (bundled_run / "report.md").read_text(encoding="utf-8")
    metrics = read_manifest(bundled_run, "prompts")["metrics"]
    assert "## Prompt selection (SFT set)" in text and f"| kept for SFT | {metrics['kept']} |" in text
    assert "| template_repeat |" in text and "project-written" in text


# ---------------------------------------------------------------------------------------------
# The teacher path: a scripted judge behind a real HTTP server
# ---------------------------------------------------------------------------------------------


def teacher_reply(prompt: str, body: dict) -> str:
    if prompt.startswith("You label prompts"):
        asked = prompt.split("<<<")[-1]
        if "UNPARSEABLE" in asked:
            return "This prompt is about banking, I think."
        ability = "calculation" if any(ch.isdigit() for ch in asked) else "knowledge_qa"
        return 'Here are the labels:\n```json\n' + json.dumps({"ability": ability, "attributes": "banking",
                                                               "domain": "knowledge_theory", "difficulty": "easy"}) + "\n```"
    if prompt.startswith("Compare two user prompts"):
        a, b = prompt.split("Prompt B:")
        worse = "A" if "VAGUE" in a else "B" if "VAGUE" in b else "tie"
        better = {"A": "B", "B": "A", "tie": "tie"}[worse]
        return json.dumps({c: better for c in ("clarity", "practicality", "complexity", "novelty")})
    if prompt.startswith("Rate the assistant's response"):
        return '{"score": 9}' if "SOLID" in prompt.split("Response:")[-1] else '{"score": 3}'
    if prompt.startswith("Critique the assistant's response"):
        return json.dumps({"critique": "fine", "rewrite": "REWRITTEN " + prompt.split("Response:\n<<<\n")[-1].split("\n>>>")[0]})
    if prompt.startswith("Below is a text"):
        return 'Request: "What does the text explain?"'
    return "SOLID answer." if body.get("seed", 0) % 3 == 1 else "weak answer."  # a sampled candidate, by its seed


@pytest.fixture
def teacher_server():
    with scripted_chat(teacher_reply) as server:
        yield server


def _pool(folder: Path) -> Path:
    questions = ["What is a bond?", "How does a mortgage work?", "Why do central banks raise interest rates?",
                 "Explain the price-to-earnings ratio.", "What does an insurance deductible do?",
                 "How is value added tax collected?", "What is a futures contract used for?",
                 "Why do companies issue shares?", "What is liquidity risk for a bank?", "How do index funds track a market?"]
    rows = [{"id": f"p{i}", "prompt": question} for i, question in enumerate(questions)]
    rows += [{"id": "vague", "prompt": "VAGUE thing about stuff, explain it"},
             {"id": "broken", "prompt": "UNPARSEABLE request about deposits"}]
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n", encoding="utf-8")
    (folder / "texts.jsonl").write_text(json.dumps({"id": "t1", "text": "A certificate of deposit is a time deposit "
                                                    "with a fixed term and rate; withdrawing early costs a penalty."}) + "\n",
                                        encoding="utf-8")
    return path


def _teacher_recipe(folder: Path, server, **prompts) -> Path:
    section = {"sources": [{"path": str(_pool(folder))}], "tagging": {"method": "teacher", "retries": 1},
               "selection": {"embedding": "hashed"}, "quality": {"method": "teacher", "anchors": 2, "drop_below": 0.3},
               "responses": {"method": "sample", "models": ["teacher"], "samples": 3, "critique_rewrite": True},
               "back_translation": {"sources": [{"path": str(folder / "texts.jsonl")}]}, "batch_size": 4}
    section.update(prompts)
    return write_recipe(folder, {"name": "taught", "seed": 3, "prompts": section,
                                 "teacher": {"base_url": server.url,
                                             "max_retries": 0, "concurrency": 4}})


def test_teacher_path_counts_failures_and_builds_responses(tmp_path, teacher_server):
    recipe = _teacher_recipe(tmp_path, teacher_server)
    result = finloom_cli("run", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_manifest(tmp_path / "run", "prompts")["metrics"]
    decisions = {d["id"]: d for d in _decisions(tmp_path / "run")}
    assert metrics["read"] == 13 and metrics["rejected"] == 1 and metrics["back_translated"] == 1
    assert metrics["tagging"]["teacher_failed"] == 1 and decisions["broken"]["reason"] == "tagging_failed"
    assert decisions["vague"]["reason"] == "low_quality" and decisions["vague"]["quality"] == 0.0
    assert metrics["teacher_requests"] == teacher_server.requests
    sft = [json.loads(line) for line in (tmp_path / "run" / "prompts" / "sft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sft and all(c["messages"][-1]["content"] == "REWRITTEN SOLID answer." for c in sft if c["id"] != "bt0-t1")
    assert metrics["kept"] + sum(metrics["dropped"].values()) == metrics["read"]


def test_resume_after_an_outage_asks_nothing_twice(tmp_path, teacher_server):
    recipe = _teacher_recipe(tmp_path, teacher_server, back_translation={"sources": []})
    teacher_server.fail_after = 30
    failed = finloom_cli("run", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert failed.returncode != 0 and read_manifest(tmp_path / "run", "prompts")["status"] == "failed"
    answered = 30
    teacher_server.fail_after, teacher_server.requests = None, 0
    resumed = finloom_cli("run", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert resumed.returncode == 0 and "(resuming)" in resumed.stderr + resumed.stdout
    on_resume = read_manifest(tmp_path / "run", "prompts")["metrics"]["teacher_requests"]
    # a fresh run of the same recipe asks for everything: the resumed one for all but the finished batches
    fresh_dir = tmp_path / "fresh"
    teacher_server.requests = 0
    assert finloom_cli("run", str(recipe), "--run-dir", str(fresh_dir)).returncode == 0
    total = teacher_server.requests
    cached = sum(1 for name in ("tags", "quality") if (tmp_path / "run" / "prompts" / "cache" / f"{name}.jsonl").exists())
    assert cached >= 1 and on_resume < total and on_resume >= total - answered


def test_a_tiny_model_as_teacher_mostly_fails_to_parse_and_is_counted(tmp_path, served_sft):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is a bond of type {i}?"}) + "\n" for i in range(6)),
                    encoding="utf-8")
    recipe = write_recipe(tmp_path, {"name": "tiny-teacher", "teacher": {"base_url": served_sft, "max_retries": 0},
                                     "prompts": {"sources": [{"path": str(pool)}], "tagging": {"method": "teacher",
                                                                                               "retries": 1},
                                                 "selection": {"embedding": "hashed"}}})
    result = finloom_cli("run", str(recipe), "--run-dir", str(tmp_path / "run"))
    manifest = read_manifest(tmp_path / "run", "prompts")
    tagging = (manifest.get("metrics") or {}).get("tagging")
    if result.returncode == 0:
        assert tagging["teacher_asked"] == 6 and tagging["teacher_failed"] + manifest["metrics"]["kept"] <= 6
    else:  # every reply failed: every prompt dropped as tagging_failed, said so
        assert "every prompt was dropped" in result.stderr and "tagging_failed" in result.stderr


def test_responses_filtered_by_a_reward_model(tmp_path, tiny_run):
    """filter: reward_model reaches the stage: the run's reward model scores every sampled candidate and the best
    is kept, with its reward recorded (recomputed here by the same scorer)."""
    from finloom.llm.reward_scorer import LocalRewardScorer

    pool = tmp_path / "pool.jsonl"
    topics = ["bond", "loan", "deposit", "dividend", "margin"]
    pool.write_text("".join(json.dumps({"id": t, "prompt": f"Explain what a {t} is to a new client."}) + "\n"
                            for t in topics), encoding="utf-8")
    recipe = write_recipe(tmp_path, {"name": "rm-filter", "seed": 5, "prompts": {
        "sources": [{"path": str(pool)}], "selection": {"embedding": "hashed"}, "quality": {"method": "none"},
        "responses": {"method": "sample", "models": [str(tiny_run / "sft" / "model")], "samples": 3, "max_tokens": 8,
                      "filter": "reward_model", "reward_model": str(tiny_run / "reward" / "model")}}})
    result = finloom_cli("run", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    cache = {json.loads(line)["id"]: json.loads(line)["result"]
             for line in (tmp_path / "run" / "prompts" / "cache" / "responses.jsonl").read_text().splitlines()}
    kept = [json.loads(line) for line in (tmp_path / "run" / "prompts" / "sft.jsonl").read_text().splitlines()]
    decisions = {d["id"]: d for d in _decisions(tmp_path / "run")}
    scorer = LocalRewardScorer(tiny_run / "reward" / "model")
    assert kept
    for row in kept:
        result = cache[row["id"]]
        assert len(result["scores"]) == result["candidates"] == 3 and result["score"] == max(result["scores"])
        assert decisions[row["id"]]["response_score"] == result["score"]
        assert scorer.score([row["messages"]])[0] == pytest.approx(result["score"], abs=1e-4)


def test_recipe_checks_name_the_field(tmp_path):
    cases = [
        ({"name": "x", "model": {"scratch": {}}, "base": {}, "sft": {}}, "sft.datasets"),
        ({"name": "x", "prompts": {"sources": [{"path": "starter:prompt_pool.jsonl"}], "tagging": {"method": "teacher"}}},
         "teacher"),
        ({"name": "x", "prompts": {"sources": [{"path": "starter:prompt_pool.jsonl"}],
                                   "selection": {"quotas": {"abilty": {}}}}}, "abilty"),
        ({"name": "x", "prompts": {"sources": [{"path": "starter:prompt_pool.jsonl"}],
                                   "responses": {"method": "sample"}}}, "responses.models"),
        ({"name": "x", "prompts": {"sources": [{"path": "starter:prompt_pool.jsonl"}],
                                   "responses": {"method": "sample", "models": ["teacher"], "filter": "reward_model"}},
          "teacher": {"base_url": "http://127.0.0.1:9/v1"}}, "responses.reward_model"),
    ]
    for recipe, field in cases:
        path = write_recipe(tmp_path, recipe)
        result = finloom_cli("recipe", "validate", str(path))
        assert result.returncode == 2 and field in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert load_recipe(write_recipe(tmp_path, _prompts_recipe())).prompts.tagging.labels.path == "starter:prompt_tags.jsonl"


def test_the_task_aware_embedding_brings_template_fills_together_and_reaches_selection(tmp_path):
    """Fills of one frame around long, different contexts sit apart in the generic embedding; the map trained on
    triplets mined by LCS brings them within the template search's threshold, and the recipe setting turns it on."""
    from finloom.prompts.embed import embed, embedder
    from finloom.prompts.select import cluster
    from finloom.prompts.task_embedding import mine_triplets, task_aware_vectors
    from finloom.recipe import STARTER_DATA_DIR, TaskAwareSettings

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from prompts_task_embedding import planted

    corpus = [json.loads(line) for line in (STARTER_DATA_DIR / "finance_corpus.jsonl").read_text().splitlines()]
    contexts = [" ".join(p.split()[:50]) for r in corpus if r["lang"] == "en" for p in r["text"].split("\n\n")
                if len(p.split()) >= 50]
    texts, frames = planted(contexts, 6, 0)
    vectors = embed(texts, embedder("wordllama", lambda name: name))
    labels = cluster(vectors, 4, 0)
    settings = TaskAwareSettings(enabled=True)
    triplets = mine_triplets(texts, vectors, labels, settings, 20, 0)
    right = [frames[a] == frames[p] is not None and frames[n] != frames[a] for a, p, n in triplets]
    assert len(triplets) >= 12 and sum(right) >= 0.8 * len(right)  # the corpus paragraphs share some frames too
    mapped, metrics = task_aware_vectors(texts, vectors, labels, settings, 20, 0)
    assert metrics["triplet_loss_after"] < metrics["triplet_loss_before"]
    siblings = [(a, b) for a in range(len(texts)) for b in range(a) if frames[a] is not None and frames[a] == frames[b]]
    others = [(a, b) for a in range(len(texts)) for b in range(a) if frames[a] != frames[b]]
    mean = lambda rows, pairs: float(np.mean([rows[a] @ rows[b] for a, b in pairs]))  # noqa: E731
    assert mean(mapped, siblings) - mean(mapped, others) > mean(vectors, siblings) - mean(vectors, others) + 0.05

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"p{n}", "prompt": text, "response": "ok"}) + "\n"
                            for n, text in enumerate(texts)))
    dropped = {}
    for task_aware in (False, True):
        recipe = _prompts_recipe(sources=[{"path": str(pool)}], quality={"method": "none"}, selection={
            "clusters": 4, "template": {"min_shared": 0.3, "task_aware": {"enabled": task_aware}}})
        run_dir = tmp_path / f"run-{task_aware}"
        assert Runner(load_recipe(write_recipe(tmp_path, recipe)), run_dir).run(only="prompts") == {"prompts": "done"}
        metrics = read_manifest(run_dir, "prompts")["metrics"]
        assert ("task_aware" in metrics) is task_aware
        dropped[task_aware] = metrics["dropped"].get("template_repeat", 0)
    assert dropped[True] > dropped[False]  # more planted fills found as template repeats
