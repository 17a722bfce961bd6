"""Scenario aggregation with a scripted judge behind a real HTTP server: the usable thresholds at exactly 3.0 and
4.0, a -1 veto, CFBench's PSR at exactly 0.8, and failed judgements counted in every rate's denominator; the
rubric's parsing, prompt and metrics at their edges; the rule checks' rates (the mutation run asked for these)."""

from __future__ import annotations

import json

import pytest

from conftest import scripted_chat
from finloom.eval.scenarios import judge_answers, rule_check, summarize_scenarios
from finloom.grading.rubric import checklist_items, checklist_metrics, final_score, is_usable, judge_prompt, parse_judgement
from finloom.llm.client import LLMClient
from finloom.recipe import ClientSection

SCENARIOS = {
    # basic task, weighted mean exactly 3.0: usable
    "basic-at-3": {"weights": {"accuracy": 1, "clarity": 1}, "high_stakes": False, "family": "a",
                   "reply": {"accuracy": 2, "clarity": 4}},
    # high-stakes task at 3.99: not usable; at exactly 4.0: usable
    "high-below-4": {"weights": {"accuracy": 3, "compliance": 1}, "high_stakes": True, "family": "b",
                     "reply": {"accuracy": 4, "compliance": 3.96}},
    "high-at-4": {"weights": {"accuracy": 3, "compliance": 1}, "high_stakes": True, "family": "b",
                  "reply": {"accuracy": 4, "compliance": 4}},
    # a -1 vetoes however high the mean
    "veto": {"weights": {"accuracy": 1, "compliance": 1}, "high_stakes": False, "family": "a",
             "reply": {"accuracy": 5, "compliance": -1}},
    # primary met, secondaries at mean 0.6: 0.5 + 0.5 * 0.6 = 0.8 is not above 0.8 -> PSR 0
    "psr-at-0.8": {"weights": {"accuracy": 1}, "high_stakes": False, "family": "c",
                   "checklist": ["primary", {"text": "s1", "primary": False}, {"text": "s2", "primary": False},
                                 {"text": "s3", "primary": False}, {"text": "s4", "primary": False},
                                 {"text": "s5", "primary": False}],
                   "reply": {"accuracy": 4, "checklist": [True, True, True, True, False, False]}},
    # secondaries at mean 0.8: 0.9 > 0.8 -> PSR 1, but not every item met: ISR 0
    "psr-above": {"weights": {"accuracy": 1}, "high_stakes": False, "family": "c",
                  "checklist": ["primary", {"text": "s1", "primary": False}, {"text": "s2", "primary": False},
                                {"text": "s3", "primary": False}, {"text": "s4", "primary": False},
                                {"text": "s5", "primary": False}],
                  "reply": {"accuracy": 4, "checklist": [True, True, True, True, True, False]}},
    # every item met
    "all-met": {"weights": {"accuracy": 1}, "high_stakes": False, "family": "c", "checklist": ["one", "two"],
                "reply": {"accuracy": 4, "checklist": [True, True]}},
    # the judge never answers in the expected shape: a failure, neither usable nor passing
    "failed": {"weights": {"accuracy": 1}, "high_stakes": False, "family": "c", "checklist": ["one"],
               "reply": "I think it is fine."},
}


def scripted_judge(prompt: str, body: dict) -> str:
    """The reply scripted for the scenario the judge prompt names."""
    scenario = next(s for key, s in SCENARIOS.items() if f"[{key}]" in prompt)
    return scenario["reply"] if isinstance(scenario["reply"], str) else json.dumps(scenario["reply"])


@pytest.fixture(scope="module")
def judged():
    scenarios = {key: {**s, "id": key, "task": "t", "prompt": f"[{key}] do the task"} for key, s in SCENARIOS.items()}
    rows = [{"id": key, "prediction": "an answer", "correct": True} for key in SCENARIOS]
    with scripted_chat(scripted_judge) as server, LLMClient(ClientSection(base_url=server.url)) as client:
        return judge_answers(client, rows, scenarios, retries=1, max_tokens=64, basic=3.0, strict=4.0)


def test_usable_at_the_thresholds_and_the_veto(judged):
    usable = {row["id"]: row["usable"] for row in judged}
    assert usable == {"basic-at-3": True, "high-below-4": False, "high-at-4": True, "veto": False,
                      "psr-at-0.8": True, "psr-above": True, "all-met": True, "failed": False}


def test_checklist_rates_at_psr_0_8_and_with_a_failed_judgement(judged):
    by_id = {row["id"]: row for row in judged}
    assert (by_id["psr-at-0.8"]["psr"], by_id["psr-above"]["psr"], by_id["all-met"]["psr"]) == (0.0, 1.0, 1.0)
    assert (by_id["psr-above"]["isr"], by_id["all-met"]["isr"]) == (0.0, 1.0)
    assert by_id["failed"]["judge_failed"] and len(by_id["failed"]["judge_replies"]) == 2  # asked again, then counted
    summary = summarize_scenarios(judged)
    assert summary["judge_failures"] == 1
    assert summary["usable_rate"] == round(5 / 8, 4)
    # four scenarios have a checklist; one passes every item; the failed judgement stays in the denominator
    assert summary["pass_rate"] == round(1 / 4, 4)
    assert summary["isr"] == round(1 / 3, 4) and summary["psr"] == round(2 / 3, 4)  # over the judged ones
    assert summary["by_family"] == {"a": 0.5, "b": 0.5, "c": 0.75}


def test_each_judged_row_keeps_its_prompt_replies_scores_and_weighted_final(judged):
    by_id = {row["id"]: row for row in judged}
    basic = by_id["basic-at-3"]
    assert basic["final"] == 3.0 and basic["scores"] == {"accuracy": 2, "clarity": 4}
    assert "[basic-at-3] do the task" in basic["judge_prompt"] and "an answer" in basic["judge_prompt"]
    assert basic["judge_replies"] == [
        json.dumps(SCENARIOS["basic-at-3"]["reply"])]
    assert by_id["high-below-4"]["final"] == round((3 * 4 + 3.96) / 4, 4) and by_id["high-below-4"]["high_stakes"]
    assert basic["family"] == "a" and not basic["has_checklist"] and "passed" not in basic
    assert by_id["all-met"]["checklist"] == [True, True] and by_id["all-met"]["passed"] is True
    assert by_id["psr-above"]["passed"] is False and by_id["psr-above"]["csr"] == pytest.approx(5 / 6)
    failed = by_id["failed"]
    assert failed["usable"] is False and failed["passed"] is False and "final" not in failed


def test_summary_means_are_over_the_rows_that_have_them(judged):
    summary = summarize_scenarios(judged)
    finals = [row["final"] for row in judged if "final" in row]
    assert len(finals) == 7 and summary["mean_final"] == round(sum(finals) / 7, 4)
    assert summary["items"] == 8
    assert summary["csr"] == round((4 / 6 + 5 / 6 + 1.0) / 3, 4)
    assert summarize_scenarios([])["usable_rate"] is None


def test_a_scenario_without_weights_is_scored_on_accuracy_and_finals_keep_four_decimals():
    scenarios = {"bare": {"id": "bare", "prompt": "[bare] p"},
                 "sevenths": {"id": "sevenths", "prompt": "[sevenths] p", "weights": {"accuracy": 3, "clarity": 4}}}
    replies = {"bare": {"accuracy": 3.5}, "sevenths": {"accuracy": 4, "clarity": 3}}

    def judge(prompt: str, body: dict) -> str:
        return json.dumps(next(reply for key, reply in replies.items() if f"[{key}]" in prompt))

    rows = [{"id": key, "prediction": None} for key in scenarios]
    with scripted_chat(judge) as server, LLMClient(ClientSection(base_url=server.url)) as client:
        judged_rows = judge_answers(client, rows, scenarios, retries=0, max_tokens=64, basic=3.0, strict=4.0)
    assert [(row["final"], row["usable"]) for row in judged_rows] == [(3.5, True), (3.4286, True)]  # 24 / 7


def test_rule_check_scores_only_scenarios_with_checks_and_rates_each_family():
    scenarios = {"short": {"family": "f1", "checks": [{"type": "max_words", "value": 5}]},
                 "long": {"family": "f1", "checks": [{"type": "max_words", "value": 5}]},
                 "table": {"family": "f2", "checks": [{"type": "has_table"}, {"type": "max_words", "value": 50}]},
                 "silent": {"family": "f2", "checks": [{"type": "max_words", "value": 3}]},
                 "free": {"family": "f3"}}
    rows = [{"id": "short", "prediction": "one two three"},
            {"id": "long", "prediction": "one two three four five six seven"},
            {"id": "table", "prediction": "| a | b |\n|---|---|\n| 1 | 2 |"},
            {"id": "silent", "prediction": None},  # no answer at all: checked as empty text
            {"id": "free", "prediction": "anything"},
            {"id": "long", "prediction": "eight words are more than five words here"},
            {"id": "silent", "prediction": "three words here"}]
    summary = rule_check(rows, scenarios)
    assert summary == {"rule_pass_rate": 0.6667, "rule_checked": 6, "rule_by_family": {"f1": 0.3333, "f2": 1.0}}
    flags = [row.get("rule_passed") for row in rows]
    assert flags == [True, False, True, True, None, False, True]
    assert [check["passed"] for check in rows[2]["checks"]] == [True, True] and "checks" not in rows[4]
    assert rule_check([{"id": "free", "prediction": "x"}], scenarios) == {}


SCENARIO = {"prompt": "Explain the fee.", "task": "explain", "weights": {"accuracy": 2, "clarity": 1},
            "checklist": ["names the fee", {"text": "gives an example", "primary": False}]}


@pytest.mark.parametrize(("reply", "expected"), [
    ('{"accuracy": 4, "clarity": 3, "checklist": [true, true, true]}', None),
    ('{"accuracy": 5, "clarity": -1, "checklist": [true, false]}', {"scores": {"accuracy": 5.0, "clarity": -1.0},
                                                                     "checklist": [True, False]}),
    ('{"accuracy": 5.5, "clarity": 3, "checklist": [true, true]}', None),
    ('{"accuracy": -1.5, "clarity": 3, "checklist": [true, true]}', None),
    ('{"accuracy": true, "clarity": 3, "checklist": [true, true]}', None),
    ('{"accuracy": "4", "clarity": 3, "checklist": [true, true]}', None),
    ('{"clarity": 3, "checklist": [true, true]}', None),
    ('{"accuracy": 4, "clarity": 3, "checklist": [true]}', None),
    ('{"accuracy": 4, "clarity": 3, "checklist": [true, "yes"]}', None),
    ('{"accuracy": 4, "clarity": 3, "checklist": "all"}', None),
    ('{"accuracy": 4, "clarity": 3}', None),
    ("no json", None),
])
def test_a_judgement_parses_only_when_every_score_and_item_is_there_and_in_range(reply, expected):
    assert parse_judgement(reply, SCENARIO) == expected


def test_without_weights_or_checklist_the_judge_scores_accuracy_alone():
    bare = {"prompt": "p"}
    assert parse_judgement('{"accuracy": 3, "checklist": [true]}', bare) == {"scores": {"accuracy": 3.0}, "checklist": []}
    prompt = judge_prompt(bare, "an answer")
    assert "- accuracy: facts, figures and calculations are correct" in prompt and "checklist" not in prompt
    assert prompt.endswith('{"accuracy": 4}')


def test_the_judge_prompt_lists_dimensions_and_numbered_items():
    prompt = judge_prompt(SCENARIO, "The fee is 1%.")
    assert "Task: explain" in prompt and "Explain the fee." in prompt and "The fee is 1%." in prompt
    assert "- accuracy: facts" in prompt and "- clarity: well organised" in prompt
    assert "1. names the fee\n2. gives an example" in prompt
    assert prompt.endswith('{"accuracy": 4, "clarity": 4, "checklist": [true, true]}')
    assert checklist_items(SCENARIO) == [{"text": "names the fee", "primary": True},
                                         {"text": "gives an example", "primary": False}]
    assert checklist_items({"checklist": [{"primary": False}, {"text": "t"}]}) == [{"text": "", "primary": False},
                                                                                   {"text": "t", "primary": True}]


@pytest.mark.parametrize(("verdicts", "primary", "expected"), [
    ([True, True], [True, True], {"csr": 1.0, "isr": 1.0, "psr": 1.0}),
    ([True, False], [True, True], {"csr": 0.5, "isr": 0.0, "psr": 0.0}),
    ([False, True, True], [True, False, False], {"csr": 2 / 3, "isr": 0.0, "psr": 0.0}),
    ([True, True, True, True, False], [False] * 5, {"csr": 0.8, "isr": 0.0, "psr": 0.0}),  # CSR not above 0.8
    ([True] * 9 + [False], [False] * 10, {"csr": 0.9, "isr": 0.0, "psr": 1.0}),
    ([True, False], [False, False], {"csr": 0.5, "isr": 0.0, "psr": 0.0}),
    ([True, True, False, False], [True, False, False, False], {"csr": 0.5, "isr": 0.0, "psr": 0.0}),  # 0.667
])
def test_checklist_metrics_follow_cfbench(verdicts, primary, expected):
    assert checklist_metrics(verdicts, primary) == pytest.approx(expected)


def test_usable_needs_the_threshold_and_no_minus_one():
    weights = {"accuracy": 1, "clarity": 1}
    assert is_usable({"accuracy": 5, "clarity": 1}, weights, high_stakes=False)
    assert not is_usable({"accuracy": 5, "clarity": 1}, weights, high_stakes=True)
    assert not is_usable({"accuracy": 5, "clarity": -1}, {"accuracy": 9, "clarity": 1}, high_stakes=False)
    assert is_usable({"accuracy": 5, "clarity": -0.5}, {"accuracy": 9, "clarity": 1}, high_stakes=False)
    assert not is_usable({"accuracy": 5.0, "clarity": -1.0}, {"accuracy": 9, "clarity": 1}, high_stakes=False)  # parsed
    assert not is_usable({"accuracy": 3, "clarity": 2}, weights, high_stakes=False)  # 2.5, below the default 3
    assert is_usable({"accuracy": 4, "clarity": 4}, weights, high_stakes=True)  # exactly the default 4
    assert final_score({"accuracy": 4, "clarity": 1}, {"accuracy": 3, "clarity": 1}) == 3.25
