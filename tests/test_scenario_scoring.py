"""Scenario aggregation with a scripted judge behind a real HTTP server: the usable thresholds at exactly 3.0 and
4.0, a -1 veto, CFBench's PSR at exactly 0.8, and failed judgements counted in every rate's denominator."""

from __future__ import annotations

import json

import pytest

from conftest import scripted_chat
from finloom.eval.scenarios import judge_answers, summarize_scenarios
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
