"""The run report: ``RUN/report.html`` (self-contained, plots inline) and ``RUN/report.md``.

Everything is read back from manifests and stage artifacts, so ``finloom report DIR`` can rebuild
the report of any run, and the report shows exactly what the run recorded.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from finloom.errors import BadInput  # noqa: E402
from finloom.files import atomic_write_text  # noqa: E402
from finloom.recipe import STAGE_NAMES, ReportSection  # noqa: E402
from finloom.runner import RunContext, StageResult, read_manifest  # noqa: E402
from finloom.training import load_log_history  # noqa: E402

TRAINING_STAGES = ("base", "pretrain", "sft", "reward", "align")
EVAL_COLUMNS = (
    ("finance_mcq", "accuracy", "Finance MCQ acc"),
    ("general_mcq", "accuracy", "General MCQ acc"),
    ("finance_ppl", "perplexity", "Finance PPL"),
    ("general_ppl", "perplexity", "General PPL"),
)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _loss_curves(run_dir: Path, stages: list[str]) -> str | None:
    curves = {}
    for stage in stages:
        history = load_log_history(run_dir / stage / "log_history.json")
        points = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
        if points:
            curves[stage] = points
    if not curves:
        return None
    figure, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3), squeeze=False)
    for axis, (stage, points) in zip(axes[0], curves.items()):
        axis.plot([p[0] for p in points], [p[1] for p in points], color="#2563eb")
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def _eval_plots(results: dict) -> str | None:
    models = list(results)
    if not models:
        return None
    figure, (ppl_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label, color in (("finance_ppl", "finance", "#dc2626"), ("general_ppl", "general", "#2563eb")):
        values = [results[m].get(key, {}).get("perplexity") for m in models]
        if any(v is not None for v in values):
            ppl_axis.plot(models, values, marker="o", label=label, color=color)
    ppl_axis.set_title("Held-out perplexity by stage (lower is better)")
    ppl_axis.set_yscale("log")
    ppl_axis.legend()
    ppl_axis.grid(alpha=0.3)
    width = 0.38
    for offset, (key, label, color) in enumerate(
        (("finance_mcq", "finance MCQ", "#dc2626"), ("general_mcq", "general MCQ", "#2563eb"))
    ):
        values = [results[m].get(key, {}).get("accuracy") or 0 for m in models]
        positions = [i + (offset - 0.5) * width for i in range(len(models))]
        acc_axis.bar(positions, values, width, label=label, color=color)
        chance = [results[m].get(key, {}).get("chance") for m in models]
        if all(c is not None for c in chance):
            acc_axis.hlines(chance, [p - width / 2 for p in positions], [p + width / 2 for p in positions],
                            colors="black", linestyles="dashed", label="chance" if offset == 0 else None)
    acc_axis.set_xticks(range(len(models)), models)
    acc_axis.set_title("MCQ accuracy by stage")
    acc_axis.set_ylim(0, 1)
    acc_axis.legend()
    acc_axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return _png(figure)


def _funnel_plot(steps: list[dict]) -> str:
    labels = ["input"] + [step["step"] for step in steps]
    counts = [steps[0]["in"]] + [step["kept"] for step in steps]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(labels) + 1))
    axis.barh(labels[::-1], counts[::-1], color="#2563eb")
    for y, count in enumerate(counts[::-1]):
        axis.text(count, y, f" {count:,}", va="center", fontsize=8)
    axis.set_xlabel("documents remaining")
    axis.set_title("Documents remaining after each step")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return _png(figure)


def data_sections(metrics: dict) -> list[tuple[str, tuple[str, str] | None, str | None, str]]:
    """(heading, table, plot, note) for the data stage: funnel, steps, sources, mixes, classifiers."""
    sections = []
    funnel, tokens = metrics.get("funnel"), metrics.get("tokens", {})
    if funnel:
        rows = [["input records", funnel.get("input_records"), None], ["read", funnel["read"], None],
                ["rejected (malformed input)", funnel["rejected"], None]]
        rows += [[f"removed: {reason}", count, tokens.get("removed", {}).get(reason)]
                 for reason, count in funnel["removed"].items()]
        rows += [[f"kept: {domain}", count, tokens.get("kept", {}).get(domain)] for domain, count in funnel["kept"].items()]
        sections.append(("Data funnel", _table(["", "documents", "tokens"], rows), None,
                         "Every input record is read or rejected (rejects.jsonl); every document read is kept or "
                         "removed with its reason (removed/REASON.jsonl)."))
    steps = metrics.get("steps")
    if steps:
        rows = [[s["step"], s["in"], s["kept"], ", ".join(f"{k}={v}" for k, v in s["removed"].items()) or "—",
                 ", ".join(f"{k}={v}" for k, v in s.get("set_aside", {}).items()) or "—", s["chars_kept"]]
                for s in steps]
        sections.append(("Data funnel by step", _table(["step", "in", "kept", "removed (reason=count)",
                                                        "set aside", "characters kept"], rows),
                         _funnel_plot(steps), ""))
    sources = metrics.get("sources")
    if sources:
        by_source = tokens.get("by_source", {})
        rows = [[s["source"], s["kept"], ", ".join(f"{k}={v}" for k, v in s["removed"].items()) or "—",
                 by_source.get(s["source"], {}).get("kept"), by_source.get(s["source"], {}).get("removed")]
                for s in sources]
        sections.append(("Data by source", _table(["source", "kept", "removed (reason=count)", "tokens kept",
                                                   "tokens removed"], rows), None, ""))
    mixes = metrics.get("mixes")
    if mixes:
        rows = [[name, mix["tokens"], mix["blocks"], ", ".join(f"{d}={v:.3f}" for d, v in mix["shares"].items()),
                 ", ".join(f"{d}={v:.2f}" for d, v in mix["epochs"].items())] for name, mix in mixes.items()]
        sections.append(("Token mixes", _table(["mix", "tokens", "blocks", "realised share", "epochs of the data"],
                                               rows), None,
                         "Shares are by tokens; a domain with epochs above 1 is repeated, below 1 sub-sampled."))
    classifiers = metrics.get("classifiers")
    if classifiers:
        rows = [[name, ", ".join(values.get("labels", [])), values.get("n_train"),
                 values.get("heldout", {}).get("accuracy"), values.get("heldout", {}).get("macro_f1")]
                for name, values in classifiers.items()]
        sections.append(("Data classifiers", _table(["classifier", "labels", "examples", "held-out accuracy",
                                                     "macro F1"], rows), None,
                         "Trained in the data stage from the labelled files the recipe names."))
    return sections


def _heldout_curves(run_dir: Path) -> str | None:
    history = load_log_history(run_dir / "pretrain" / "log_history.json")
    series = {domain: [(e["step"], e[f"eval_{domain}_ppl"]) for e in history if f"eval_{domain}_ppl" in e]
              for domain in ("finance", "general")}
    if not any(series.values()):
        return None
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for domain, color in (("finance", "#dc2626"), ("general", "#2563eb")):
        if series[domain]:
            axis.plot([p[0] for p in series[domain]], [p[1] for p in series[domain]], marker="o", color=color,
                      label=f"{domain} held-out PPL")
    axis.set_xlabel("pretrain step")
    axis.set_ylabel("perplexity")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def _forgetting_plot(rows: list[dict]) -> str | None:
    start = next((r for r in rows if r["variant"] == "start"), None)
    points = [r for r in rows if r["variant"] != "start" and r.get("finance_ppl") and r.get("general_ppl")]
    if not start or not points:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for row in points:
        finance_gain = 1 - row["finance_ppl"] / start["finance_ppl"]
        general_change = row["general_ppl"] / start["general_ppl"] - 1
        axis.scatter(general_change * 100, finance_gain * 100, s=60)
        axis.annotate(row["variant"], (general_change * 100, finance_gain * 100), fontsize=8,
                      xytext=(4, 4), textcoords="offset points")
    axis.axvline(0, color="grey", linewidth=0.8)
    axis.set_xlabel("general perplexity change vs start (%)  - lower is better")
    axis.set_ylabel("finance perplexity reduction vs start (%)  - higher is better")
    axis.set_title("Forgetting: finance learned vs general lost")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def forgetting_sections(metrics: dict) -> list[tuple[str, tuple[str, str] | None, str | None, str]]:
    rows = metrics["rows"]
    table = [[r["variant"], r.get("finance_ppl"), r.get("general_ppl"), r.get("finance_ppl_change"),
              r.get("general_ppl_change"), r.get("finance_mcq"), r.get("general_mcq"), r.get("step_time_s")]
             for r in rows]
    sections = [("Forgetting experiment", _table(
        ["variant", "finance PPL", "general PPL", "finance PPL change", "general PPL change", "finance MCQ",
         "general MCQ", "step time (s)"], table), _forgetting_plot(rows),
        "Every variant starts from the same model at the same token budget. Self-constraint aims to keep general "
        "perplexity at the start model's while learning finance like finance-only training.")]
    checks = metrics.get("verdict", {})
    if checks and "note" not in checks:
        rows = [[name, c["general_ppl_change"], c["general_within_tolerance"], c["finance_gain_share"],
                 c["finance_gain_enough"], c.get("beats_replay"), c["all_met"]] for name, c in checks.items()]
        sections.append(("Forgetting targets", _table(
            ["variant", "general PPL change", "within tolerance", "share of finance-only gain", "gain enough",
             "beats replay", "all targets met"], rows), None, ""))
    return sections


def _mix_search_plot(result: dict) -> str:
    from finloom.pretrain.mix_search import predict

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, domain in zip(axes, ("finance", "general")):
        for ratio, curve in result["curves"].items():
            (line,) = axis.plot(curve["tokens"], curve[f"{domain}_loss"], "o", label=f"finance share {ratio}")
            fit = result["fits"][ratio][domain]
            grid = [curve["tokens"][0] * (result["target_tokens"] / curve["tokens"][0]) ** (i / 40) for i in range(41)]
            axis.plot(grid, [predict(fit, t) for t in grid], "-", color=line.get_color(), alpha=0.6)
        axis.axhline(result["start"][f"{domain}_loss"], color="black", linestyle=":", label="start model")
        axis.axvline(result["target_tokens"], color="grey", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("tokens")
        axis.set_ylabel(f"held-out {domain} loss")
        axis.set_title(f"{domain}: points and L(D) = E + A D^-alpha")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def mix_search_sections(result: dict) -> list[tuple[str, tuple[str, str] | None, str | None, str]]:
    rows = [[ratio, p["finance_loss"], p["general_loss"], p.get("finance_mcq"),
             result["fits"][ratio]["finance"]["alpha"], result["fits"][ratio]["general"]["alpha"]]
            for ratio, p in result["predictions"].items()]
    choice = result["recommendation"]
    note = (f"Short runs of {result['steps']} steps per finance share, fitted and extrapolated to "
            f"{result['target_tokens']:,} tokens. Recommended finance share: {choice['ratio']}"
            + ("" if choice["within_general_budget"] else f" ({choice['note']})")
            + f"; general-loss budget {result['general_budget']:.0%} over the start model.")
    return [("Mix search (scaling laws)", _table(
        ["finance share", "predicted finance loss", "predicted general loss", "predicted finance MCQ",
         "finance alpha", "general alpha"], rows), _mix_search_plot(result), note)]


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list]) -> tuple[str, str]:
    """The same table as HTML and as Markdown."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    markdown = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    markdown += "".join("| " + " | ".join(_cell(c) for c in row) + " |\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", markdown


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:auto;padding:1rem;color:#111}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}th{background:#f3f4f6}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
.muted{color:#666;font-size:.85rem}
"""


def build_report(run_dir: Path, title: str | None = None) -> dict[str, Path]:
    run_dir = Path(run_dir)
    manifests = {stage: read_manifest(run_dir, stage) for stage in STAGE_NAMES}
    manifests = {stage: m for stage, m in manifests.items() if m}
    if not manifests:
        raise BadInput(f"{run_dir}: no stage manifests found; is this a finloom run directory?")
    title = title or f"finloom run: {run_dir.name}"
    sections_html: list[str] = []
    sections_md: list[str] = [f"# {title}\n", f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n"]

    def add(heading: str, table: tuple[str, str] | None = None, image: str | None = None, note: str = "") -> None:
        sections_html.append(f"<h2>{html.escape(heading)}</h2>")
        sections_md.append(f"\n## {heading}\n")
        if note:
            sections_html.append(f"<p class='muted'>{html.escape(note)}</p>")
            sections_md.append(f"{note}\n")
        if table:
            sections_html.append(table[0])
            sections_md.append(table[1])
        if image:
            sections_html.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{image}'>")

    rows = [[stage, m.get("status"), m.get("wall_time_s"), m.get("peak_rss_mb")]
            for stage, m in manifests.items() if stage != "report"]
    add("Stages", _table(["stage", "status", "wall time (s)", "peak RSS (MB)"], rows))

    data_metrics = manifests.get("data", {}).get("metrics", {})
    for heading, table, image, note in data_sections(data_metrics):
        add(heading, table, image, note)

    eval_manifest = manifests.get("eval")
    results = {}
    if eval_manifest and (run_dir / "eval" / "results.json").exists():
        import json

        results = json.loads((run_dir / "eval" / "results.json").read_text(encoding="utf-8"))
        rows = [[model] + [results[model].get(key, {}).get(field) for key, field, _ in EVAL_COLUMNS] for model in results]
        add(
            "Evaluation by stage",
            _table(["model"] + [label for _, _, label in EVAL_COLUMNS], rows),
            _eval_plots(results),
            "Each stage's model on the same held-out sets: finance gains should not cost general ability. "
            "Dashed lines in the accuracy chart mark random guessing.",
        )
        tasks = sorted({t for r in results.values() for t in r.get("finance_mcq", {}).get("by_task", {})})
        if tasks:
            rows = [[task] + [results[m]["finance_mcq"]["by_task"].get(task) for m in results] for task in tasks]
            add("Finance MCQ accuracy by certification", _table(["certification"] + list(results), rows))

    curves = _heldout_curves(run_dir)
    if curves:
        add("Held-out perplexity during continual pre-training", None, curves,
            "Evaluated every pretrain.eval_every steps on held-out text: finance should fall while general stays flat.")

    forgetting = manifests.get("forgetting", {}).get("metrics")
    if forgetting and forgetting.get("rows"):
        for heading, table, image, note in forgetting_sections(forgetting):
            add(heading, table, image, note)

    mix_search = run_dir / "mix_search" / "results.json"
    if mix_search.exists():
        import json

        for heading, table, image, note in mix_search_sections(json.loads(mix_search.read_text(encoding="utf-8"))):
            add(heading, table, image, note)

    trained = [s for s in TRAINING_STAGES if s in manifests]
    rows = []
    for stage in trained:
        metrics = manifests[stage].get("metrics", {})
        extra = {k: v for k, v in metrics.items() if k in ("eval_accuracy", "reward_accuracy", "reward_margin")}
        rows.append([stage, metrics.get("train_steps"), metrics.get("final_loss"), ", ".join(f"{k}={v}" for k, v in extra.items())])
    if rows:
        add("Training", _table(["stage", "steps", "final loss", "stage metrics"], rows), _loss_curves(run_dir, trained))

    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='muted'>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from the run's manifests.</p>"
        + "".join(sections_html)
        + "</body></html>"
    )
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    atomic_write_text(html_path, page)
    atomic_write_text(md_path, "".join(sections_md))
    return {"html": html_path, "markdown": md_path}


def run(section: ReportSection, ctx: RunContext) -> StageResult:
    paths = build_report(ctx.run_dir, section.title)
    return StageResult(outputs={name: ctx.relative(path) for name, path in paths.items()})
