"""The ``report`` stage: ``RUN/report.html`` (self-contained, plots inline), ``RUN/report.md`` and the model card.

Everything is read back from manifests and stage artifacts, so ``finloom report DIR`` can rebuild
the report of any run, and the report shows exactly what the run recorded.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from finloom.errors import BadInput
from finloom.eval.results import load_results
from finloom.recipe import ReportSection
from finloom.report import plots
from finloom.report.model_card import write_model_card
from finloom.report.page import Page, table
from finloom.report.pas_sections import pas_sections
from finloom.report.prompt_sections import prompts_sections
from finloom.report.sections import (
    align_sections,
    data_sections,
    eval_sections,
    forgetting_sections,
    merge_sections,
    mix_search_sections,
    prefs_sections,
    reward_sections,
    summary,
    summary_section,
)
from finloom.stages import STAGE_NAMES, TRAINING_STAGES, RunContext, StageResult, read_manifest
from finloom.training import load_log_history


def _manifests(run_dir: Path) -> dict[str, dict]:
    manifests = {stage: read_manifest(run_dir, stage) for stage in STAGE_NAMES}
    manifests = {stage: m for stage, m in manifests.items() if m}
    if not manifests:
        raise BadInput(f"{run_dir}: no stage manifests found; is this a finloom run directory?")
    return manifests


def build_report(run_dir: Path, title: str | None = None) -> dict[str, Path]:
    """RUN/report.html, RUN/report.md and RUN/model_card.md, all from what the run recorded."""
    run_dir = Path(run_dir)
    manifests = _manifests(run_dir)
    page = Page(title or f"finloom run: {run_dir.name}",
                f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from the run's manifests.")
    results = load_results(run_dir)
    page.extend(summary_section(summary(manifests, results)))
    rows = [[stage, m.get("status"), m.get("wall_time_s"), m.get("peak_rss_mb")]
            for stage, m in manifests.items() if stage != "report"]
    page.add("Stages", table(["stage", "status", "wall time (s)", "peak RSS (MB)"], rows),
             plots.stage_timeline({s: m for s, m in manifests.items() if s != "report"}))
    page.extend(data_sections(manifests.get("data", {}).get("metrics", {})))
    page.extend(prompts_sections(manifests.get("prompts", {}).get("metrics", {}), run_dir / "prompts" / "decisions.jsonl"))
    if results:
        page.extend(eval_sections(results))
    page.extend(merge_sections(manifests.get("merge", {}).get("metrics", {}), results or {}))
    page.extend(prefs_sections(manifests.get("prefs", {}).get("metrics", {})))
    heldout = run_dir / "reward" / "heldout_rewards.jsonl"
    page.extend(reward_sections(manifests.get("reward", {}).get("metrics", {}),
                                [json.loads(line) for line in heldout.read_text(encoding="utf-8").splitlines()]
                                if heldout.exists() else []))
    categories = run_dir / "align" / "categories.jsonl"
    page.extend(align_sections(manifests.get("align", {}).get("metrics", {}),
                               [json.loads(line) for line in categories.read_text(encoding="utf-8").splitlines()]
                               if categories.exists() else [], load_log_history(run_dir / "align" / "log_history.json")))
    pas_rows = run_dir / "pas" / "eval.jsonl"
    page.extend(pas_sections(manifests.get("pas", {}).get("metrics", {}),
                             [json.loads(line) for line in pas_rows.read_text(encoding="utf-8").splitlines()]
                             if pas_rows.exists() else []))
    curves = plots.heldout_curves(run_dir)
    if curves:
        page.add("Held-out perplexity during continual pre-training", None, curves,
                 "Evaluated every pretrain.eval_every steps on held-out text: finance should fall while general stays "
                 "flat.")
    forgetting = manifests.get("forgetting", {}).get("metrics")
    if forgetting and forgetting.get("rows"):
        page.extend(forgetting_sections(forgetting))
    mix_search = run_dir / "mix_search" / "results.json"
    if mix_search.exists():
        page.extend(mix_search_sections(json.loads(mix_search.read_text(encoding="utf-8"))))
    trained = [s for s in TRAINING_STAGES if s in manifests]
    rows = []
    for stage in trained:
        metrics = manifests[stage].get("metrics", {})
        extra = {k: v for k, v in metrics.items() if k in ("eval_accuracy", "reward_accuracy", "reward_margin")}
        if metrics.get("token_utilisation"):  # SFT: real tokens per batch slot, packed and as unpacked batches would be
            extra.update({f"token utilisation {k}": f"{v:.0%}" for k, v in metrics["token_utilisation"].items()})
        rows.append([stage, metrics.get("train_steps"), metrics.get("final_loss"),
                     ", ".join(f"{k}={v}" for k, v in extra.items())])
    if rows:
        page.add("Training", table(["stage", "steps", "final loss", "stage metrics"], rows),
                 plots.loss_curves(run_dir, trained))
    paths = page.write(run_dir / "report.html", run_dir / "report.md")
    paths["model_card"] = write_model_card(run_dir, manifests, results)
    return paths


def build_comparison(run_dirs: list[Path], out_dir: Path) -> dict[str, Path]:
    """Side by side: every model of every run (RUN/model) on the benchmarks they share, and their stage costs."""
    merged, rows = {}, []
    for run_dir in map(Path, run_dirs):
        manifests = _manifests(run_dir)
        for model, results in load_results(run_dir).items():
            merged[f"{run_dir.name}/{model}"] = results
        rows.append([run_dir.name] + [manifests.get(stage, {}).get("wall_time_s") for stage in STAGE_NAMES[:-1]])
    if not merged:
        raise BadInput("--compare: none of the runs has evaluation results (run their eval stage first)")
    page = Page(f"finloom comparison: {', '.join(Path(r).name for r in run_dirs)}",
                f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.")
    page.add("Runs", table(["run"] + [f"{stage} (s)" for stage in STAGE_NAMES[:-1]], rows))
    page.extend(eval_sections(merged))
    out_dir.mkdir(parents=True, exist_ok=True)
    return page.write(out_dir / "compare.html", out_dir / "compare.md")


def run(section: ReportSection, ctx: RunContext) -> StageResult:
    paths = build_report(ctx.run_dir, section.title)
    return StageResult(outputs={name: ctx.relative(path) for name, path in paths.items()})
