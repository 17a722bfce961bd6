"""The report's account of the prompts stage: where the tags came from, the selection funnel, the tag
distribution of the kept set, and examples of kept and dropped prompts read from ``decisions.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from finloom.report import plots
from finloom.report.page import Sections, table

EXAMPLES_PER_REASON = 2
EXAMPLE_CHARS = 160


def _examples(decisions: list[dict]) -> list[list]:
    rows, shown = [], {}
    for decision in decisions:
        outcome = "kept" if decision.get("kept") else decision.get("reason", "?")
        if shown.get(outcome, 0) >= EXAMPLES_PER_REASON:
            continue
        shown[outcome] = shown.get(outcome, 0) + 1
        detail = {k: decision[k] for k in ("dup_of", "similarity", "template_of", "quality") if decision.get(k) is not None}
        rows.append([outcome, decision["id"], decision["text"][:EXAMPLE_CHARS].replace("\n", " "),
                     ", ".join(f"{k}={v}" for k, v in detail.items()) or "—"])
    return sorted(rows, key=lambda row: (row[0] != "kept", row[0]))


def prompts_sections(metrics: dict, decisions_path: Path) -> Sections:
    if not metrics:
        return []
    tagging, quality, responses = metrics.get("tagging", {}), metrics.get("quality", {}), metrics.get("responses", {})
    rows = [["prompts read", metrics.get("read")], ["rejected (malformed input)", metrics.get("rejected")]]
    rows += [[f"dropped: {reason}", count] for reason, count in metrics.get("dropped", {}).items()]
    rows.append(["kept for SFT", metrics.get("kept")])
    sources = [f"tags by {tagging.get('method')}"]
    if tagging.get("agreement"):
        sources.append("classifier agreement with " + tagging.get("agreement_with", "held-out labels") + ": " +
                       ", ".join(f"{d} {v:.0%}" for d, v in tagging["agreement"].items() if v is not None))
    if tagging.get("teacher_asked"):
        sources.append(f"teacher tagged {tagging['teacher_asked']} prompts, {tagging['teacher_failed']} replies failed "
                       "to parse after retries")
    annotated = "project-written annotations bundled with the pool" if quality.get("method") == "annotations" else None
    sources.append(f"quality by {annotated or quality.get('method')} (drop below {quality.get('drop_below')})")
    if quality.get("comparisons"):
        sources.append(f"{quality['comparisons']} pairwise comparisons, {quality.get('comparisons_failed', 0)} failed")
    given = responses.get("method") == "given"
    sources.append("responses " + ("given in the pool (for the bundled pool: project-written reference answers)" if given
                                   else f"sampled ({responses.get('candidates')} candidates, "
                                        f"{responses.get('ratings_failed', 0)} ratings failed)"))
    shortfalls = metrics.get("quota_shortfalls") or {}
    if shortfalls:
        sources.append("quota shortfalls: " + ", ".join(f"{k} at {v['share']:.1%} (wanted {v['min_share']:.0%}, "
                                                         f"{v['available']} available)" for k, v in shortfalls.items()))
    note = ("Every prompt read is kept or dropped with its reason (prompts/decisions.jsonl); read = kept + dropped. "
            + "; ".join(sources) + f". {metrics.get('clusters')} clusters, {metrics.get('template_families')} template "
            f"families, embedding {metrics.get('embedding')}, {metrics.get('teacher_requests', 0)} teacher requests.")
    sections = [("Prompt selection (SFT set)", table(["", "prompts"], rows),
                 plots.tag_distribution(metrics.get("tags_kept", {})), note)]
    if decisions_path.exists():
        decisions = [json.loads(line) for line in decisions_path.read_text(encoding="utf-8").splitlines()]
        sections.append(("Prompt selection: examples", table(["outcome", "id", "prompt", "detail"], _examples(decisions)),
                         None, f"Up to {EXAMPLES_PER_REASON} prompts per outcome, in pool order."))
    return sections
