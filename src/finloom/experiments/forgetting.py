"""The forgetting experiment: does domain self-constraint learn finance without losing general ability?

Every variant starts from the model the pretrain stage starts from (the general base) and trains
at the same token budget; each is evaluated exactly like the eval stage evaluates stage models
(held-out finance and general perplexity, finance and general MCQ accuracy), and its step time is
recorded. Default variants: finance-only CE, replay CE on the pretrain mix, self-constraint with
full-vocabulary KL, self-constraint with top-500 KL. A variant identical to the pretrain stage
reuses its model (for the first seed) and the eval stage's numbers, so the experiment costs one
training less.

A protocol that can resolve its own target: each variant trains with ``seeds`` data orders, and every
number is a mean with a 95% interval over them (Student's t), so a 2% target is read against the
noise it sits in. The finance gain is given as a share of finance-only CE's, in perplexity and in
loss (nats: a share of the log-perplexity reduction, which perplexity's convexity inflates), and
every self-constraint variant carries its lambda per finance token (lambda x general share /
finance share: the loss is one mean over all tokens, so at 80/20 a lambda weighs 4x what it does at
50/50), so lambdas of different mixes compare.

The verdict compares against the targets in the recipe (general PPL within 2% of the start
model's; at least 90% of finance-only CE's finance-PPL reduction; better than replay on both
axes) and states, with the numbers, which held and which did not, and whether the interval is
narrow enough to tell. Variants resume one seed at a time: a finished one's ``result.json`` is kept
across an interrupted run.
"""

from __future__ import annotations

import json
import math
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


def _row(label: str, results: dict, step_time: float | None) -> dict:
    """One trained model's numbers: perplexities (and mean NLL, nats per token), MCQ accuracies."""
    row = {"variant": label, "step_time_s": step_time}
    for key in ("finance_ppl", "general_ppl"):
        row[key] = results.get(key, {}).get("perplexity")
        row[key.replace("_ppl", "_nll")] = results.get(key, {}).get("nll")
    for key in ("finance_mcq", "general_mcq"):
        row[key] = results.get(key, {}).get("accuracy")
    return row


def mean_interval(values: list[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95% interval (Student's t); None with one value."""
    from scipy import stats

    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * deviation / math.sqrt(len(values)))


def summarise(variant: str, seeds: list[dict], start: dict, finance_only: list[dict] | None,
              lambda_per_finance_token: float | None) -> dict:
    """A variant's row over its seeds: means, 95% intervals, changes against the start model, gain shares."""
    row: dict = {"variant": variant, "seeds": len(seeds)}
    if lambda_per_finance_token is not None:
        row["lambda_per_finance_token"] = round(lambda_per_finance_token, 4)
    for key in ("finance_ppl", "general_ppl", "finance_mcq", "general_mcq", "step_time_s"):
        values = [s[key] for s in seeds if s.get(key) is not None]
        if values:
            row[key], interval = mean_interval(values)
            row[key] = round(row[key], 4)
            if interval is not None and key != "step_time_s":
                row[f"{key}_ci95"] = round(interval, 4)
    for key in ("finance_ppl", "general_ppl"):
        changes = [s[key] / start[key] - 1 for s in seeds if s.get(key) and start.get(key)]
        if changes:
            change, interval = mean_interval(changes)
            row[f"{key}_change"] = round(change, 4)
            if interval is not None:
                row[f"{key}_change_ci95"] = round(interval, 4)
    if finance_only and start.get("finance_ppl"):
        reference_ppl = sum(s["finance_ppl"] for s in finance_only) / len(finance_only)
        reference_nll = sum(s["finance_nll"] for s in finance_only) / len(finance_only)
        shares = [(start["finance_ppl"] - s["finance_ppl"]) / (start["finance_ppl"] - reference_ppl) for s in seeds]
        nats = [(start["finance_nll"] - s["finance_nll"]) / (start["finance_nll"] - reference_nll) for s in seeds]
        for key, values in (("finance_gain_share", shares), ("finance_gain_share_nats", nats)):
            value, interval = mean_interval(values)
            row[key] = round(value, 4)
            if interval is not None:
                row[f"{key}_ci95"] = round(interval, 4)
    return row


def lambda_per_finance_token(variant: ForgettingVariant, shares: dict[str, float]) -> float | None:
    """The self-constraint weight of a general token's KL against a finance token's CE, in the mix's shares."""
    if variant.objective.type != "self_constraint":
        return None
    general, finance = shares.get("general", 0.0), shares.get("finance", 0.0)
    return variant.objective.kl_lambda * general / finance if finance else None


def verdict(rows: list[dict], section: ForgettingSection) -> dict:
    """Which self-constraint variants met the targets, with the numbers (and intervals) behind each check."""
    by_name = {row["variant"]: row for row in rows}
    replay = next((r for r in rows if r["variant"].startswith("replay")), None)
    if "start" not in by_name or not any(r["variant"].startswith("finance_only") for r in rows):
        return {"note": "needs a start row and a finance-only variant"}
    checks = {}
    for row in rows:
        if not row["variant"].startswith("self_constraint") or row.get("finance_gain_share") is None:
            continue
        change, interval = row["general_ppl_change"], row.get("general_ppl_change_ci95")
        check = {
            "general_ppl_change": change,
            "general_ppl_change_ci95": interval,
            # Forgetting is general perplexity going up; a drop (an under-trained start model improving) is no loss.
            "general_within_tolerance": change <= section.general_ppl_tolerance,
            # Whether the seeds resolve the target: the interval is narrower than the tolerance it is read against.
            "resolved": interval is not None and interval < section.general_ppl_tolerance,
            "finance_gain_share": row["finance_gain_share"],
            "finance_gain_share_nats": row["finance_gain_share_nats"],
            "finance_gain_enough": row["finance_gain_share"] >= section.finance_gain_share,
        }
        if replay:
            check["beats_replay"] = (row["general_ppl"] <= replay["general_ppl"]
                                     and row["finance_ppl"] <= replay["finance_ppl"])
        check["all_met"] = all(value for key, value in check.items() if isinstance(value, bool) and key != "resolved")
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
    start = _row("start", evaluate("start", start_path, reuse=start_label), None)
    shares = recipe.data.mix.mixes[pretrain.mix].shares if pretrain.mix in recipe.data.mix.mixes else {}
    per_seed: dict[str, list[dict]] = {}
    for variant in section.variants:
        per_seed[variant.name] = [_seed_row(ctx, inputs, variant, section, pretrain, seed, evaluate)
                                  for seed in range(section.seeds)]
    finance_only = next((rows for name, rows in per_seed.items() if name.startswith("finance_only")), None)
    rows = [{**start, "seeds": 1}] + [
        summarise(variant.name, per_seed[variant.name], start, finance_only, lambda_per_finance_token(variant, shares))
        for variant in section.variants]
    checks = verdict(rows, section)
    atomic_write_json(ctx.stage_dir / "results.json", {"rows": rows, "per_seed": per_seed, "verdict": checks})
    return StageResult(outputs={"results": ctx.relative(ctx.stage_dir / "results.json")},
                       metrics={"rows": rows, "verdict": checks})


def _seed_row(ctx: RunContext, inputs: CPTInputs, variant: ForgettingVariant, section: ForgettingSection,
              pretrain: PretrainSection, seed: int, evaluate) -> dict:
    """One variant trained with the ``seed``-th data order (the recipe's seed + ``seed``), kept once finished."""
    folder = ctx.stage_dir / variant.name / f"seed{seed}"
    result_path = folder / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text(encoding="utf-8"))
    if seed == 0 and _same_as_pretrain(variant, section, pretrain):
        metrics = ctx.manifest("pretrain")["metrics"]
        row = _row(variant.name, evaluate(variant.name, ctx.artifact("pretrain", "model"), reuse="pretrain"),
                   metrics.get("step_time_s"))
        row["reused"] = "pretrain stage"
    else:
        row = _train_variant(ctx, replace(inputs, seed=inputs.seed + seed,
                                          run_name=f"{inputs.run_name}/{variant.name}/seed{seed}"),
                             variant, section, pretrain, folder, evaluate, f"{variant.name}/seed{seed}")
    atomic_write_json(result_path, row)
    return row


def _train_variant(ctx: RunContext, inputs: CPTInputs, variant: ForgettingVariant, section: ForgettingSection,
                   pretrain: PretrainSection, folder: Path, evaluate, label: str) -> dict:
    tokenizer = load_tokenizer(inputs.start, inputs.loading)
    model = load_trainable(inputs.start, inputs.loading)
    variant_section = _variant_section(variant, section, pretrain)
    if variant.mix == "finance_only":
        inputs = replace(inputs, shards=_finance_only_shards(ctx, tokenizer, variant_section.train.seq_len))
    started = time.perf_counter()
    trained = train_causal_lm(model, tokenizer, variant_section, inputs, folder, (folder / "checkpoints").exists(),
                              f"forgetting {label}")
    row = _row(variant.name, evaluate(label.replace("/", "_"), folder / "model"), trained["step_time_s"])
    row["train_seconds"] = round(time.perf_counter() - started, 2)
    return row
