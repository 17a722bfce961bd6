"""The finance rubric: a judge scores an answer on weighted dimensions (-1..5) and a checklist.

Shared by the evaluation's scenario scoring (``finloom.eval.scenarios``) and the rubric reward of
alignment (``finloom.grading.rewards``): the same prompt, the same parsing, the same weighted score, so a
model is trained against the yardstick it is measured by. See ``finloom.eval.scenarios`` for the metrics.
"""

from __future__ import annotations

import json

from finloom.llm.judge import reply_json

DIMENSIONS = {
    "accuracy": "facts, figures and calculations are correct",
    "completeness": "covers everything the task asks for",
    "compliance": "respects laws, regulations and suitability rules; no misleading promises",
    "relevance": "stays on the task and the user's situation",
    "professionalism": "uses correct financial terms and sound reasoning",
    "clarity": "well organised and easy to follow",
    "practicality": "actionable and useful for the user",
    "instruction_following": "follows the requested format, length and constraints",
}

JUDGE_PROMPT = """You are a strict reviewer of answers written by a financial assistant.

Task: {task}
User request:
\"\"\"
{prompt}
\"\"\"

Assistant answer:
\"\"\"
{answer}
\"\"\"

Score the answer on each dimension from -1 to 5 (5 excellent, 3 acceptable, 1 poor, 0 absent,
-1 unacceptable: wrong in a way that could harm the user, non-compliant or unsafe):
{dimensions}
{checklist}
Reply with one JSON object only, like: {example}"""


def checklist_items(scenario: dict) -> list[dict]:
    """Checklist entries as {"text", "primary"}: plain strings are primary items."""
    items = []
    for item in scenario.get("checklist") or []:
        if isinstance(item, str):
            items.append({"text": item, "primary": True})
        else:
            items.append({"text": str(item.get("text", "")), "primary": bool(item.get("primary", True))})
    return items


def judge_prompt(scenario: dict, answer: str) -> str:
    weights = scenario.get("weights") or {"accuracy": 1}
    dimensions = "\n".join(f"- {name}: {DIMENSIONS.get(name, name)}" for name in weights)
    items = checklist_items(scenario)
    checklist = ""
    example = {name: 4 for name in weights}
    if items:
        checklist = "\nFor each checklist item say whether the answer meets it (true / false):\n" + "\n".join(
            f"{number}. {item['text']}" for number, item in enumerate(items, start=1)) + "\n"
        example["checklist"] = [True] * len(items)
    return JUDGE_PROMPT.format(task=scenario.get("task", ""), prompt=scenario["prompt"], answer=answer,
                               dimensions=dimensions, checklist=checklist,
                               example=json.dumps(example, ensure_ascii=False))


def parse_judgement(reply: str, scenario: dict) -> dict | None:
    """{"scores": {dimension: -1..5}, "checklist": [bool, ...]} or None if anything is missing or out of range."""
    payload = reply_json(reply)
    if payload is None:
        return None
    scores = {}
    for name in scenario.get("weights") or {"accuracy": 1}:
        value = payload.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 5:
            return None
        scores[name] = float(value)
    items = checklist_items(scenario)
    verdicts = payload.get("checklist", [])
    if items and (not isinstance(verdicts, list) or len(verdicts) != len(items)
                  or not all(isinstance(v, bool) for v in verdicts)):
        return None
    return {"scores": scores, "checklist": list(verdicts) if items else []}


def final_score(scores: dict[str, float], weights: dict[str, float]) -> float:
    total = sum(weights.values())
    return sum(scores[name] * weight for name, weight in weights.items()) / total


def is_usable(scores: dict[str, float], weights: dict[str, float], high_stakes: bool, basic: float = 3.0,
              strict: float = 4.0) -> bool:
    return min(scores.values()) > -1 and final_score(scores, weights) >= (strict if high_stakes else basic)


def checklist_metrics(verdicts: list[bool], primary: list[bool]) -> dict[str, float]:
    """CSR, ISR and PSR of one answer (CFBench's definitions)."""
    csr = sum(verdicts) / len(verdicts)
    isr = float(all(verdicts))
    primaries = [v for v, p in zip(verdicts, primary) if p]
    secondaries = [v for v, p in zip(verdicts, primary) if not p]
    if primaries and not all(primaries):
        psr = 0.0
    elif secondaries and primaries:
        psr = float(0.5 + 0.5 * sum(secondaries) / len(secondaries) > 0.8)
    elif secondaries:
        psr = float(csr > 0.8)
    else:
        psr = isr
    return {"csr": csr, "isr": isr, "psr": psr}
