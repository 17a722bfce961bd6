"""Scoring a prompt's sampled answers for the preference builder, in Baichuan Alignment's three judge modes.

- ``absolute`` (open tasks): the teacher rates each answer 1-10 on its own (``grading.rating``, as the prompt
  system's response filter does);
- ``pairwise`` (maths, reasoning): the teacher compares every two answers (same reasoning and result? which is
  better?), both orders against position bias; an answer's score is its share of wins, a tie half a win;
- ``golden`` (the prompt has a reference answer): the teacher rates each answer 1-10 against the reference;
- ``verified``: a prompt with an option answer, an expected number or rule checks is scored by
  ``finloom.grading.rewards`` without a judge: a right answer beats a wrong one whatever the prose.

Scores come back in [0, 1], None for an answer whose judgement never parsed (the caller counts them).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import permutations

from finloom.grading.rating import rate
from finloom.grading.rewards import combine, verifiable_rewards
from finloom.llm.judge import ask_judge, reply_json

PAIRWISE = """Two answers to the same request follow. Do they reach the same result by the same reasoning? Which is better (correct result first, then sound reasoning, then clarity)?

Request:
<<<
{prompt}
>>>

Answer A:
<<<
{a}
>>>

Answer B:
<<<
{b}
>>>

Reply with only a JSON object: {{"same_result": true, "better": "A"}} (better: "A", "B" or "tie")"""


def mode_for(prompt: dict, configured: str) -> str:
    if any(key in prompt for key in ("answer", "expected", "checks")) and configured in ("auto", "checks"):
        return "verified"
    if configured != "auto":
        return configured
    if prompt.get("golden"):
        return "golden"
    return "pairwise" if prompt.get("kind") == "reasoning" else "absolute"


def _better(reply: str) -> str | None:
    payload = reply_json(reply)
    value = payload.get("better") if payload else None
    return value if value in ("A", "B", "tie") else None


def verified_scores(prompt: dict, answers: list[str]) -> list[float]:
    """The mean of a prompt's verifiable rewards (format included) for each answer."""
    scores = []
    for answer in answers:
        found = verifiable_rewards(answer, prompt)
        scores.append(combine(found, {name: 1.0 for name in found}).total)
    return scores


def judged_scores(client, items: list[dict], retries: int) -> list[tuple[list[float | None], list[list[str]]]]:
    """For each ``{mode, prompt, answers, golden}``: scores in [0, 1] (None: never parsed) and the judge's raw
    replies, per answer (pairwise: per comparison). The requests of all items go out together, so the client's
    concurrency spans prompts, not only one prompt's answers."""
    rated = [(k, a) for k, item in enumerate(items) if item["mode"] in ("absolute", "golden")
             for a in range(len(item["answers"]))]
    compared = [(k, i, j) for k, item in enumerate(items) if item["mode"] == "pairwise"
                for i, j in permutations(range(len(item["answers"])), 2)]  # both orders of every pair
    ratings, rating_replies = rate(  # the shared 1-10 rating, against the reference in golden mode
        client, [items[k]["prompt"] for k, _ in rated], [items[k]["answers"][a] for k, a in rated], retries,
        [items[k]["golden"] if items[k]["mode"] == "golden" else None for k, _ in rated]) if rated else ([], [])
    verdicts = ask_judge(client, [PAIRWISE.format(prompt=items[k]["prompt"], a=items[k]["answers"][i],
                                                  b=items[k]["answers"][j]) for k, i, j in compared],
                         lambda _, reply: _better(reply), retries, max_tokens=48) if compared else []
    results = [([None] * len(item["answers"]), []) for item in items]
    for (k, a), score, replies in zip(rated, ratings, rating_replies):
        results[k][0][a] = None if score is None else (score - 1) / 9
        results[k][1].append(replies)
    wins, counted = defaultdict(float), defaultdict(int)
    for (k, i, j), verdict in zip(compared, verdicts):
        results[k][1].append(verdict.replies)
        if verdict.parsed is None:
            continue
        counted[k, i] += 1
        counted[k, j] += 1
        if verdict.parsed == "tie":
            wins[k, i] += 0.5
            wins[k, j] += 0.5
        else:
            wins[k, i if verdict.parsed == "A" else j] += 1
    for k, item in enumerate(items):
        if item["mode"] == "pairwise":
            results[k] = ([wins[k, a] / counted[k, a] if counted[k, a] else None for a in range(len(item["answers"]))],
                          results[k][1])
    return results
