"""The report's account of PAS: where the training pairs came from (bundled or generated, what the critique
rejected and why), and the target model's scenario answers with vs without the complement."""

from __future__ import annotations

from finloom.report import plots
from finloom.report.page import Sections, table

EXAMPLE_CHARS = 160
EXAMPLES = 4


def _cut(text: str | None) -> str:
    return "—" if text is None else text[:EXAMPLE_CHARS].replace("\n", " ")


def pas_sections(metrics: dict, rows: list[dict]) -> Sections:
    if not metrics:
        return []
    given, generated = metrics.get("given"), metrics.get("generated")
    funnel = []
    if given:
        funnel += [["ready pairs read (complements files)", given["read"]]]
        funnel += [[f"ready pairs rejected: {reason}", count] for reason, count in given["rejected_by"].items()]
        funnel.append(["ready pairs kept", given["kept"]])
    if generated:
        funnel += [["pool prompts read", generated["read"]], ["pool records rejected (malformed)", generated["rejected"]]]
        funnel += [["not asked: beyond selection.max_prompts" if reason == "over_budget" else f"dropped: {reason}", count]
                   for reason, count in generated["dropped"].items()]
        funnel += [["complements generated (all attempts)", generated["attempts"]],
                   ["accepted at the first attempt", generated["accepted_first_time"]],
                   ["generated pairs kept", generated["kept"]]]
        funnel += [[f"rejections: {criterion}", count] for criterion, count in generated["rejections"].items()]
    funnel.append(["training pairs", metrics.get("pairs")])
    note = ("Ready pairs come from the recipe's complements files (the quickstart's are written by the finloom project "
            "and bundled with it); generated ones are written by the teacher from per-category golden examples, "
            "checked by the rules (language, length, new numbers, keywords) and the teacher's five-criterion critique, "
            "and regenerated up to pas.generation.attempts times. A rejection names its criterion; every prompt's "
            "decision is in pas/decisions.jsonl.")
    sections = [("PAS: training pairs", table(["", "count"], funnel), None, note)]
    evaluation = metrics.get("eval")
    if evaluation:
        results = [[label, evaluation["without"].get(key), evaluation["with"].get(key)]
                   for label, key in (("rule-checked pass rate", "rule_pass_rate"), ("judged usable rate", "usable_rate"),
                                      ("judge failures", "judge_failures"), ("mean judged score", "mean_final"))
                   if key in evaluation["without"]]
        results += [["pairwise win rate of the answer with PAS", None, evaluation.get("win_rate")],
                    ["the PAS model's complements passing the rules", None, evaluation.get("rules_pass_rate")],
                    ["... and the whole critique", None, evaluation["critique_pass_rate"]]]
        judge = ("No judge is configured (a teacher section sets one)" if "judge" in evaluation
                 else "The judge is the recipe's teacher")
        note = (f"The target model answers {evaluation['items']} scenarios greedily, with and without the complement "
                f"the PAS model wrote ({evaluation['augmented']} augmented). {judge}; failed judgements count as "
                "neither usable nor passing, and "
                f"{evaluation.get('pairwise_failed', 0)} pairwise comparisons never parsed. Critique by "
                f"{evaluation['critique_by']}; {evaluation.get('critique_unjudged', 0)} critiques never parsed (not passed). A tiny model as judge is a demonstration of the path, not a score.")
        sections.append(("PAS: answers with vs without", table(["", "without PAS", "with PAS"], results),
                         plots.pas_comparison(evaluation), note))
    if rows:
        shown = [[row["prompt"][:EXAMPLE_CHARS], _cut(row["complement"]), _cut(row["without"]), _cut(row["with"])]
                 for row in rows[:EXAMPLES]]
        sections.append(("PAS: examples", table(["prompt", "complement (PAS model)", "answer without", "answer with"],
                                                shown), None, f"Texts cut at {EXAMPLE_CHARS} characters."))
    return sections
