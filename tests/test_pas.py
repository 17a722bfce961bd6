"""PAS: the critique's criteria on crafted cases, complements written and regenerated through a real (scripted)
chat endpoint, and the stage end to end on the tiny run: funnel, training, with vs without."""

from __future__ import annotations

import json
import re
import shutil
import threading

import httpx
import pytest

from finloom.llm.client import LLMClient
from finloom.pas.augment import Augmenter
from finloom.pas.complements import PASItem, parse_complement, write_complements
from finloom.pas.critique import critique_prompt, parse_critique, rule_problem
from finloom.pas.format import pas_input
from finloom.prompts.tags import constraint_kinds
from finloom.recipe import ClientSection, PASCritique, PASGeneration, load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest
from tests.conftest import finloom_cli, scripted_chat, serving, tiny_recipe, write_recipe
from tests.test_serve_features import chat_in_browser, needs_browser

RULES = PASCritique()


@pytest.mark.parametrize(("prompt", "complement", "keywords", "criterion"), [
    ("Explain what a bond coupon is.", "Define the coupon, say how and when it is paid, and give one short example.",
     None, None),
    ("Explain what a bond coupon is.", "请说明票息的定义、支付方式，并举一个简短的例子。", None, "language"),
    ("请解释什么是债券票息。", "Define the coupon and give one example.", None, "language"),
    ("Explain what a bond coupon is. " * 30, "Define the coupon, say how and when it is paid, cover zero-coupon "
                                             "bonds, compare fixed and floating coupons, note the tax treatment and give one short example with "
                                             "dates.", None, "overload"),
    ("Explain what a bond coupon is.", " ".join(["Cover the definition and the payment schedule."] * 9), None,
     "excessive"),
    ("Explain what a bond coupon is.", "Answer in English, use a table, do not use jargon, include an example, "
                                       "and keep it within 100 words.", None, "excessive"),
    ("What is 15% of 200?", "The result is 30, so say that.", None, "answers"),
    ("What is 15% of 200?", "Show the multiplication in 2 steps and state the result in one sentence.", None, None),
    ("Summarise the ESG disclosure duties.", "Stay with the disclosure duties and mention Basel capital rules.",
     ["ESG", "disclosure"], "outside_keywords"),
    ("Summarise the ESG disclosure duties.", "List the main disclosure duties in plain words.", ["ESG", "disclosure"],
     None),
])
def test_each_rule_rejects_its_own_case_and_passes_the_good_ones(prompt, complement, keywords, criterion):
    problem = rule_problem(prompt, complement, RULES, keywords)
    assert (problem.criterion if problem else None) == criterion


@pytest.mark.parametrize(("reply", "expected"), [
    ('{"ok": true}', True),
    ('Looks fine. {"ok": true, "reason": "good"}', True),
    ('{"ok": false, "criterion": 1, "reason": "changes the topic"}', "intent"),
    ('{"ok": false, "criterion": 2, "reason": "too much"}', "overload"),
    ('{"ok": false, "criterion": "3", "reason": "answers it"}', "answers"),
    ('{"ok": false, "criterion": 4, "reason": "demands"}', "excessive"),
    ('{"ok": false, "criterion": 5, "reason": "French"}', "language"),
    ('{"ok": false, "criterion": 6}', None),
    ('{"ok": false}', None),
    ('{"ok": "yes"}', None),
    ("no json here", None),
])
def test_the_teachers_critique_names_its_criterion(reply, expected):
    parsed = parse_critique(reply)
    assert (parsed if parsed in (True, None) else parsed.criterion) == expected


def test_a_complement_is_read_from_the_reply_without_label_or_quotes():
    assert parse_complement('Complement: "Cover the fees and the risks."\n\nPrompt: next') == "Cover the fees and the risks."
    assert parse_complement("补充：说明费用和风险。") == "说明费用和风险。"
    assert parse_complement("  \n ") is None


GOOD = {
    "Explain what a bond coupon is.": ["债券票息是利息。", "Define the coupon, say how it is paid, add one example."],
    "What is 15% of 200?": ["The answer is 30."] * 3,
    "Describe a credit default swap.": ["Describe who pays whom and when; mention counterparty risk."] * 3,
    "Summarise the ESG disclosure duties.": ["Cover the duties and the Basel rules.", "List the main duties plainly."],
}
"""What the scripted teacher writes for each prompt, attempt by attempt."""


class ScriptedTeacher:
    """Generation requests answered from GOOD by attempt; critiques reject the swap's first complement (4) and
    accept the rest; scenario judgements do not parse; pairwise comparisons prefer the longer answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.asked: dict[str, int] = {}
        self.critiqued: dict[str, int] = {}
        self.generation_requests = 0

    def __call__(self, prompt: str, body: dict) -> str:
        with self.lock:
            if prompt.startswith("Write a complement"):
                self.generation_requests += 1
                asked = prompt.rsplit("Prompt: ", 1)[1].split("\n")[0]
                attempt = self.asked.get(asked, 0)
                self.asked[asked] = attempt + 1
                return GOOD[asked][min(attempt, len(GOOD[asked]) - 1)]
            if prompt.startswith("You check a complement"):
                complement = prompt.split("Complement:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                seen = self.critiqued.get(complement, 0)
                self.critiqued[complement] = seen + 1
                if "counterparty" in complement and seen == 0:
                    return '{"ok": false, "criterion": 4, "reason": "asks for too much"}'
                return '{"ok": true}'
            if prompt.startswith("Two answers"):
                a = prompt.split("Answer A:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                b = prompt.split("Answer B:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                return json.dumps({"same_result": False, "better": "A" if len(a) > len(b) else "B" if len(b) > len(a)
                                   else "tie"})
            return "I cannot judge this."


def test_complements_are_regenerated_until_the_critique_accepts_and_every_rejection_is_kept():
    teacher = ScriptedTeacher()
    items = [PASItem("Explain what a bond coupon is.", "knowledge_qa"), PASItem("What is 15% of 200?", "calculation"),
             PASItem("Describe a credit default swap.", "knowledge_qa"),
             PASItem("Summarise the ESG disclosure duties.", "compliance", ["ESG", "disclosure", "duties"])]
    with scripted_chat(teacher) as server:
        client = LLMClient(ClientSection(base_url=server.url, model="teacher"), "teacher")
        outcomes = write_complements(client, items, ["en"] * 4, {}, PASGeneration(attempts=3), PASCritique())
    coupon, calc, swap, esg = outcomes
    assert coupon.complement == GOOD["Explain what a bond coupon is."][1] and coupon.attempts == 2
    assert [(r["criterion"], r["by"]) for r in coupon.rejections] == [("language", "rules")]
    assert calc.complement is None and calc.attempts == 3
    assert [r["criterion"] for r in calc.rejections] == ["answers"] * 3 and "30" in calc.rejections[0]["reason"]
    assert swap.complement is not None and swap.attempts == 2
    assert swap.rejections == [{"attempt": 1, "criterion": "excessive", "by": "teacher", "reason": "asks for too much",
                                "complement": GOOD["Describe a credit default swap."][0]}]
    assert esg.complement == "List the main duties plainly."
    assert [r["criterion"] for r in esg.rejections] == ["outside_keywords"]
    assert teacher.generation_requests == 4 + 4 + 1  # only what was rejected is asked for again


def test_without_regeneration_a_rejected_complement_is_lost():
    teacher = ScriptedTeacher()
    with scripted_chat(teacher) as server:
        client = LLMClient(ClientSection(base_url=server.url, model="teacher"), "teacher")
        [outcome] = write_complements(client, [PASItem("Explain what a bond coupon is.", "knowledge_qa")], ["en"], {},
                                      PASGeneration(attempts=1), PASCritique())
    assert outcome.complement is None and len(outcome.rejections) == 1


POOL = [
    {"id": "coupon", "prompt": "Explain what a bond coupon is."},
    {"id": "coupon-again", "prompt": "Explain what a bond coupon is."},
    {"id": "calc", "prompt": "What is 15% of 200?"},
    {"id": "swap", "prompt": "Describe a credit default swap."},
    {"id": "esg", "prompt": "Summarise the ESG disclosure duties.", "keywords": ["ESG", "disclosure", "duties"]},
    {"id": "broken", "messages": [{"role": "assistant", "content": "no user turn"}]},
]
GIVEN = [
    {"id": "g1", "prompt": "How do index funds charge fees?", "complement": "Name the kinds of fee and where an "
                                                                           "investor sees them."},
    {"id": "g2", "prompt": "How do index funds charge fees?", "complement": "Fees are 0.2% a year."},
    {"id": "g3", "prompt": "What is a dividend?"},
]


def pas_recipe(tiny_data, server_url: str, **overrides) -> dict:
    for name, rows in (("pas_pool.jsonl", POOL), ("pas_given.jsonl", GIVEN)):
        (tiny_data / name).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    recipe = tiny_recipe(**{"pas": {
        "sources": [{"path": "pas_pool.jsonl"}], "complements": [{"path": "pas_given.jsonl"}],
        "selection": {"embedding": "hashed"}, "generation": {"attempts": 3, "shots": 2},
        "train": {"max_steps": 40, "batch_size": 4, "seq_len": 96, "save_steps": 20, "learning_rate": 5e-3},
        "eval": {"max_items": 3, "max_tokens": 8, "judge_retries": 0}}, **overrides})
    recipe["teacher"] = {"base_url": server_url, "model": "teacher", "concurrency": 2}
    return recipe


@pytest.fixture(scope="module")
def pas_run(tiny_run, tiny_data, tmp_path_factory):
    """The pas stage run once on a copy of the tiny run, against the scripted teacher."""
    run_dir = tmp_path_factory.mktemp("pas") / "run"
    shutil.copytree(tiny_run, run_dir)
    teacher = ScriptedTeacher()
    with scripted_chat(teacher) as server:
        path = write_recipe(tiny_data, pas_recipe(tiny_data, server.url), "pas.yaml")
        done = finloom_cli("pas", "build", str(path), "--run-dir", str(run_dir), timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "4 training pairs" in done.stdout + done.stderr and "with vs without PAS" in done.stdout + done.stderr
        yield run_dir, teacher, server, path


def test_the_stage_keeps_every_decision_and_the_funnel_adds_up(pas_run):
    run_dir, *_ = pas_run
    metrics = read_manifest(run_dir, "pas")["metrics"]
    generated = metrics["generated"]
    assert generated["read"] == 5 and generated["rejected"] == 1  # the record without a user turn
    assert generated["kept"] == 3 and generated["dropped"] == {"complement_rejected": 1, "exact_duplicate": 1}
    assert generated["rejections"] == {"answers": 3, "language": 1, "excessive": 1, "outside_keywords": 1}
    decisions = {d["id"]: d for d in map(json.loads, (run_dir / "pas" / "decisions.jsonl").read_text().splitlines())}
    assert decisions["calc"]["last_criterion"] == "answers" and not decisions["calc"]["kept"]
    assert decisions["coupon-again"]["reason"] == "exact_duplicate"
    assert decisions["swap"]["kept"] and decisions["swap"]["attempts"] == 2
    assert metrics["given"] == {"read": 3, "kept": 1, "rejected": 2, "rejected_by": {"answers": 1, "malformed": 1}}
    pairs = [json.loads(line) for line in (run_dir / "pas" / "pairs.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in pairs) == ["coupon", "esg", "g1", "swap"]
    esg = next(p for p in pairs if p["id"] == "esg")
    assert esg["messages"][0]["content"] == pas_input("Summarise the ESG disclosure duties.", ["ESG", "disclosure", "duties"])
    assert esg["messages"][1]["content"] == "List the main duties plainly."


def test_the_pas_model_is_trained_with_the_recipes_settings_and_described_for_serving(pas_run):
    run_dir, *_ = pas_run
    metrics = read_manifest(run_dir, "pas")["metrics"]
    assert metrics["train_steps"] == 40 and metrics["conversations"] == 4 and metrics["packing"] is True
    model = run_dir / "pas" / "model"
    assert (model / "model.safetensors").exists() and (model / "pas_taggers").is_dir()
    config = json.loads((model / "pas.json").read_text())
    pairs = [json.loads(line) for line in (run_dir / "pas" / "pairs.jsonl").read_text().splitlines()]
    assert config["categories"] == sorted({p["category"] for p in pairs}) and "uncategorised" in config["categories"]
    assert config["serve_categories"] is None


def test_with_and_without_are_measured_and_the_win_rate_follows_the_judge(pas_run):
    run_dir, *_ = pas_run
    metrics = read_manifest(run_dir, "pas")["metrics"]["eval"]
    rows = [json.loads(line) for line in (run_dir / "pas" / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["items"] == 3
    for row in rows:  # the scripted judge prefers the longer answer, in both orders
        expected = 1.0 if len(row["with"]) > len(row["without"]) else 0.0 if len(row["with"]) < len(row["without"]) else 0.5
        assert row["win"] == expected
    assert metrics["win_rate"] == pytest.approx(sum(r["win"] for r in rows) / 3, abs=1e-4)
    assert metrics["with"]["judge_failures"] == metrics["without"]["judge_failures"] == 3  # counted, not hidden
    assert metrics["with"]["usable_rate"] == 0.0
    for row in rows:
        assert row["complement"] is None or row["with"] is not None
    passed = [r["critique"]["passed"] for r in rows]
    assert metrics["critique_pass_rate"] == pytest.approx(sum(passed) / 3, abs=1e-4)
    by_rules = [r["critique"]["passed"] or r["critique"]["by"] == "teacher" for r in rows]
    assert metrics["rules_pass_rate"] == pytest.approx(sum(by_rules) / 3, abs=1e-4)


def test_a_rerun_asks_the_teacher_only_for_what_it_has_not_answered(pas_run, tiny_data):
    run_dir, teacher, server, path = pas_run
    before = teacher.generation_requests
    manifest = run_dir / "pas" / "manifest.json"  # as after a kill -9 in the middle of the stage
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "running"}))
    (run_dir / "pas" / "pairs.jsonl").unlink()
    assert Runner(load_recipe(path), run_dir).run(only="pas") == {"pas": "done"}
    assert teacher.generation_requests == before
    assert read_manifest(run_dir, "pas")["metrics"]["generated"]["kept"] == 3


def test_a_pas_recipe_without_a_teacher_names_the_field(tiny_data):
    recipe = pas_recipe(tiny_data, "http://127.0.0.1:9/v1")
    del recipe["teacher"]
    done = finloom_cli("recipe", "validate", str(write_recipe(tiny_data, recipe, "pas_no_teacher.yaml")))
    assert done.returncode == 2 and "teacher: the pas stage writes and critiques complements" in done.stderr
    assert "Traceback" not in done.stderr
    recipe = pas_recipe(tiny_data, "http://127.0.0.1:9/v1", **{"pas.eval.target": "stage:report"})
    done = finloom_cli("recipe", "validate", str(write_recipe(tiny_data, recipe, "pas_bad_target.yaml")))
    assert done.returncode == 2 and re.search(r"pas.eval.target: stage:report: no enabled model stage", done.stderr)


@pytest.mark.parametrize("name", ["pas_complements.jsonl", "pas_fewshot.jsonl"])
def test_the_bundled_pairs_pass_the_rules_the_stage_applies_to_them(name):
    from finloom.recipe import STARTER_DATA_DIR

    records = [json.loads(line) for line in (STARTER_DATA_DIR / name).read_text(encoding="utf-8").splitlines()]
    assert len(records) >= 80
    failing = [(r["prompt"], problem) for r in records
               if (problem := rule_problem(r["prompt"], r["complement"], RULES, r.get("keywords")))]
    assert failing == []


def test_serve_with_pas_answers_the_augmented_prompt_and_returns_the_complement(pas_run):
    run_dir, *_ = pas_run
    pas = Augmenter(run_dir / "pas" / "model")
    prompt = "Explain what a bond coupon is."
    expected = pas.augment(prompt)
    assert expected is not None and expected["prompt"] == f"{prompt}\n\n{expected['complement']}"
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 6, "temperature": 0}
    with serving(run_dir / "sft" / "model", "--pas", str(run_dir / "pas" / "model")) as url:
        assert httpx.get(url.removesuffix("/v1") + "/health").json()["pas"] is True
        reply = httpx.post(f"{url}/chat/completions", json=body, timeout=120).json()
        assert reply["pas"] == {"complement": expected["complement"], "category": expected["category"]}
        direct = httpx.post(f"{url}/chat/completions", timeout=120, json={
            **body, "pas": False, "messages": [{"role": "user", "content": expected["prompt"]}]}).json()
        assert direct["pas"] is None
        assert reply["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
        assert reply["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]  # the complement was read


def test_serving_a_run_directory_uses_its_pas_model_unless_told_not_to(pas_run):
    run_dir, *_ = pas_run
    for options, expected in (((), True), (("--no-pas",), False)):
        with serving(run_dir, *options) as url:
            assert httpx.get(url.removesuffix("/v1") + "/health").json()["pas"] is expected


def test_pas_eval_command_answers_with_and_without(pas_run, tmp_path):
    run_dir, *_ = pas_run
    done = finloom_cli("pas", "eval", "--model", str(run_dir / "sft" / "model"), "--pas", str(run_dir / "pas" / "model"),
                       "--max-items", "2", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert results["items"] == len(rows) == 2 and results["judge"].startswith("not configured")
    pas = Augmenter(run_dir / "pas" / "model")
    assert [row["complement"] for row in rows] == [pas.augment(row["prompt"])["complement"] for row in rows]
    assert {"rule_pass_rate", "rule_checked"} <= set(results["with"]) and results["critique_by"] == "rules"


def test_eval_with_pas_answers_augmented_scenarios_and_judges_the_original(pas_run, tmp_path):
    run_dir, *_ = pas_run
    recipe = tmp_path / "scenarios.yaml"
    recipe.write_text(json.dumps({"name": "scenarios", "eval": {
        "benchmarks": [{"name": "scenarios", "kind": "scenario", "files": [{"path": "starter:eval_scenarios.jsonl"}]}],
        "scenarios": {"max_gen_tokens": 8}}}))
    done = finloom_cli("eval", "--model", str(run_dir / "sft" / "model"), "--pas", str(run_dir / "pas" / "model"),
                       "--recipe", str(recipe), "--chat", "--max-items", "2", "--out", str(tmp_path), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    items = [json.loads(line) for line in (tmp_path / "work" / "data" / "scenarios" / "eval_scenarios.jsonl")
             .read_text().splitlines()]
    pas = Augmenter(run_dir / "pas" / "model")
    for item in items:
        assert item["prompt"] == pas.augment(item["original_prompt"])["prompt"]
    assert "sft+pas" in json.loads((tmp_path / "results.json").read_text())


def test_augment_only_the_chosen_categories(pas_run):
    run_dir, *_ = pas_run
    prompt = "Explain what a bond coupon is."
    unfiltered = Augmenter(run_dir / "pas" / "model")
    category = unfiltered.category(prompt)
    assert category is not None
    # the chosen category's augmentation is the unfiltered one; another category's prompt is left alone
    assert Augmenter(run_dir / "pas" / "model", [category]).augment(prompt) == unfiltered.augment(prompt)
    assert Augmenter(run_dir / "pas" / "model", ["no_such_category"]).augment(prompt) is None


@needs_browser
def test_the_chat_page_shows_the_real_pas_models_complement(pas_run):
    run_dir, *_ = pas_run
    prompt = "Explain what a bond coupon is."
    expected = Augmenter(run_dir / "pas" / "model").augment(prompt)
    with serving(run_dir) as url:  # a run directory: its chat models, and its PAS model
        shown = chat_in_browser(url.removesuffix("/v1"), "sft", [(prompt, True), (prompt, False)])
    assert shown[0]["complement"] == [f"PAS ({expected['category']}): {expected['complement']}"]
    assert shown[1]["complement"] == []


def test_the_report_shows_the_pairs_funnel_and_with_vs_without(pas_run):
    from finloom.report.stage import build_report

    run_dir, *_ = pas_run
    markdown = build_report(run_dir)["markdown"].read_text(encoding="utf-8")
    evaluation = read_manifest(run_dir, "pas")["metrics"]["eval"]
    assert "PAS: training pairs" in markdown and "| rejections: answers | 3 |" in markdown
    assert "| ready pairs rejected: malformed | 1 |" in markdown and "| training pairs | 4 |" in markdown
    assert f"| pairwise win rate of the answer with PAS | — | {evaluation['win_rate']:.4g} |" in markdown
    assert "PAS: examples" in markdown
    card = (run_dir / "model_card.md").read_text(encoding="utf-8")
    assert "trained on 4 (prompt, complement) pairs (given 1, generated 3;" in card


def _words(n: int) -> str:
    return " ".join(["cover"] * n)


def test_the_length_rules_hold_at_their_boundaries():
    long_prompt = _words(RULES.complex_prompt_words)
    assert rule_problem(long_prompt, _words(RULES.complex_max_words), RULES) is None
    assert rule_problem(long_prompt, _words(RULES.complex_max_words + 1), RULES).criterion == "overload"
    assert rule_problem(_words(RULES.complex_prompt_words - 1), _words(RULES.complex_max_words + 1), RULES) is None
    assert rule_problem("Explain a bond.", _words(RULES.max_words), RULES) is None
    assert rule_problem("Explain a bond.", _words(RULES.max_words + 1), RULES).criterion == "excessive"


def test_a_rejection_names_at_most_three_of_what_it_found():
    problem = rule_problem("What is 15% of 200?", "Say 30, 45, 60 and 75 plainly.", RULES)
    assert problem.reason == "states numbers the prompt does not hold (30, 45, 60)"
    problem = rule_problem("Summarise the duties.", "Cite Basel, Dodd and Frank and also Volcker on them.", RULES,
                           ["duties"])
    assert problem.reason == "names what neither the keywords nor the prompt hold (Basel, Dodd, Frank)"


def test_the_critique_prompt_names_the_keywords_only_in_rag_mode():
    plain = critique_prompt("Explain a bond.", "Define it.")
    rag = critique_prompt("Explain a bond.", "Define it.", ["bond", "coupon"])
    assert "beyond the retrieved keywords" not in plain and "Retrieved keywords" not in plain
    assert "or brings in anything beyond the retrieved keywords" in rag and "Retrieved keywords: bond, coupon" in rag
    assert "Prompt:\n<<<\nExplain a bond.\n>>>" in plain and "Complement:\n<<<\nDefine it.\n>>>" in plain


@pytest.mark.parametrize("reason", ['""', "7", "null"])
def test_a_rejection_without_a_usable_reason_says_so(reason):
    parsed = parse_critique(f'{{"ok": false, "criterion": 2, "reason": {reason}}}')
    assert (parsed.criterion, parsed.by, parsed.reason) == ("overload", "teacher", "(no reason)")


def test_a_short_addition_to_a_long_prompt_and_three_kinds_of_constraint_pass_the_rules():
    assert rule_problem(_words(RULES.complex_prompt_words), "Keep it short.", RULES) is None
    three = "Answer in English, use a table, and do not use jargon."
    assert len(constraint_kinds(three)) == RULES.max_constraints
    assert rule_problem("Explain a bond.", three, RULES) is None
