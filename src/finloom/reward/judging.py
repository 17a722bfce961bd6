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


def judged_scores(client, mode: str, prompt_text: str, answers: list[str], golden: str | None, retries: int
                  ) -> tuple[list[float | None], list[list[str]]]:
    """Scores in [0, 1] (None: never parsed) and the judge's raw replies, per answer (pairwise: per comparison)."""
    if mode in ("absolute", "golden"):  # the shared 1-10 rating, against the reference in golden mode
        scores, replies = rate(client, [prompt_text] * len(answers), answers, retries,
                               golden if mode == "golden" else None)
        return [None if s is None else (s - 1) / 9 for s in scores], replies
    order = list(permutations(range(len(answers)), 2))  # both orders of every pair
    prompts = [PAIRWISE.format(prompt=prompt_text, a=answers[i], b=answers[j]) for i, j in order]
    verdicts = ask_judge(client, prompts, lambda _, reply: _better(reply), retries, max_tokens=48)
    wins = [0.0] * len(answers)
    counted = [0] * len(answers)
    for (i, j), verdict in zip(order, verdicts):
        if verdict.parsed is None:
            continue
        counted[i] += 1
        counted[j] += 1
        if verdict.parsed == "tie":
            wins[i] += 0.5
            wins[j] += 0.5
        else:
            wins[i if verdict.parsed == "A" else j] += 1
    scores = [wins[k] / counted[k] if counted[k] else None for k in range(len(answers))]
    return scores, [v.replies for v in verdicts]
