"""The ``eval`` stage: every stage's model, and any API models, on the same benchmarks, through lm-eval.

For each model (the starting HF model, then every lineage model the catalogue lists as enabled,
then the recipe's endpoints): every benchmark of ``eval.benchmarks`` (certification MCQ by
log-likelihood for every local model and by generation for chat models, calculation problems,
judged scenarios) and perplexity on held-out finance and general text. Per-question results are
kept under ``eval/<model>/<benchmark>.jsonl``; scenario judge prompts and replies beside them.
"""

from __future__ import annotations

from finloom.errors import BadInput
from finloom.eval.evaluator import Evaluator
from finloom.eval.results import headline
from finloom.files import atomic_write_json, atomic_write_jsonl, iter_texts
from finloom.recipe import EvalSection
from finloom.stages import MODEL_STAGES, STAGES, RunContext, StageResult, enabled_stages


def heldout_texts(ctx: RunContext) -> dict[str, list[str]]:
    if "data" not in enabled_stages(ctx.recipe):
        return {}
    outputs = ctx.manifest("data")["outputs"]
    return {domain: list(iter_texts(ctx.run_dir / outputs[f"{domain}_heldout"]))
            for domain in ("finance", "general") if f"{domain}_heldout" in outputs}


def models_to_evaluate(ctx: RunContext) -> list[tuple[str, str, bool]]:
    """(label, model directory, chat model?) for the start model (an existing one), every lineage model, and the
    inputs of a merge."""
    enabled = enabled_stages(ctx.recipe)
    model = ctx.recipe.model
    models = [] if model is None or model.scratch else [("start", ctx.recipe.start_model(), False)]
    for stage in [name for name in MODEL_STAGES if name in enabled]:
        if stage == "merge":  # the merged model after each of its inputs that is not already a stage's model
            models += [(entry["label"], str(ctx.run_dir / entry["path"]), True)
                       for entry in ctx.manifest("merge")["metrics"]["inputs"] if not entry.get("evaluated_as")]
        models.append((stage, str(ctx.artifact(stage, "model")), STAGES[stage].chat))
    return models


def run(section: EvalSection, ctx: RunContext) -> StageResult:
    heldout = heldout_texts(ctx)
    if not section.benchmarks and not heldout:
        raise BadInput("eval: nothing to evaluate (no benchmarks and no held-out text)")
    recipe = ctx.recipe
    evaluator = Evaluator(section, ctx.stage_dir / "work", recipe.resolve, seed=recipe.seed, loading=recipe.model,
                          judge=ctx.teacher(), heldout=heldout)
    atomic_write_jsonl(ctx.stage_dir / "rejects.jsonl", evaluator.rejects)
    per_model = {}
    for label, model_path, chat in models_to_evaluate(ctx):
        per_model[label] = evaluator.run_local(label, model_path, chat, ctx.stage_dir / label)
    for endpoint in section.endpoints:
        per_model[endpoint.name] = evaluator.run_endpoint(endpoint, ctx.stage_dir / endpoint.name)
    atomic_write_json(ctx.stage_dir / "results.json", per_model)
    return StageResult(
        outputs={"results": "eval/results.json"},
        metrics={"summary": {label: headline(results) for label, results in per_model.items()},
                 "items": {name: len(p.items) for name, p in evaluator.prepared.items()},
                 "rejected": len(evaluator.rejects)},
    )
