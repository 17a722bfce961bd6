"""With vs without PAS: the same model answers the same scenarios twice, once with the PAS complement appended.

Measured as the eval stage measures scenarios (``finloom.eval.scenarios``): the rule-checked pass rate, the
judge's usable rate, and a pairwise win rate (the judge compares the two answers to the original prompt in both
orders, a tie half a win; ``finloom.reward.judging``). The PAS model's own complements of these prompts go
through the critique too: the share that passes is its critique pass rate. Judge failures are counted, and a
failed judgement stays in its rate's denominator as neither usable nor passing.
"""

from __future__ import annotations

from pathlib import Path

from finloom.errors import BadInput
from finloom.eval.harness import spread
from finloom.eval.layouts import convert
from finloom.eval.scenarios import judge_answers, rule_check, summarize_scenarios
from finloom.files import read_records
from finloom.llm.generation import LocalGenerator
from finloom.llm.judge import ask_judge
from finloom.pas.augment import Augmenter
from finloom.pas.critique import critique_prompt, parse_critique, rule_problem
from finloom.recipe import PASCritique, PASEval, ScenarioSettings
from finloom.reward.judging import judged_scores

CRITIQUE_MAX_TOKENS = 128


def load_scenarios(paths: list[Path], max_items: int) -> list[dict]:
    """The scenarios, spread over their families as the eval stage cuts them."""
    items = []
    for path in paths:
        malformed: list[dict] = []
        converted, rejects = convert(read_records(path, ("prompt",), malformed), "scenario")
        if malformed:
            raise BadInput(f"pas.eval.files: {path}: {malformed[0]}")
        if rejects:
            raise BadInput(f"pas.eval.files: {path}: record {rejects[0][0] + 1} is no scenario ({rejects[0][1]})")
        items += converted
    if not items:
        raise BadInput("pas.eval.files: no scenarios")
    return spread(items, "family")[:max_items]


def answer_with_and_without(target: LocalGenerator, augmenter: Augmenter, scenarios: list[dict],
                            max_tokens: int) -> list[dict]:
    """Per scenario: the complement, and the target's greedy answers without and with it."""
    rows = []
    for item in scenarios:
        pas = augmenter.augment(item["prompt"])
        row = {"id": item["id"], "family": item.get("family", ""), "prompt": item["prompt"],
               "category": pas["category"] if pas else None, "complement": pas["complement"] if pas else None}
        for key, prompt in (("without", item["prompt"]), ("with", pas["prompt"] if pas else item["prompt"])):
            chat = target.chat_prompt([{"role": "user", "content": prompt}])
            row[key] = target.generate(chat, max_tokens=max_tokens).text
        rows.append(row)
    return rows


def critique_pass_rate(rows: list[dict], critique: PASCritique, judge) -> dict:
    """The share of the PAS model's complements that the rules (and the teacher, if it critiques) accept."""
    verdicts: dict[int, dict] = {}
    for n, row in enumerate(rows):
        problem = rule_problem(row["prompt"], row["complement"], critique) if row["complement"] else None
        verdicts[n] = ({"passed": False, "criterion": "no_complement", "by": "pas"} if not row["complement"]
                       else {"passed": False, "criterion": problem.criterion, "by": "rules", "reason": problem.reason}
                       if problem else {"passed": True, "by": "rules"})
    rules_passed = sum(v["passed"] for v in verdicts.values())
    asked = [n for n, v in verdicts.items() if v["passed"]] if critique.method == "teacher" and judge else []
    failures = 0
    if asked:
        replies = ask_judge(judge, [critique_prompt(rows[n]["prompt"], rows[n]["complement"]) for n in asked],
                            lambda _, reply: parse_critique(reply), critique.retries, CRITIQUE_MAX_TOKENS)
        for n, verdict in zip(asked, replies):
            if verdict.parsed is True:
                verdicts[n] = {"passed": True, "by": "teacher"}
            else:
                failures += verdict.parsed is None
                verdicts[n] = {"passed": False, "by": "teacher", "criterion": verdict.parsed.criterion
                               if verdict.parsed else "unjudged", "replies": verdict.replies}
    for n, row in enumerate(rows):
        row["critique"] = verdicts[n]
    return {"critique_pass_rate": round(sum(v["passed"] for v in verdicts.values()) / len(rows), 4),
            "rules_pass_rate": round(rules_passed / len(rows), 4),
            "critique_by": "rules and teacher" if asked or (critique.method == "teacher" and judge) else "rules",
            "critique_unjudged": failures}


def judged(rows: list[dict], scenarios: dict[str, dict], judge, settings: PASEval,
           scoring: ScenarioSettings) -> dict:
    """Usable rates of both answers and the win rate of the answer with PAS."""
    metrics = {}
    for key in ("without", "with"):
        answers = [{"id": row["id"], "prediction": row[key]} for row in rows]
        verdicts = judge_answers(judge, answers, scenarios, settings.judge_retries, settings.judge_max_tokens,
                                 scoring.usable_basic, scoring.usable_high_stakes)
        summary = summarize_scenarios(verdicts)
        metrics[key] = {name: summary[name] for name in ("usable_rate", "judge_failures", "mean_final")}
        for row, verdict in zip(rows, verdicts):
            row[f"judge_{key}"] = {name: verdict.get(name) for name in ("usable", "final", "judge_failed")}
    compared = judged_scores(judge, [{"mode": "pairwise", "prompt": row["prompt"], "answers": [row["with"], row["without"]]}
                                     for row in rows], settings.judge_retries)
    wins = []
    for row, (scores, replies) in zip(rows, compared):
        row["win"], row["pairwise_replies"] = scores[0], replies
        wins.append(scores[0])
    decided = [w for w in wins if w is not None]
    metrics["win_rate"] = round(sum(decided) / len(decided), 4) if decided else None
    metrics["pairwise_failed"] = len(wins) - len(decided)
    return metrics


def evaluate_pas(target_dir: Path, augmenter: Augmenter, settings: PASEval, critique: PASCritique,
                 scoring: ScenarioSettings, resolve, judge=None, loading=None) -> tuple[list[dict], dict]:
    """Rows (one per scenario, with both answers, their checks and verdicts) and the with / without metrics."""
    scenarios = load_scenarios([resolve(f.path) for f in settings.files], settings.max_items)
    target = LocalGenerator(target_dir, loading) if loading else LocalGenerator(target_dir)
    rows = answer_with_and_without(target, augmenter, scenarios, settings.max_tokens)
    by_id = {item["id"]: item for item in scenarios}
    metrics: dict = {"items": len(rows), "augmented": sum(row["complement"] is not None for row in rows)}
    for key in ("without", "with"):
        answers = [{"id": row["id"], "prediction": row[key]} for row in rows]
        metrics.setdefault(key, {}).update({name: value for name, value in rule_check(answers, by_id).items()
                                            if name in ("rule_pass_rate", "rule_checked")})
        for row, answer in zip(rows, answers):
            row[f"rules_{key}"] = answer.get("rule_passed")
    metrics.update(critique_pass_rate(rows, critique, judge))
    if judge is None:
        metrics["judge"] = "not configured (set a teacher section)"
        return rows, metrics
    scored = judged(rows, by_id, judge, settings, scoring)
    for key in ("without", "with"):
        metrics[key].update(scored.pop(key))
    metrics.update(scored)
    return rows, metrics
