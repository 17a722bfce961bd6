"""Rewards for alignment: verifiable checks, the finance rubric judged by the teacher, and their combination.

What online RL scores a sampled answer with, beside a reward model (Baichuan4-Finance's RLAIF; Baichuan
Alignment's verifiable rewards). Every reward is in [0, 1]:

- ``mcq``: the reply's option letters (``grading.answers.extract_letters``) equal the answer's set; with
  ``partial_credit`` p, a reply naming only correct letters earns p x (its share of them);
- ``calculation``: the reply's final number, in the expected unit (万 / 亿 / % handled), within a relative
  tolerance of the expected value;
- ``constraints``: the share of the prompt's rule-checked instruction constraints (``finloom.checks``: length,
  language, table, risk warning, required figures, ...) the reply meets;
- ``format``: the reply has the shape its task needs (letters for MCQ, a number for a calculation, otherwise
  non-empty and not a degenerate repetition);
- ``rubric``: the evaluation's scenario judge (``grading.rubric``) on weighted dimensions -1..5, mapped to
  [0, 1]; a compliance score of -1 is a hard zero, however good the rest.

``combine`` weights the components a sample has (a prompt without a golden answer has no ``mcq``) and keeps
every component per sample, so a user sees which one moved; a judge reply that never parses is a missing
component, counted, not a zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finloom.checks import check_response, pass_share
from finloom.grading.answers import answer_value, extract_letters, numbers_match
from finloom.grading.rubric import final_score, judge_prompt, parse_judgement
from finloom.llm.judge import ask_judge

_LOOP = re.compile(r"(.{8,}?)\1{3,}", re.DOTALL)  # a stretch of 8+ characters repeated 4+ times in a row


def mcq_reward(reply: str, answer: str, valid: str = "ABCDE", partial_credit: float = 0.0) -> float:
    predicted = extract_letters(reply, valid)
    if predicted is None:
        return 0.0
    expected = set(answer)
    if set(predicted) == expected:
        return 1.0
    if partial_credit and set(predicted) < expected:
        return partial_credit * len(predicted) / len(expected)
    return 0.0


def calculation_reward(reply: str, expected: float, unit: str = "", relative_tolerance: float = 0.005) -> float:
    return float(numbers_match(answer_value(reply, unit), expected, relative_tolerance))


def constraints_reward(reply: str, checks: list[dict]) -> float:
    return pass_share(check_response(reply, checks))


def format_reward(reply: str, task: dict) -> float:
    if "answer" in task:
        return float(extract_letters(reply, task.get("valid", "ABCDE")) is not None)
    if "expected" in task:
        return float(answer_value(reply, task.get("unit", "")) is not None)
    return float(bool(reply.strip()) and _LOOP.search(reply) is None)


def verifiable_rewards(reply: str, task: dict, partial_credit: float = 0.0, relative_tolerance: float = 0.005
                       ) -> dict[str, float]:
    """Every verifiable component ``task`` allows: ``answer`` (option letters) -> mcq, ``expected`` (+ ``unit``)
    -> calculation, ``checks`` -> constraints; format always."""
    found = {"format": format_reward(reply, task)}
    if "answer" in task:
        found["mcq"] = mcq_reward(reply, task["answer"], task.get("valid", "ABCDE"), partial_credit)
    if "expected" in task:
        found["calculation"] = calculation_reward(reply, float(task["expected"]), task.get("unit", ""),
                                                  task.get("tolerance", relative_tolerance))
    if task.get("checks"):
        found["constraints"] = constraints_reward(reply, task["checks"])
    return found


def rubric_reward(scores: dict[str, float], weights: dict[str, float]) -> float:
    """The weighted dimension score mapped from -1..5 to 0..1; compliance at -1 vetoes to 0."""
    if scores.get("compliance") == -1:
        return 0.0
    return (final_score(scores, weights) + 1) / 6


def rubric_rewards(client, rows: list[dict], retries: int = 2, max_tokens: int = 512) -> list[dict]:
    """Judge each ``{"scenario": {...weights, checklist, task, prompt}, "answer": str}`` through the teacher client.

    Each result holds ``rubric`` (None when the judge's replies never parsed), the parsed ``scores`` and the raw
    ``replies``; failures are for the caller to count."""
    prompts = [judge_prompt(row["scenario"], row["answer"]) for row in rows]
    verdicts = ask_judge(client, prompts, lambda i, reply: parse_judgement(reply, rows[i]["scenario"]), retries,
                         max_tokens)
    results = []
    for row, verdict in zip(rows, verdicts):
        weights = row["scenario"].get("weights") or {"accuracy": 1}
        parsed = verdict.parsed
        results.append({"rubric": None if parsed is None else round(rubric_reward(parsed["scores"], weights), 6),
                        "scores": None if parsed is None else parsed["scores"], "replies": verdict.replies})
    return results


@dataclass
class Combined:
    total: float | None
    components: dict[str, float | None]
    weights_used: dict[str, float]


def combine(components: dict[str, float | None], weights: dict[str, float]) -> Combined:
    """The weighted mean of the components present (not None) among those ``weights`` names; None if none is."""
    present = {name: weight for name, weight in weights.items() if weight and components.get(name) is not None}
    total = sum(present.values())
    value = sum(components[name] * weight for name, weight in present.items()) / total if present else None
    return Combined(value, dict(components), {name: weight / total for name, weight in present.items()})
