"""The forgetting experiment: does domain self-constraint learn finance without losing general ability?

Every variant starts from the model the pretrain stage starts from (the general base) and trains
at the same token budget; each is evaluated exactly like the eval stage evaluates stage models
(held-out finance and general perplexity, finance and general MCQ accuracy), and its step time is
recorded. Default variants: finance-only CE, replay CE on the pretrain mix, self-constraint with
full-vocabulary KL, self-constraint with top-500 KL. A variant identical to the pretrain stage
reuses its model and the eval stage's numbers, so the experiment costs one training less.

The verdict compares against the targets in the recipe (general PPL within 2% of the start
model's; at least 90% of finance-only CE's finance-PPL reduction; better than replay on both
axes) and states, with the numbers, which held and which did not. Variants resume one by one: a
finished variant's ``result.json`` is kept across an interrupted run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dataclasses import replace

from finloom.data.mixing import write_token_shards
from finloom.errors import BadInput
from finloom.eval.evaluator import Evaluator
from finloom.files import atomic_write_json, iter_texts
from finloom.llm.loading import load_tokenizer, load_trainable
from finloom.pretrain.stage import CPTInputs, cpt_inputs, train_causal_lm
from finloom.recipe import ForgettingSection, ForgettingVariant, PretrainSection, Recipe
from finloom.stages import RunContext, StageResult, read_manifest, upstream_stages


def _same_as_pretrain(variant: ForgettingVariant, section: ForgettingSection, pretrain: PretrainSection) -> bool:
    return (section.reuse_pretrain and pretrain.enabled and variant.mix == "pretrain" and not pretrain.lora.enabled
            and variant.objective == pretrain.objective and (section.train or pretrain.train) == pretrain.train)


def _finance_only_shards(ctx: RunContext, tokenizer, seq_len: int) -> Path:
    out = ctx.stage_dir / "shards_finance_only"
    if not (out / "index.json").exists():
        write_token_shards({"finance": iter_texts(ctx.artifact("data", "finance"))}, tokenizer, out,
                           {"finance": 1.0}, seq_len, seed=ctx.recipe.seed)
    return out


def current_eval_results(run_dir: Path, recipe: Recipe) -> dict:
    """The eval stage's results by model label, only if they are of the models now on disk.

    A run directory can hold an eval from an earlier recipe: eval switched off since, or its
    upstream stages re-run after it (a copied run with another mix). Its numbers then belong to
    other models, so they are used only when eval is upstream of this forgetting stage and every
    stage it read still has the fingerprint it recorded.
    """
    if "eval" not in upstream_stages(recipe, "forgetting"):
        return {}
    manifest = read_manifest(run_dir, "eval")
    if not manifest or manifest.get("status") != "done":
        return {}
    for name, fingerprint in manifest.get("inputs", {}).get("stages", {}).items():
        upstream = read_manifest(run_dir, name)
        if not upstream or upstream.get("fingerprint") != fingerprint:
            return {}
    return json.loads((run_dir / manifest["outputs"]["results"]).read_text(encoding="utf-8"))


def _evaluator(ctx: RunContext, heldout: dict[str, list[str]]):
    """evaluate(label, model_path) -> the eval stage's log-likelihood metrics for that model, on its benchmarks."""
    recipe = ctx.recipe
    evaluator = Evaluator(recipe.eval, ctx.stage_dir / "work", recipe.resolve, seed=recipe.seed, loading=recipe.model,
                          heldout=heldout)
    eval_results = current_eval_results(ctx.run_dir, recipe)

    def evaluate(label: str, model_path, reuse: str | None = None) -> dict:
        if reuse in eval_results:
            return eval_results[reuse]
        return evaluator.run_local(label, model_path, chat=False, out_dir=ctx.stage_dir / label / "eval")

    return evaluate


def _variant_section(variant: ForgettingVariant, section: ForgettingSection, pretrain: PretrainSection) -> PretrainSection:
    return pretrain.model_copy(update={"objective": variant.objective, "train": section.train or pretrain.train,
                                       "lora": pretrain.lora.model_copy(update={"enabled": False})})


def _row(label: str, results: dict, start: dict | None, step_time: float | None) -> dict:
    row = {"variant": label, "step_time_s": step_time}
    for key in ("finance_ppl", "general_ppl"):
        row[key] = results.get(key, {}).get("perplexity")
    for key in ("finance_mcq", "general_mcq"):
        row[key] = results.get(key, {}).get("accuracy")
    if start:
        for key in ("finance_ppl", "general_ppl"):
            if row[key] and start.get(key):
                row[f"{key}_change"] = round(row[key] / start[key] - 1, 4)
    return row


def verdict(rows: list[dict], section: ForgettingSection) -> dict:
    """Which self-constraint variants met the targets, with the numbers behind each check."""
    by_name = {row["variant"]: row for row in rows}
    start = by_name.get("start")
    finance_only = next((r for r in rows if r["variant"].startswith("finance_only")), None)
    replay = next((r for r in rows if r["variant"].startswith("replay")), None)
    checks = {}
    if not (start and finance_only):
        return {"note": "needs a start row and a finance-only variant"}
    finance_only_gain = start["finance_ppl"] - finance_only["finance_ppl"]
    for row in rows:
        if not row["variant"].startswith("self_constraint"):
            continue
        gain = start["finance_ppl"] - row["finance_ppl"]
        gain_share = gain / finance_only_gain if finance_only_gain > 0 else None
        check = {
            "general_ppl_change": row["general_ppl_change"],
            # Forgetting is general perplexity going up; a drop (an under-trained start model improving) is no loss.
            "general_within_tolerance": row["general_ppl_change"] <= section.general_ppl_tolerance,
            "finance_gain_share": round(gain_share, 4) if gain_share is not None else None,
            "finance_gain_enough": gain_share is not None and gain_share >= section.finance_gain_share,
        }
        if replay:
            check["beats_replay"] = (row["general_ppl"] <= replay["general_ppl"]
                                     and row["finance_ppl"] <= replay["finance_ppl"])
        check["all_met"] = all(value for key, value in check.items() if isinstance(value, bool))
        checks[row["variant"]] = check
    return checks


def run(section: ForgettingSection, ctx: RunContext) -> StageResult:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BadInput("forgetting: run the experiment in one process (finloom experiment forgetting --run-dir RUN), "
                       "not under accelerate launch")
    recipe = ctx.recipe
    pretrain = recipe.pretrain
    start_label, start_path = ctx.input_model("pretrain")
    inputs = cpt_inputs(ctx, pretrain.mix, start_path)
    evaluate = _evaluator(ctx, inputs.heldout)
    start_results = evaluate("start", start_path, reuse=start_label)
    rows = [_row("start", start_results, None, None)]
    for variant in section.variants:
        folder = ctx.stage_dir / variant.name
        result_path = folder / "result.json"
        if result_path.exists():
            rows.append(json.loads(result_path.read_text(encoding="utf-8")))
            continue
        if _same_as_pretrain(variant, section, pretrain):
            metrics = ctx.manifest("pretrain")["metrics"]
            results = evaluate(variant.name, ctx.artifact("pretrain", "model"), reuse="pretrain")
            row = _row(variant.name, results, rows[0], metrics.get("step_time_s"))
            row["reused"] = "pretrain stage"
        else:
            row = _train_variant(ctx, inputs, variant, section, pretrain, folder, evaluate, rows[0])
        atomic_write_json(result_path, row)
        rows.append(row)
    checks = verdict(rows, section)
    atomic_write_json(ctx.stage_dir / "results.json", {"rows": rows, "verdict": checks})
    return StageResult(outputs={"results": ctx.relative(ctx.stage_dir / "results.json")},
                       metrics={"rows": rows, "verdict": checks})


def _train_variant(ctx: RunContext, inputs: CPTInputs, variant: ForgettingVariant, section: ForgettingSection,
                   pretrain: PretrainSection, folder: Path, evaluate, start_row: dict) -> dict:
    tokenizer = load_tokenizer(inputs.start, inputs.loading)
    model = load_trainable(inputs.start, inputs.loading)
    variant_section = _variant_section(variant, section, pretrain)
    if variant.mix == "finance_only":
        inputs = replace(inputs, shards=_finance_only_shards(ctx, tokenizer, variant_section.train.seq_len))
    started = time.perf_counter()
    trained = train_causal_lm(model, tokenizer, variant_section, inputs, folder, (folder / "checkpoints").exists(),
                              f"forgetting {variant.name}")
    results = evaluate(variant.name, folder / "model")
    row = _row(variant.name, results, start_row, trained["step_time_s"])
    row["train_seconds"] = round(time.perf_counter() - started, 2)
    return row
