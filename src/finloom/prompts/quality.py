"""Prompt quality by anchor-based pairwise judging (Baichuan Alignment).

Prompts are bucketed by a tag (ability by default) and a few anchor prompts are drawn per bucket;
the teacher compares each prompt with each anchor of its bucket on clarity, practicality,
complexity and novelty, three levels each (better, tie, worse). A prompt's score is its share of
the comparisons won (a tie is half): 0.5 is as good as the anchors. Which side the prompt is shown
on alternates, against position bias. A comparison whose replies never parse is left out of the
score and counted; a prompt with none left gets no score and is dropped as ``quality_unjudged``.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict

from finloom.llm.judge import ask_judge, reply_json

CRITERIA = ("clarity", "practicality", "complexity", "novelty")
LEVELS = {"a": 1.0, "tie": 0.5, "b": 0.0}
PAIR_PROMPT = """Compare two user prompts written for training a finance assistant. For each criterion say which prompt is better: "A", "B" or "tie".
- clarity: the request is clear and self-contained
- practicality: it is something real users need
- complexity: it takes real thought or skill to answer well
- novelty: it is not a stock, repeated request

Prompt A:
<<<
{a}
>>>

Prompt B:
<<<
{b}
>>>

Reply with only a JSON object: {{"clarity": "A", "practicality": "tie", "complexity": "B", "novelty": "A"}}"""


def parse_comparison(reply: str) -> dict[str, float] | None:
    """Per criterion, the score of prompt A (1 better, 0.5 tie, 0 worse), or None."""
    payload = reply_json(reply)
    if payload is None:
        return None
    scores = {}
    for criterion in CRITERIA:
        value = payload.get(criterion)
        value = value.strip().lower() if isinstance(value, str) else None
        if value not in LEVELS:
            return None
        scores[criterion] = LEVELS[value]
    return scores


def choose_anchors(buckets: dict[str, list[str]], anchors: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {bucket: sorted(rng.sample(sorted(ids), min(anchors, len(ids)))) for bucket, ids in buckets.items()}


def score_prompts(client, ids: list[str], texts: dict[str, str], bucket_of: dict[str, str],
                  anchors: dict[str, list[str]], retries: int) -> list[dict]:
    """Per id: {"score": share won or None, "comparisons": n, "failed": n}."""
    pairs = []
    for item in ids:
        for anchor in anchors[bucket_of[item]]:
            if anchor != item:
                flipped = hash_order(item, anchor) % 2 == 1
                pairs.append((item, anchor, flipped))
    prompts = [PAIR_PROMPT.format(a=texts[anchor] if flipped else texts[item], b=texts[item] if flipped else texts[anchor])
               for item, anchor, flipped in pairs]
    verdicts = ask_judge(client, prompts, lambda _, reply: parse_comparison(reply), retries, max_tokens=96)
    won: dict[str, list[float]] = defaultdict(list)
    failed: dict[str, int] = defaultdict(int)
    for (item, _, flipped), verdict in zip(pairs, verdicts):
        if verdict.failed:
            failed[item] += 1
            continue
        for value in verdict.parsed.values():
            won[item].append(1.0 - value if flipped else value)
    results = []
    for item in ids:
        compared = len(won[item]) // len(CRITERIA)
        if not any(a != item for a in anchors[bucket_of[item]]):  # a bucket of one: nothing to compare with
            results.append({"score": 0.5, "comparisons": 0, "failed": 0})
            continue
        score = round(sum(won[item]) / len(won[item]), 4) if won[item] else None
        results.append({"score": score, "comparisons": compared, "failed": failed[item]})
    return results


def hash_order(a: str, b: str) -> int:
    """A stable coin per pair (Python's hash() is salted per process)."""
    return zlib.crc32(f"{a}\x00{b}".encode())
