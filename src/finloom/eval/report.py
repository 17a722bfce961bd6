"""The run report: ``RUN/report.html`` (self-contained, plots inline) and ``RUN/report.md``.

Everything is read back from manifests and stage artifacts, so ``finloom report DIR`` can rebuild
the report of any run, and the report shows exactly what the run recorded.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

from finloom.errors import BadInput
from finloom.eval import plots
from finloom.files import atomic_write_text
from finloom.recipe import STAGE_NAMES, ReportSection
from finloom.runner import RunContext, StageResult, read_manifest

TRAINING_STAGES = ("base", "pretrain", "sft", "reward", "align")


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
                         plots.funnel_plot(steps), ""))
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


def forgetting_sections(metrics: dict) -> list[tuple[str, tuple[str, str] | None, str | None, str]]:
    rows = metrics["rows"]
    table = [[r["variant"], r.get("finance_ppl"), r.get("general_ppl"), r.get("finance_ppl_change"),
              r.get("general_ppl_change"), r.get("finance_mcq"), r.get("general_mcq"), r.get("step_time_s")]
             for r in rows]
    sections = [("Forgetting experiment", _table(
        ["variant", "finance PPL", "general PPL", "finance PPL change", "general PPL change", "finance MCQ",
         "general MCQ", "step time (s)"], table), plots.forgetting_plot(rows),
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
         "finance alpha", "general alpha"], rows), plots.mix_search_plot(result), note)]


def eval_columns(results: dict) -> list[str]:
    """Every result key any model has, benchmarks first (in first-seen order), perplexities last."""
    keys: list[str] = []
    for per_model in results.values():
        keys += [k for k in per_model if k not in keys]
    return [k for k in keys if not k.endswith("_ppl")] + [k for k in keys if k.endswith("_ppl")]


def eval_sections(results: dict) -> list[tuple[str, tuple[str, str] | None, str | None, str]]:
    from finloom.eval.stage import headline

    columns = eval_columns(results)
    rows = [[model] + [headline(per_model).get(column) for column in columns] for model, per_model in results.items()]
    domains = {name: value.get("domain") for per_model in results.values() for name, value in per_model.items()
               if isinstance(value, dict) and value.get("domain") and not name.endswith("_gen")}
    sections = [("Evaluation by stage", _table(["model"] + columns, rows), plots.domain_accuracy(results, domains),
                 "Accuracy (MCQ by log-likelihood; _gen: answered by generation), usable rate (scenarios) and "
                 "held-out perplexity, every model on the same sets: finance gains should not cost general ability.")]
    chance_rows = [[model] + [per_model.get(c, {}).get("chance") for c in columns if c in domains]
                   for model, per_model in results.items()]
    if any(v is not None for row in chance_rows for v in row[1:]):
        sections.append(("Chance levels", _table(["model"] + [c for c in columns if c in domains], chance_rows), None,
                         "Random guessing on the same questions (multi-answer questions have many letter sets)."))
    ppl = plots.eval_plots(results, domains)
    if ppl:
        sections.append(("Perplexity and MCQ accuracy by stage", None, ppl, ""))
    for name in [c for c in columns if any(results[m].get(c, {}).get("by_task") for m in results)]:
        if any(len(results[m].get(name, {}).get("by_task", {})) > 1 for m in results):
            tasks = sorted({t for r in results.values() for t in r.get(name, {}).get("by_task", {})})
            rows = [[task] + [results[m].get(name, {}).get("by_task", {}).get(task) for m in results] for task in tasks]
            sections.append((f"{name} by certification", _table(["certification"] + list(results), rows),
                             plots.certification_bars(results, name), ""))
    for name in [c for c in columns if any("usable_rate" in results[m].get(c, {}) or
                                           "responded_rate" in results[m].get(c, {}) for m in results)]:
        rows = [[model, r.get("usable_rate"), r.get("pass_rate"), r.get("csr"), r.get("isr"), r.get("psr"),
                 r.get("judge_failures"), r.get("responded_rate"), r.get("judge", "")]
                for model, per_model in results.items() if (r := per_model.get(name))]
        sections.append((f"{name}: judged scenarios", _table(
            ["model", "usable rate", "pass rate", "CSR", "ISR", "PSR", "judge failures", "answered", "note"], rows),
            plots.scenario_radar(results, name),
            "Usable: weighted dimension score >= 3 (basic) or >= 4 (high-stakes) and no dimension at -1. Pass rate "
            "(= ISR): every checklist item met. Judge replies that never parsed are counted as failures."))
    return sections


def load_results(run_dir: Path) -> dict:
    import json

    path = Path(run_dir) / "eval" / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


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


class Page:
    """One report page, written twice: self-contained HTML (plots inline) and Markdown."""

    def __init__(self, title: str, subtitle: str):
        self.title = title
        self.subtitle = subtitle
        self.html: list[str] = []
        self.markdown: list[str] = [f"# {title}\n", f"{subtitle}\n"]

    def add(self, heading: str, table: tuple[str, str] | None = None, image: str | None = None, note: str = "") -> None:
        self.html.append(f"<section><h2>{html.escape(heading)}</h2>")
        self.markdown.append(f"\n## {heading}\n")
        if note:
            self.html.append(f"<p class='muted'>{html.escape(note)}</p>")
            self.markdown.append(f"{note}\n")
        if table:
            self.html.append(table[0])
            self.markdown.append(table[1])
        if image:
            self.html.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{image}'>")
        self.html.append("</section>")

    def extend(self, sections) -> None:
        for heading, table, image, note in sections:
            self.add(heading, table, image, note)

    def write(self, html_path: Path, md_path: Path) -> dict[str, Path]:
        page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><p class='muted'>{html.escape(self.subtitle)}</p>"
                + "".join(self.html) + "</body></html>")
        atomic_write_text(html_path, page)
        atomic_write_text(md_path, "".join(self.markdown))
        return {"html": html_path, "markdown": md_path}


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
    rows = [[stage, m.get("status"), m.get("wall_time_s"), m.get("peak_rss_mb")]
            for stage, m in manifests.items() if stage != "report"]
    page.add("Stages", _table(["stage", "status", "wall time (s)", "peak RSS (MB)"], rows),
             plots.stage_timeline({s: m for s, m in manifests.items() if s != "report"}))
    page.extend(data_sections(manifests.get("data", {}).get("metrics", {})))
    results = load_results(run_dir)
    if results:
        page.extend(eval_sections(results))
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
        import json

        page.extend(mix_search_sections(json.loads(mix_search.read_text(encoding="utf-8"))))
    trained = [s for s in TRAINING_STAGES if s in manifests]
    rows = []
    for stage in trained:
        metrics = manifests[stage].get("metrics", {})
        extra = {k: v for k, v in metrics.items() if k in ("eval_accuracy", "reward_accuracy", "reward_margin")}
        rows.append([stage, metrics.get("train_steps"), metrics.get("final_loss"),
                     ", ".join(f"{k}={v}" for k, v in extra.items())])
    if rows:
        page.add("Training", _table(["stage", "steps", "final loss", "stage metrics"], rows),
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
    page.add("Runs", _table(["run"] + [f"{stage} (s)" for stage in STAGE_NAMES[:-1]], rows))
    page.extend(eval_sections(merged))
    out_dir.mkdir(parents=True, exist_ok=True)
    return page.write(out_dir / "compare.html", out_dir / "compare.md")


def write_model_card(run_dir: Path, manifests: dict[str, dict], results: dict) -> Path:
    """A Markdown model card for the run's final model: lineage of data, training settings, evaluation."""
    from finloom.eval.stage import headline

    model_stages = [s for s in ("align", "sft", "pretrain", "base") if s in manifests]
    final = model_stages[0] if model_stages else None
    data = manifests.get("data", {})
    lines = [f"# Model card: {run_dir.name}" + (f" / {final}" if final else ""), ""]
    if final:
        lines += [f"Model directory: `{manifests[final]['outputs'].get('model')}` (Hugging Face format, safetensors), "
                  f"produced by the `{final}` stage. Start: "
                  f"`{manifests[final].get('config', {}).get('model', {})}`.", ""]
    if data:
        lines += ["## Training data", "", "| input | sha256 |", "|---|---|"]
        lines += [f"| {path} | {digest[:16]}… |" for path, digest in data.get("inputs", {}).get("files", {}).items()]
        funnel = data.get("metrics", {}).get("funnel", {})
        if funnel:
            lines += ["", f"Read {funnel.get('read')} documents, rejected {funnel.get('rejected')} malformed records, "
                          f"removed {sum(funnel.get('removed', {}).values())} "
                          f"({', '.join(f'{k} {v}' for k, v in funnel.get('removed', {}).items())}), kept "
                          f"{', '.join(f'{k} {v}' for k, v in funnel.get('kept', {}).items())}."]
        for name, mix in data.get("metrics", {}).get("mixes", {}).items():
            lines.append(f"Mix `{name}`: {mix['tokens']:,} tokens, shares "
                         f"{', '.join(f'{d} {v:.3f}' for d, v in mix['shares'].items())}.")
        lines.append("")
    lines += ["## Training", "", "| stage | steps | final loss | learning rate | batch | seq len | config sha256 |",
              "|---|---|---|---|---|---|---|"]
    for stage in TRAINING_STAGES:
        manifest = manifests.get(stage)
        if manifest:
            train = manifest.get("config", {}).get("section", {}).get("train", {})
            metrics = manifest.get("metrics", {})
            lines.append(f"| {stage} | {metrics.get('train_steps')} | {metrics.get('final_loss')} | "
                         f"{train.get('learning_rate')} | {train.get('batch_size')} | {train.get('seq_len')} | "
                         f"{manifest.get('config_hash', '')[:16]}… |")
    if results:
        columns = eval_columns(results)
        lines += ["", "## Evaluation", "", "| model | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for model, per_model in results.items():
            values = headline(per_model)
            lines.append(f"| {model} | " + " | ".join(_cell(values.get(c)) for c in columns) + " |")
    lines += ["", "Every number above is read from the run's manifests; see report.html for the full report."]
    path = run_dir / "model_card.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def run(section: ReportSection, ctx: RunContext) -> StageResult:
    paths = build_report(ctx.run_dir, section.title)
    return StageResult(outputs={name: ctx.relative(path) for name, path in paths.items()})
