"""Rewards for alignment: verifiable components on real reply shapes, the rubric through a real judge server,
and their combination."""

from __future__ import annotations

import json
import pytest

from conftest import scripted_chat
from finloom.grading.rewards import (
    calculation_reward,
    combine,
    format_reward,
    mcq_reward,
    rubric_reward,
    rubric_rewards,
    verifiable_rewards,
)
from finloom.llm.client import LLMClient
from finloom.recipe import ClientSection


@pytest.mark.parametrize(("reply", "answer", "partial", "expected"), [
    ("答案：AB", "AB", 0.0, 1.0),
    ("The correct options are A and C.", "AC", 0.0, 1.0),
    ("解析略。故选B", "AB", 0.0, 0.0),           # a subset earns nothing without partial credit
    ("解析略。故选B", "AB", 0.5, 0.25),          # with it: 0.5 x 1/2
    ("答案：ABD", "AB", 0.5, 0.0),               # a wrong letter earns nothing
    ("I am not sure.", "A", 0.5, 0.0),
])
def test_mcq_reward(reply, answer, partial, expected):
    assert mcq_reward(reply, answer, partial_credit=partial) == pytest.approx(expected)


@pytest.mark.parametrize(("reply", "expected", "unit", "reward"), [
    ("应纳税额约为12.68万元。", 12.68, "10k_yuan", 1.0),
    ("Answer: 126,800 yuan", 12.68, "10k_yuan", 1.0),
    ("年化收益率为 5.2%", 5.2, "", 1.0),
    ("年化收益率为 5.4%", 5.2, "", 0.0),
    ("无法计算", 5.2, "", 0.0),
])
def test_calculation_reward(reply, expected, unit, reward):
    assert calculation_reward(reply, expected, unit) == reward


def test_verifiable_rewards_and_format():
    checks = [{"type": "language", "value": "zh"}, {"type": "risk_disclaimer"}, {"type": "max_chars", "value": 10}]
    found = verifiable_rewards("该基金近一年收益稳健，但投资有风险，请谨慎决策。", {"checks": checks})
    assert found == {"format": 1.0, "constraints": pytest.approx(2 / 3)}  # too long for 10 characters
    assert verifiable_rewards("答案：C", {"answer": "C"}) == {"format": 1.0, "mcq": 1.0}
    assert verifiable_rewards("大约三百", {"expected": 325}) == {"format": 1.0, "calculation": 0.0}
    assert format_reward("Buy now! " * 6, {}) == 0.0 and format_reward("", {}) == 0.0
    assert format_reward("no letters here", {"answer": "A"}) == 0.0


def test_rubric_reward_maps_scores_and_vetoes_non_compliance():
    weights = {"accuracy": 3, "compliance": 1}
    assert rubric_reward({"accuracy": 5, "compliance": 5}, weights) == 1.0
    assert rubric_reward({"accuracy": 2, "compliance": 2}, weights) == pytest.approx(0.5)
    assert rubric_reward({"accuracy": 5, "compliance": -1}, weights) == 0.0
    assert rubric_reward({"accuracy": -1}, {"accuracy": 1}) == 0.0


REPLIES = {"good": {"accuracy": 5, "compliance": 4}, "veto": {"accuracy": 5, "compliance": -1},
           "broken": "It looks fine to me."}


def scripted_rubric(prompt: str, body: dict) -> str:
    reply = next(r for key, r in REPLIES.items() if f"[{key}]" in prompt)
    return reply if isinstance(reply, str) else json.dumps(reply)


def test_rubric_through_a_judge_server_counts_unparsed_replies():
    rows = [{"scenario": {"task": "advice", "prompt": f"[{key}] advise me", "weights": {"accuracy": 3, "compliance": 1}},
             "answer": "an answer"} for key in REPLIES]
    with scripted_chat(scripted_rubric) as server, LLMClient(ClientSection(base_url=server.url)) as client:
        results = rubric_rewards(client, rows, retries=2, max_tokens=64)
    assert results[0]["rubric"] == 0.958333 and results[0]["scores"]["compliance"] == 4  # (4.75 + 1) / 6, 6 places
    assert results[1]["rubric"] == 0.0
    assert results[2]["rubric"] is None and len(results[2]["replies"]) == 3  # asked again twice, then counted


def test_rubric_defaults_weigh_accuracy_alone_and_ask_twice_more_for_512_tokens():
    """A scenario without weights is scored on accuracy alone; by default a reply that never parses is asked for
    twice more, each time with up to 512 tokens."""
    rows = [{"scenario": {"task": "advice", "prompt": f"[{key}] advise me"}, "answer": "an answer"}
            for key in ("good", "broken")]
    bodies = []
    with scripted_chat(lambda prompt, body: bodies.append(body) or scripted_rubric(prompt, body)) as server, \
            LLMClient(ClientSection(base_url=server.url)) as client:
        results = rubric_rewards(client, rows)
    assert results[0]["rubric"] == 1.0  # accuracy 5; compliance 4 has no weight
    assert results[1]["rubric"] is None and len(results[1]["replies"]) == 3
    assert [body["max_tokens"] for body in bodies] == [512] * 4


def test_combine_weights_the_components_present():
    both = combine({"reward_model": 0.8, "rubric": 0.2, "mcq": None}, {"reward_model": 1.0, "rubric": 3.0, "mcq": 2.0})
    assert both.total == pytest.approx((0.8 * 1 + 0.2 * 3) / 4)
    assert both.weights_used == {"reward_model": 0.25, "rubric": 0.75}
    assert both.components["mcq"] is None  # kept, so the sample's log shows it was missing
    assert combine({"rubric": None}, {"rubric": 1.0}).total is None
    assert combine({"mcq": 1.0, "rubric": 0.0}, {"mcq": 1.0, "rubric": 0.0}).total == 1.0  # a zero weight is off


def test_reward_defaults_and_the_partial_credit_arithmetic():
    """What the mutation run found unheld: the share of letters in partial credit, the defaults (no partial
    credit, a 0.5% tolerance) and the format rule for a calculation."""
    assert mcq_reward("答案：AB", "ABC", partial_credit=0.6) == pytest.approx(0.6 * 2 / 3)
    assert mcq_reward("故选B", "AB") == 0.0 and verifiable_rewards("故选B", {"answer": "AB"})["mcq"] == 0.0
    assert calculation_reward("Answer: 100.4", 100.0) == 1.0 and calculation_reward("Answer: 100.6", 100.0) == 0.0
    assert verifiable_rewards("Answer: 100.4", {"expected": 100})["calculation"] == 1.0
    assert verifiable_rewards("Answer: 100.6", {"expected": 100})["calculation"] == 0.0
    assert format_reward("no figure at all", {"expected": 3.5}) == 0.0
    assert format_reward("It is 3.5", {"expected": 3.5}) == 1.0
