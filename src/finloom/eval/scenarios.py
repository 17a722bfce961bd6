"""FLAME-Sce scenario scoring by a judge LLM, with Baichuan's pass rate and CFBench's CSR / ISR / PSR.

A scenario has dimension weights (accuracy, completeness, compliance, relevance, professionalism,
clarity, practicality, instruction following; e.g. a minutes summary weighs accuracy 30,
completeness 30, clarity 10, practicality 10, instruction following 20) and may carry a checklist.
The judge scores every weighted dimension from -1 to 5 (-1: unacceptable, e.g. non-compliant or
harmful) and says for each checklist item whether the answer meets it. The final score is the
weighted mean of the dimension scores; an answer is *usable* if it reaches 3 (basic tasks) or 4
(high-stakes tasks) and no dimension is -1. Checklist metrics: CSR is the mean share of items
met, ISR (= Baichuan's pass rate) the share of answers meeting every item, PSR per CFBench (0 if a
primary item fails, else 1 when 0.5 + 0.5 * mean(secondary) > 0.8; all-secondary lists: CSR > 0.8).

Every judge prompt and raw reply is kept; a reply that cannot be parsed is asked again up to
``retries`` times and then counted as a judge failure (the answer is then neither usable nor
passing, and the failure count is reported), never dropped.
"""

from __future__ import annotations

import json

from finloom.checks import check_response
from finloom.llm.judge import ask_judge, reply_json

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


def _checklist_items(scenario: dict) -> list[dict]:
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
    items = _checklist_items(scenario)
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
    items = _checklist_items(scenario)
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


def judge_answers(client, rows: list[dict], scenarios: dict[str, dict], retries: int, max_tokens: int,
                  basic: float, strict: float) -> list[dict]:
    """Judge every (scenario, answer) row; each row gets prompt, replies, scores or the failure."""
    prompts = [judge_prompt(scenarios[row["id"]], row["prediction"] or "") for row in rows]
    verdicts = ask_judge(client, prompts, lambda i, reply: parse_judgement(reply, scenarios[rows[i]["id"]]),
                         retries, max_tokens)
    judged = []
    for row, prompt, verdict in zip(rows, prompts, verdicts):
        scenario, judgement = scenarios[row["id"]], verdict.parsed
        out = {**row, "judge_prompt": prompt, "judge_replies": verdict.replies, "judge_failed": verdict.failed,
               "family": scenario.get("family", ""), "high_stakes": bool(scenario.get("high_stakes")),
               "has_checklist": bool(_checklist_items(scenario))}
        if judgement is None:
            out.update(usable=False, passed=False)
        else:
            weights = scenario.get("weights") or {"accuracy": 1}
            out.update(scores=judgement["scores"], final=round(final_score(judgement["scores"], weights), 4),
                       usable=is_usable(judgement["scores"], weights, out["high_stakes"], basic, strict))
            items = _checklist_items(scenario)
            if items:
                out.update(checklist=judgement["checklist"],
                           **checklist_metrics(judgement["checklist"], [item["primary"] for item in items]))
                out["passed"] = bool(out["isr"])
        judged.append(out)
    return judged


def rule_check(rows: list[dict], scenarios: dict[str, dict]) -> dict:
    """Score every answer whose scenario has ``checks`` by rules (``finloom.checks``), apart from the judge.

    Each such row gets ``checks`` (every rule's verdict and detail) and ``rule_passed`` (all hold). Returns the
    rule-checked pass rate over those rows, per scenario family too, and how many rows had checks."""
    checked = []
    for row in rows:
        checks = scenarios[row["id"]].get("checks") or []
        if checks:
            results = check_response(row["prediction"] or "", checks)
            row.update(checks=[r.as_dict() for r in results], rule_passed=all(r.passed for r in results))
            checked.append((scenarios[row["id"]].get("family", ""), row["rule_passed"]))
    if not checked:
        return {}
    by_family: dict[str, list[bool]] = {}
    for family, passed in checked:
        by_family.setdefault(family, []).append(passed)
    return {"rule_pass_rate": round(sum(p for _, p in checked) / len(checked), 4), "rule_checked": len(checked),
            "rule_by_family": {f: round(sum(v) / len(v), 4) for f, v in sorted(by_family.items())}}


def summarize_scenarios(judged: list[dict]) -> dict:
    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 4) if values else None

    by_family: dict[str, list[dict]] = {}
    for row in judged:
        by_family.setdefault(row["family"], []).append(row)
    checked = [r for r in judged if "csr" in r]
    return {
        "usable_rate": mean(r["usable"] for r in judged), "items": len(judged),
        "judge_failures": sum(r["judge_failed"] for r in judged),
        "mean_final": mean(r["final"] for r in judged if "final" in r),
        "by_family": {family: mean(r["usable"] for r in rows) for family, rows in sorted(by_family.items())},
        # A failed judgement is neither usable nor passing: it stays in the pass rate's denominator.
        "pass_rate": mean(r["passed"] for r in judged if r.get("has_checklist")), "csr": mean(r["csr"] for r in checked),
        "isr": mean(r["isr"] for r in checked), "psr": mean(r["psr"] for r in checked),
    }
