"""The ``finloom`` command: one typer app whose subcommands mirror the stages.

Exit codes: 0 ok, 2 bad input (recipe, data, arguments), 1 internal failure, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from finloom.errors import BadInput
from finloom.recipe import load_recipe, recipe_to_dict
from finloom.stages import STAGE_NAMES, STAGES, enabled_stages

app = typer.Typer(
    help="finloom: turn a general base LLM into a finance chat model, end to end, and measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipe_app = typer.Typer(help="Check and inspect recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
data_app = typer.Typer(help="Look into the data stage of a run; train its classifiers.", no_args_is_help=True)
app.add_typer(data_app, name="data")
pretrain_app = typer.Typer(help="Continual pre-training tools: the reference store, the mix search.", no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")
experiment_app = typer.Typer(help="Experiments over a run's models.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
pas_app = typer.Typer(help="PAS, prompt augmentation: build the PAS model, measure it with vs without.",
                      no_args_is_help=True)
app.add_typer(pas_app, name="pas")


@experiment_app.command("forgetting")
def experiment_forgetting(
    run_dir: RunDirOpt,
    force: Annotated[bool, typer.Option(help="Re-run every variant from scratch.")] = False,
) -> None:
    """CPT variants (finance-only CE, replay CE, self-constraint full / top-500) at one token budget, each
    evaluated like the eval stage; writes RUN/forgetting/results.json and rebuilds the report.

    The run's data, base/pretrain and eval stages must have completed. Variants and targets come from
    the recipe's forgetting section (enabled here even if the recipe leaves it out).
    """
    from finloom.report.stage import build_report

    _study_runner(run_dir, "forgetting", {}).run(only="forgetting", force=force)
    _console().print(f"report: {build_report(run_dir)['html']}")


def _study_runner(run_dir: Path, stage: str, overrides: dict):
    """The run's runner with the study's section switched on and ``overrides`` applied (named in errors)."""
    from pydantic import ValidationError

    from finloom.recipe import format_validation_error
    from finloom.runner import Runner

    runner = Runner.from_run_dir(run_dir)
    section = runner.recipe.section(stage)
    try:
        section = type(section).model_validate({**section.model_dump(), **overrides, "enabled": True})
    except ValidationError as error:
        raise BadInput("\n".join(f"{stage}.{line}" for line in format_validation_error(error).splitlines())) from None
    runner.recipe = runner.recipe.model_copy(update={stage: section})
    return runner

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
RunDirOpt = Annotated[Path, typer.Option("--run-dir", "-r", help="Run directory.")]


def _console():
    from finloom.progress import console

    return console


@app.command()
def run(
    recipe: RecipeArg,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", "-r", help="Default: the recipe's run_dir or runs/<name>.")] = None,
    only: Annotated[str | None, typer.Option(help=f"Run only this stage ({', '.join(STAGE_NAMES)}).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Run this stage and every later one.")] = None,
    force: Annotated[bool, typer.Option(help="Re-run the selected stages from scratch even if up to date.")] = False,
) -> None:
    """Run a recipe: every enabled stage, skipping those whose config and inputs are unchanged.

    An interrupted stage resumes from its last checkpoint. Stages before --from / --only must
    have completed already.
    """
    from finloom.runner import Runner, default_run_dir

    loaded = load_recipe(recipe)
    target = run_dir or default_run_dir(loaded)
    states = Runner(loaded, target).run(only=only, start=start, force=force)
    _console().print(f"[bold green]run complete[/bold green]: {target}  ({', '.join(f'{k}={v}' for k, v in states.items())})")
    if (target / "report.html").exists():
        _console().print(f"report: {target / 'report.html'}")


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="Stage name: " + "; ".join(f"{s.name} ({s.summary})" for s in STAGES.values()),
                                        show_default=False)],
    run_dir: RunDirOpt,
    force: Annotated[bool, typer.Option(help="Re-run from scratch even if up to date.")] = False,
) -> None:
    """Run one stage of an existing run directory (its upstream stages must have completed)."""
    from finloom.runner import Runner

    if name not in STAGES:
        raise BadInput(f"stage {name}: no such stage (stages: {', '.join(STAGE_NAMES)})")
    runner = Runner.from_run_dir(run_dir)
    if name not in enabled_stages(runner.recipe):
        raise BadInput(f"stage {name}: not a stage of this run's recipe (it has: {', '.join(enabled_stages(runner.recipe))})")
    runner.run(only=name, force=force)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Each stage's state, key metrics, wall time and peak memory."""
    from finloom.runner import stage_status

    rows = stage_status(run_dir)
    if not rows:
        raise BadInput(f"{run_dir}: no stages have run here")
    table = Table(title=str(run_dir))
    for column in ("stage", "status", "time (s)", "peak RSS (MB)", "key metrics"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["stage"], row["status"], str(row["wall_time_s"] or "—"), str(row["peak_rss_mb"] or "—"),
                      _key_metrics(row["stage"], row["metrics"]))
    _console().print(table)


def _key_metrics(stage: str, metrics: dict) -> str:
    """The catalogue's key metrics of the stage, the data funnel, and eval's headline numbers per model."""
    parts = [f"{k}={metrics[k]}" for k in STAGES[stage].key_metrics if metrics.get(k) is not None]
    if "funnel" in metrics:
        funnel = metrics["funnel"]
        parts.append(f"read={funnel['read']} kept={sum(funnel['kept'].values())} rejected={funnel['rejected']}")
    if "summary" in metrics:
        for model, values in metrics["summary"].items():
            parts.append(f"{model}: " + " ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(parts) or "—"


@recipe_app.command("validate")
def recipe_validate(recipe: RecipeArg) -> None:
    """Validate a recipe (schema, data files, a local model.hf and its chat template); exit 2 naming every bad field."""
    from finloom.llm.chat_template import check_recipe_template

    loaded = load_recipe(recipe)
    check_recipe_template(loaded)
    _console().print(f"[green]ok[/green]: {recipe} ({', '.join(enabled_stages(loaded))})")


@recipe_app.command("show")
def recipe_show(recipe: RecipeArg) -> None:
    """Print the fully resolved recipe, defaults filled in."""
    loaded = load_recipe(recipe, check_files=False)
    typer.echo(yaml.safe_dump(recipe_to_dict(loaded), sort_keys=False, allow_unicode=True))


@data_app.command("inspect")
def data_inspect(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    samples: Annotated[int, typer.Option(help="Documents shown per group.")] = 3,
    reason: Annotated[str | None, typer.Option(help="Show only documents removed for this reason.")] = None,
    chars: Annotated[int, typer.Option(help="Characters shown per document.")] = 300,
) -> None:
    """Samples of kept and removed documents, per removal reason, and the reject reasons."""
    from rich.panel import Panel

    from finloom.data.inspect import samples as collect

    for group, records in collect(run_dir, samples, reason).items():
        _console().rule(group)
        for record in records:
            if group == "rejected":
                _console().print(f"{record['count']} × {record['reason']}", markup=False)
            else:  # a document a step emptied has no "text" (datatrove's writer leaves out empty fields)
                text = record.get("text", "")
                body = text[:chars] + ("…" if len(text) > chars else "")
                _console().print(Panel(body, title=str(record.get("id", "")), title_align="left"), markup=False)


@data_app.command("train-classifier")
def data_train_classifier(
    labels: Annotated[Path, typer.Argument(help="Labelled JSONL or Parquet: a text field and a label field per record.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the classifier to.")],
    label_field: Annotated[str, typer.Option(help="Field holding the label (e.g. label, subdomain).")] = "label",
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    holdout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share held out (stratified) to measure accuracy.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split and the batch order.")] = 0,
) -> None:
    """Train a fast quality or domain classifier (hashed n-grams + logistic regression, seconds on CPU).

    Point a recipe's data.quality_classifier.model or data.domain_classifier.model at --out.
    """
    from finloom.data.classifier import train_classifier
    from finloom.files import read_records

    if not labels.is_file():
        raise BadInput(f"labels file not found: {labels}")
    rejects: list[dict] = []
    records = read_records(labels, (text_field,), rejects)
    metrics = train_classifier(records, label_field, out, text_field=text_field, seed=seed, holdout=holdout)
    _console().print(f"{out}: {metrics['n_train']} examples, {len(rejects)} malformed lines skipped")
    table = Table()
    for column in ("label", "examples", "held-out precision", "recall", "F1"):
        table.add_column(column)
    per_label = metrics.get("heldout", {}).get("per_label", {})
    for label in metrics["labels"]:
        scores = per_label.get(label, {})
        table.add_row(label, str(metrics["label_counts"][label]), *(str(scores.get(k, "—")) for k in ("precision", "recall", "f1")))
    _console().print(table)
    if "heldout" in metrics:
        _console().print(f"held-out accuracy {metrics['heldout']['accuracy']}, macro F1 {metrics['heldout']['macro_f1']}")


@pretrain_app.command("precompute-ref")
def pretrain_precompute_ref(
    run_dir: RunDirOpt,
    batch_size: Annotated[int, typer.Option(help="Blocks per forward pass.")] = 8,
) -> None:
    """Run the frozen start model once over the pretrain mix and store its top-k log-probs (pretrain.objective.kl_top_k).

    With pretrain.objective.reference: precomputed the pretrain stage then trains holding one model.
    The data stage (and base, for scratch models) must have completed in RUN.
    """
    from finloom.pretrain.stage import precompute_for_run
    from finloom.runner import Runner

    runner = Runner.from_run_dir(run_dir)
    folder = precompute_for_run(runner.run_dir, runner.recipe, batch_size)
    size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    _console().print(f"reference store: {folder} ({size:.1f} MB)")


@pretrain_app.command("mix-search")
def pretrain_mix_search(
    run_dir: RunDirOpt,
    ratios: Annotated[list[float] | None, typer.Option("--ratio", help="A finance share to try (repeat the option); "
                                                                        "default: the recipe's mix_search.ratios.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps of each short run.")] = None,
    eval_points: Annotated[int | None, typer.Option(help="Held-out evaluations per run (points of each loss curve).")] = None,
    general_budget: Annotated[float | None, typer.Option(help="Allowed relative rise of general loss over the start "
                                                              "model.")] = None,
    target_tokens: Annotated[int | None, typer.Option(help="Budget to extrapolate to; default: the pretrain stage's.")] = None,
    mcq_items: Annotated[int | None, typer.Option(help="Finance MCQ items scored per run (metric scaling law).")] = None,
    apply: Annotated[Path | None, typer.Option(help="Write the recommended ratio into this recipe (old file kept as .bak).")] = None,
) -> None:
    """Pick the finance share of the CPT mix by loss and metric scaling laws fitted on short runs.

    Runs the run's mix_search stage (settings from the recipe's mix_search section, overridden by the options;
    defaults: ratios 0.1 0.2 0.3 0.5, 200 steps, 5 points, a 2% budget, 200 MCQ items). Writes
    RUN/mix_search/results.json (points, fits, predictions, recommendation); the report shows them.
    """
    import json

    from finloom.experiments.mix_search import apply_ratio

    options = {"ratios": ratios, "steps": steps, "eval_points": eval_points, "general_budget": general_budget,
               "target_tokens": target_tokens, "mcq_items": mcq_items}
    runner = _study_runner(run_dir, "mix_search", {k: v for k, v in options.items() if v is not None})
    runner.run(only="mix_search")
    result = json.loads((runner.run_dir / "mix_search" / "results.json").read_text(encoding="utf-8"))
    table = Table(title=f"mix search at {result['target_tokens']:,} tokens (start general loss "
                        f"{result['start']['general_loss']:.4f})")
    for column in ("finance share", "predicted finance loss", "predicted general loss", "predicted finance MCQ"):
        table.add_column(column)
    for ratio, prediction in result["predictions"].items():
        table.add_row(ratio, f"{prediction['finance_loss']:.4f}", f"{prediction['general_loss']:.4f}",
                      f"{prediction['finance_mcq']:.3f}" if "finance_mcq" in prediction else "—")
    _console().print(table)
    choice = result["recommendation"]
    _console().print(f"recommended finance share: {choice['ratio']}" + ("" if choice["within_general_budget"]
                                                                       else f" ({choice['note']})"))
    if apply:
        apply_ratio(apply, choice["ratio"])
        _console().print(f"wrote data.mix.mixes.pretrain.shares into {apply} (previous version: {apply}.bak)")


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help="A local model directory, or an OpenAI-compatible base URL (http...).")],
    suite: Annotated[str, typer.Option(help="finance, general or all: which of the benchmarks to run.")] = "all",
    recipe: Annotated[Path | None, typer.Option(help="Take benchmarks, endpoints' judge (teacher) and limits from "
                                                     "this recipe's eval section; default: the bundled starter sets.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: evals/<model name>).")] = None,
    chat: Annotated[bool, typer.Option(help="Also answer by generation (chat models); URLs are always chat.")] = False,
    max_items: Annotated[int | None, typer.Option(help="At most this many items per benchmark.")] = None,
    api_model: Annotated[str, typer.Option(help="Model name to request from the endpoint.")] = "default",
    pas: Annotated[Path | None, typer.Option(help="A PAS model (a run's pas/model): its complement is appended to "
                                                  "every scenario prompt; the judge still sees the original.")] = None,
) -> None:
    """Evaluate one model on finloom's benchmarks (through lm-evaluation-harness) and print the results.

    Writes OUT/results.json, per-question files OUT/<model>/<benchmark>.jsonl and the records that could not be
    read as items, with their reasons, to OUT/rejects.jsonl. Exit 2 when a benchmark has no usable item.
    """
    from finloom.eval.evaluator import Evaluator
    from finloom.eval.results import headline
    from finloom.files import atomic_write_json, atomic_write_jsonl
    from finloom.logs import quiet_libraries
    from finloom.recipe import DEFAULT_EVAL_RECIPE, EndpointSpec, model_dir_problems
    from finloom.stages import resolve_teacher

    quiet_libraries()
    if suite not in ("finance", "general", "all"):
        raise BadInput(f"--suite {suite}: choose finance, general or all")
    loaded = load_recipe(recipe or DEFAULT_EVAL_RECIPE)
    section = loaded.eval.model_copy(update={"max_items": max_items or loaded.eval.max_items})
    names = {b.name for b in section.benchmarks if suite == "all" or b.domain == suite}
    if not names:
        raise BadInput(f"--suite {suite}: the recipe's eval section has no {suite} benchmarks")
    remote = model.startswith(("http://", "https://"))
    resolved = Path(model).resolve()
    label = "endpoint" if remote else (resolved.parent.name if resolved.name == "model" else resolved.name)
    problems = [] if remote else model_dir_problems(Path(model), bool(loaded.model and loaded.model.allow_pickle))
    if problems:
        raise BadInput("\n".join(f"--model: {problem}" for problem in problems))
    label += "+pas" if pas else ""
    target = out or Path("evals") / label
    augmenter = _augmenter(pas, loaded) if pas else None
    evaluator = Evaluator(section, target / "work", loaded.resolve, seed=loaded.seed, loading=loaded.model,
                          judge=resolve_teacher(loaded, None), names=names, pas=augmenter)
    atomic_write_jsonl(target / "rejects.jsonl", evaluator.rejects)
    for benchmark, reasons in evaluator.reject_counts().items():
        _console().print(f"{benchmark}: {sum(reasons.values())} records rejected ("
                         + "; ".join(f"{n} x {reason}" for reason, n in reasons.items())
                         + f"), see {target / 'rejects.jsonl'}", markup=False, highlight=False)
    if remote:
        results = evaluator.run_endpoint(EndpointSpec(name=label, base_url=model, model=api_model), target / label,
                                         field="--model")
    else:
        results = evaluator.run_local(label, model, chat, target / label)
    atomic_write_json(target / "results.json", {label: results})
    table = Table(title=f"{model} ({suite})")
    for column in ("benchmark", "score", "items"):
        table.add_column(column)
    for name, value in headline(results).items():
        table.add_row(name, str(value), str(results[name].get("items", "—")))
    _console().print(table)
    _console().print(f"results: {target / 'results.json'}")


def _augmenter(pas: Path, loaded):
    from finloom.pas.augment import Augmenter
    from finloom.recipe import model_dir_problems

    problems = model_dir_problems(pas, bool(loaded.model and loaded.model.allow_pickle))
    if problems:
        raise BadInput("\n".join(f"--pas: {problem}" for problem in problems))
    return Augmenter(pas, loading=loaded.model)


def _pas_table(metrics: dict, title: str) -> Table:
    table = Table(title=title)
    for column in ("", "without PAS", "with PAS"):
        table.add_column(column)
    for label, key in (("rule-checked pass rate", "rule_pass_rate"), ("judged usable rate", "usable_rate"),
                       ("judge failures", "judge_failures")):
        if key in metrics["without"]:
            table.add_row(label, str(metrics["without"][key]), str(metrics["with"][key]))
    table.add_row("pairwise win rate (with)", "", str(metrics.get("win_rate")))
    table.add_row("complements passing the rules", "", str(metrics["rules_pass_rate"]))
    table.add_row("... and the whole critique", "", str(metrics["critique_pass_rate"]))
    return table


@pas_app.command("build")
def pas_build(
    recipe: RecipeArg,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", "-r", help="Default: the recipe's run_dir or runs/<name>.")] = None,
    force: Annotated[bool, typer.Option(help="Start over instead of resuming from the stage's caches.")] = False,
) -> None:
    """Run the recipe's pas stage: complements written and critiqued by the teacher, the PAS model trained on them,
    the scenarios answered with vs without it. The stages it reads must have completed in the run directory."""
    from finloom.runner import Runner, default_run_dir
    from finloom.stages import read_manifest

    loaded = load_recipe(recipe)
    if not loaded.pas.enabled:
        raise BadInput(f"pas: {recipe} has no pas section")
    target = run_dir or default_run_dir(loaded)
    Runner(loaded, target).run(only="pas", force=force)
    metrics = read_manifest(target, "pas")["metrics"]
    _console().print(f"{metrics['pairs']} training pairs ({metrics['pairs_by_origin']}); PAS model: {target / 'pas' / 'model'}")
    if "eval" in metrics:
        _console().print(_pas_table(metrics["eval"], "scenarios with vs without PAS"))


@pas_app.command("eval")
def pas_eval(
    model: Annotated[Path, typer.Option(help="The model that answers (a chat model directory).")],
    pas: Annotated[Path, typer.Option(help="The PAS model (a run's pas/model).")],
    recipe: Annotated[Path | None, typer.Option(help="Take pas.eval (scenario files, limits), pas.critique and the "
                                                     "judge (teacher) from this recipe; default: the bundled scenarios, "
                                                     "rules only, no judge.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("evals/pas"),
    max_items: Annotated[int | None, typer.Option(min=1, help="At most this many scenarios.")] = None,
) -> None:
    """Answer the scenario suite with MODEL twice, with and without the complement the PAS model writes: rule-checked
    pass rate, the judge's usable rate and pairwise win rate, and the critique pass rate of the complements. Writes
    OUT/eval.jsonl (both answers per scenario) and OUT/results.json."""
    import contextlib

    from finloom.files import atomic_write_json, atomic_write_jsonl
    from finloom.llm.client import LLMClient
    from finloom.logs import quiet_libraries
    from finloom.pas.evaluate import evaluate_pas
    from finloom.recipe import DEFAULT_EVAL_RECIPE, model_dir_problems
    from finloom.stages import resolve_teacher

    quiet_libraries()
    loaded = load_recipe(recipe or DEFAULT_EVAL_RECIPE)
    problems = model_dir_problems(model, bool(loaded.model and loaded.model.allow_pickle))
    if problems:
        raise BadInput("\n".join(f"--model: {problem}" for problem in problems))
    settings = loaded.pas.eval.model_copy(update={"max_items": max_items or loaded.pas.eval.max_items})
    teacher = resolve_teacher(loaded, None)
    with LLMClient(teacher, "teacher") if teacher else contextlib.nullcontext() as judge:
        rows, metrics = evaluate_pas(model, _augmenter(pas, loaded), settings, loaded.pas.critique,
                                     loaded.eval.scenarios, loaded.resolve, judge, loaded.model)
    atomic_write_jsonl(out / "eval.jsonl", rows)
    atomic_write_json(out / "results.json", {"model": str(model), "pas": str(pas), **metrics})
    _console().print(_pas_table(metrics, f"{model}: scenarios with vs without PAS"))
    _console().print(f"results: {out / 'results.json'}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    compare: Annotated[list[Path] | None, typer.Option(help="Other runs to put side by side with RUN_DIR (repeat).")] = None,
    out: Annotated[Path, typer.Option(help="Where the comparison page goes (with --compare).")] = Path("."),
) -> None:
    """(Re)build RUN/report.html, report.md and model_card.md; with --compare, OUT/compare.html of several runs."""
    from finloom.report.stage import build_comparison, build_report

    if compare:
        paths = build_comparison([run_dir, *compare], out)
        _console().print(f"comparison: {paths['html']}")
        return
    paths = build_report(run_dir)
    _console().print(f"report: {paths['html']}  model card: {paths['model_card']}")


@app.command()
def merge(
    models: Annotated[list[Path], typer.Argument(help="Two or more model directories (safetensors) to merge.",
                                                 show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the merged model to.")],
    method: Annotated[str, typer.Option(help="model_stock (needs --base), linear, or task_arithmetic (needs --base).")]
    = "model_stock",
    base: Annotated[Path | None, typer.Option(help="The model the inputs were fine-tuned from.")] = None,
    weight: Annotated[list[float] | None, typer.Option(help="One weight per model, in order (repeat); "
                                                             "default 1/N each.")] = None,
) -> None:
    """Merge fine-tuned models of one base into one model directory, tensor by tensor (mergekit)."""
    from finloom.recipe import MERGE_METHODS
    from finloom.sft.merge import merge_models

    if method not in MERGE_METHODS:
        raise BadInput(f"--method: {method!r} is not one of {', '.join(MERGE_METHODS)}")
    if weight and len(weight) != len(models):
        raise BadInput(f"--weight: {len(weight)} given for {len(models)} models")
    merge_models(method, models, out, base, weight)
    _console().print(f"merged model: {out}")


@app.command()
def serve(
    path: Annotated[Path | None, typer.Argument(
        help="A model directory (any stage's model, or a reward model), or a run directory: then every completed "
             "chat stage's model (sft, merge, align), named by stage, the newest the default. Not with --upstream.",
        show_default=False)] = None,
    upstream: Annotated[str | None, typer.Option(
        help="Forward generation to the OpenAI-compatible server at this base URL instead of loading a model, e.g. "
             "http://127.0.0.1:8001/v1 after `vllm serve RUN/align/model --port 8001` on a GPU; no PATH then "
             "(PAS comes with --pas RUN/pas/model and runs here). This server still validates (400s), admits "
             "(--max-concurrency, --max-queue), times out, runs PAS, logs, counts usage (the upstream's) and serves "
             "the chat page; /v1/models lists the upstream's models, /health says whether it answers, and a down "
             "or failing upstream is a 502.", show_default=False)] = None,
    host: Annotated[str, typer.Option(
        help="Interface to bind. The default answers this machine only; the server has no authentication.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    model_name: Annotated[str | None, typer.Option(
        help="Name /v1/models reports for a model directory (default RUN/STAGE or the directory's name); with "
             "--upstream, the one name served, for the upstream's default model (default: the upstream's names).")]
    = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code shipped with the checkpoint.")] = False,
    max_concurrency: Annotated[int, typer.Option(
        min=1, help="Requests generating at once; requests on one model take turns on it.")] = 4,
    max_queue: Annotated[int, typer.Option(
        min=0, help="Requests waiting for a slot; one more is answered 429 (retry later).")] = 32,
    request_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds from arrival to the end of the answer, queueing included: past it 504, or a "
                        "stream ends with finish_reason \"timeout\".")] = 300.0,
    max_loaded: Annotated[int, typer.Option(
        min=1, help="Models of a run kept in memory; the least recently used is unloaded to load another.")] = 2,
    log_file: Annotated[Path | None, typer.Option(
        help="Append the request log (one JSON line per request) here instead of stderr.")] = None,
    log_prompts: Annotated[bool, typer.Option(
        help="Put prompt and completion texts in the request log (off: only ids, counts and timings).")] = False,
    pas: Annotated[Path | None, typer.Option(
        help="A PAS model (a run's pas/model): each user turn gets its complement appended before the model answers, "
             "returned as the response's 'pas'; a request opts out with \"pas\": false. Serving a run directory "
             "whose pas stage completed uses its PAS model unless --no-pas.")] = None,
    pas_category: Annotated[list[str] | None, typer.Option(
        help="Augment only prompts of this category (repeat; a finance scenario family or an ability, as the pas "
             "stage's classifiers tag them); default: the pas stage's pas.categories, else all.")] = None,
    no_pas: Annotated[bool, typer.Option("--no-pas", help="Serve a run directory without its PAS model.")] = False,
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions and /v1/completions with streaming,
    /v1/models), with a chat page at / and /health; a reward model (the reward stage's) scores conversations at
    /v1/rewards instead (the slot, queue, timeout, log and run options are the chat server's). With --upstream URL
    and no PATH, a server such as vLLM generates and this one stands in front of it (finloom serve --upstream
    http://127.0.0.1:8001/v1 [--pas RUN/pas/model])."""
    import socket

    import httpx

    if upstream is not None:
        if path is not None:
            raise BadInput("serve: give PATH or --upstream, not both (with --upstream the upstream generates; a "
                           "run's PAS model comes with --pas RUN/pas/model)")
        try:
            host_of = httpx.URL(upstream).host if upstream.startswith(("http://", "https://")) else None
        except httpx.InvalidURL:
            host_of = None
        if not host_of:
            raise BadInput(f"--upstream: {upstream!r} is not an http(s) base URL such as http://127.0.0.1:8001/v1")
    elif path is None:
        raise BadInput("serve: give PATH (a model or run directory), or --upstream URL (an OpenAI-compatible server)")
    elif not path.is_dir():
        raise BadInput(f"serve: no model directory at {path}")

    import uvicorn

    from finloom.llm.reward_scorer import is_reward_model
    from finloom.llm.serve import ServeOptions, create_app
    from finloom.reward.serve import create_reward_app

    with socket.socket() as probe:  # before the model loads: a port in use is one line, not a server's traceback
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise BadInput(f"--port {port}: cannot listen on {host}:{port} ({error.strerror})") from None
    if upstream is None and is_reward_model(path):  # a reward model scores conversations (POST /v1/rewards)
        app_ = create_reward_app(path, model_name=model_name, trust_remote_code=trust_remote_code)
        what = "reward model at /v1/rewards"
    else:
        from finloom.pas.augment import Augmenter
        from finloom.recipe import ModelLoading

        if path is not None and pas is None and not no_pas and (path / "pas" / "manifest.json").exists() \
                and (path / "pas" / "model").is_dir():
            pas = path / "pas" / "model"
        augmenter = Augmenter(pas, pas_category, loading=ModelLoading(trust_remote_code=trust_remote_code)) if pas else None
        options = ServeOptions(max_concurrency=max_concurrency, max_queue=max_queue, request_timeout=request_timeout,
                               max_loaded=max_loaded, log_file=log_file, log_prompts=log_prompts)
        app_ = create_app(path, model_name=model_name, trust_remote_code=trust_remote_code, pas=augmenter,
                          options=options, upstream=upstream)
        what = f"{app_.state.backend.describe()}; chat page at /" + (f"; PAS {pas}" if augmenter else "")
        if upstream is not None:
            _warn_if_down(upstream)
    print(f"finloom serve: listening on http://{host}:{port} ({what})", flush=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _warn_if_down(upstream: str) -> None:
    """A line on stderr where the upstream does not answer yet (vLLM loads for minutes; the server starts anyway)."""
    import httpx

    try:
        httpx.get(f"{upstream.rstrip('/')}/models", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        print(f"finloom serve: the upstream {upstream} does not answer yet ({error}); requests get 502 until it "
              "does, /health says when", file=sys.stderr, flush=True)


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' tqdm bars; finloom shows rich progress bars
    # OpenMP threads that spin while waiting make torch 10-30x slower on a CPU another process also uses
    # (measured: 2 threads, one core busy elsewhere); passive waiting costs little on an idle machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        if len(sys.argv) > 1 and sys.argv[1] in ("run", "stage", "serve"):
            from finloom.logs import quiet_libraries

            quiet_libraries()
        # Without standalone mode typer returns an exit code instead of exiting (130 for Ctrl-C).
        code = app(standalone_mode=False, prog_name="finloom")
        if code == 130:
            print("interrupted; run the same command again to resume", file=sys.stderr)
        if isinstance(code, int) and code:
            sys.exit(code)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Abort:
        sys.exit(130)
    except Exception as error:
        # click's usage errors (unknown command, bad option) arrive here without standalone mode. typer
        # 0.2x vendors click, so they are not click's classes: match them by what they do.
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()

