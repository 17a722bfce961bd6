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

from finloom.checks import check_response
from finloom.grading.rubric import (
    checklist_items,
    checklist_metrics,
    final_score,
    is_usable,
    judge_prompt,
    parse_judgement,
)
from finloom.llm.judge import ask_judge

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
               "has_checklist": bool(checklist_items(scenario))}
        if judgement is None:
            out.update(usable=False, passed=False)
        else:
            weights = scenario.get("weights") or {"accuracy": 1}
            out.update(scores=judgement["scores"], final=round(final_score(judgement["scores"], weights), 4),
                       usable=is_usable(judgement["scores"], weights, out["high_stakes"], basic, strict))
            items = checklist_items(scenario)
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
