"""Choose the CPT data mix by small scaling-law runs (Baichuan4-Finance's "loss + metric scaling law" study).

For each candidate finance ratio r, one short run from the pretrain stage's start model, with the
pretrain objective, logs held-out finance and general loss at several token counts D. Per ratio
and domain a saturating power law is fitted (loss scaling law):

    L(D) = E + A * D ** (-alpha)

and extrapolated to the target budget (default: the pretrain stage's tokens). Finance MCQ accuracy
measured at the end of each run (and at the start model) is regressed on finance loss (metric
scaling law: a straight line, the simplest form the few points support), so the predicted loss
becomes a predicted accuracy. The recommended ratio is the one with the lowest predicted finance
loss whose predicted general loss stays within ``general_budget`` of the start model's; the forms
are not given in the report, these are ours, and every fit and point is written out for checking.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dataclasses import replace

from finloom.data.mixing import write_token_shards
from finloom.eval.evaluator import Evaluator
from finloom.files import atomic_write_json, iter_texts
from finloom.llm.loading import load_causal_lm, load_tokenizer, load_trainable
from finloom.pretrain.stage import CPTInputs, cpt_inputs, heldout_datasets, train_causal_lm
from finloom.recipe import MixSearchSection
from finloom.stages import RunContext, StageResult


def power_law(tokens, floor, scale, exponent):
    return floor + scale * np.power(tokens, -exponent)


def fit_power_law(tokens: list[float], losses: list[float]) -> dict:
    """Least-squares fit of L(D) = E + A D^-alpha; with fewer than 3 points, a line in log-log space."""
    from scipy.optimize import curve_fit

    tokens_array, losses_array = np.asarray(tokens, float), np.asarray(losses, float)
    if len(tokens_array) >= 3:
        try:
            guess = (max(losses_array.min() * 0.5, 1e-3), (losses_array[0] - losses_array.min() * 0.5)
                     * tokens_array[0] ** 0.3, 0.3)
            (floor, scale, exponent), _ = curve_fit(
                power_law, tokens_array, losses_array, p0=guess, maxfev=20000,
                bounds=([0.0, 0.0, 1e-4], [losses_array.min(), np.inf, 3.0]))
            predicted = power_law(tokens_array, floor, scale, exponent)
            return {"form": "E + A*D^-alpha", "E": float(floor), "A": float(scale), "alpha": float(exponent),
                    "rmse": float(np.sqrt(np.mean((predicted - losses_array) ** 2)))}
        except (RuntimeError, ValueError):
            pass
    slope, intercept = np.polyfit(np.log(tokens_array), np.log(losses_array), 1)
    predicted = np.exp(intercept + slope * np.log(tokens_array))
    return {"form": "A*D^-alpha", "E": 0.0, "A": float(math.exp(intercept)), "alpha": float(-slope),
            "rmse": float(np.sqrt(np.mean((predicted - losses_array) ** 2)))}


def predict(fit: dict, tokens: float) -> float:
    return float(fit["E"] + fit["A"] * tokens ** (-fit["alpha"]))


def recommend(predictions: dict[float, dict], start_general_loss: float, general_budget: float) -> dict:
    """The ratio with the lowest predicted finance loss among those keeping general loss within budget."""
    allowed = {r: p for r, p in predictions.items() if p["general_loss"] <= start_general_loss * (1 + general_budget)}
    if allowed:
        ratio = min(allowed, key=lambda r: allowed[r]["finance_loss"])
        return {"ratio": ratio, "within_general_budget": True}
    ratio = min(predictions, key=lambda r: predictions[r]["general_loss"])
    return {"ratio": ratio, "within_general_budget": False,
            "note": "no ratio keeps general loss within the budget; this one loses the least"}


def run(section: MixSearchSection, ctx: RunContext) -> StageResult:
    """Short runs from the pretrain stage's start model, one per ratio, in ``ctx.stage_dir`` (a finished ratio is
    kept across an interrupted run); then the fits, the predictions and the recommended ratio."""
    recipe = ctx.recipe
    ratios, steps, eval_points = section.ratios, section.steps, section.eval_points
    _, start_path = ctx.input_model("pretrain")
    inputs = cpt_inputs(ctx, recipe.pretrain.mix, start_path)
    tokenizer = load_tokenizer(start_path, recipe.model)
    out = ctx.stage_dir
    train = recipe.pretrain.train.model_copy(update={"max_steps": steps, "save_steps": steps})
    eval_every = max(1, steps // eval_points)
    short_run = recipe.pretrain.model_copy(update={"train": train, "eval_every": eval_every})
    tokens_per_step = train.batch_size * train.grad_accum * train.seq_len
    target = section.target_tokens or recipe.pretrain.train.max_steps * tokens_per_step
    finance = [b.name for b in recipe.eval.benchmarks if b.kind == "mcq" and b.domain == "finance"][:1]
    evaluation = recipe.eval.model_copy(update={"max_items": section.mcq_items})
    evaluator = (Evaluator(evaluation, out / "eval_work", recipe.resolve, seed=recipe.seed, loading=recipe.model,
                           names=set(finance)) if finance else None)

    def finance_accuracy(label: str, model_path) -> float | None:
        if evaluator is None:
            return None
        return evaluator.run_local(label, model_path, chat=False, out_dir=out / label / "eval")[finance[0]]["accuracy"]

    start_losses = _heldout_losses(inputs, tokenizer, train, short_run.eval_max_tokens)
    points = {"start": {"finance_loss": start_losses["finance"], "general_loss": start_losses["general"],
                        "finance_mcq": finance_accuracy("start", start_path)}}
    curves = {}
    for ratio in ratios:
        label = f"ratio_{ratio:g}"
        shards = out / label / "shards"
        if not (shards / "index.json").exists():
            write_token_shards({d: iter_texts(ctx.artifact("data", d)) for d in ("general", "finance")}, tokenizer,
                               shards, {"general": 1 - ratio, "finance": ratio}, train.seq_len, seed=recipe.seed)
        if not (out / label / "model").exists():
            model = load_trainable(start_path, recipe.model)
            train_causal_lm(model, tokenizer, short_run, replace(inputs, shards=shards), out / label,
                            (out / label / "checkpoints").exists(), f"mix search {label}")
        history = json.loads((out / label / "log_history.json").read_text(encoding="utf-8"))
        curve = {"tokens": [], "finance_loss": [], "general_loss": []}
        for step in sorted({e["step"] for e in history if "eval_finance_loss" in e and e["step"] > 0}):
            entries = [e for e in history if e["step"] == step]
            curve["tokens"].append(step * tokens_per_step)
            for domain in ("finance", "general"):
                curve[f"{domain}_loss"].append(next(e[f"eval_{domain}_loss"] for e in entries
                                                    if f"eval_{domain}_loss" in e))
        curve["finance_mcq"] = finance_accuracy(label, out / label / "model")
        curves[ratio] = curve
    fits = {r: {d: fit_power_law(c["tokens"], c[f"{d}_loss"]) for d in ("finance", "general")}
            for r, c in curves.items()}
    metric_points = [(p["finance_loss"], p["finance_mcq"]) for p in [points["start"]] + [
        {"finance_loss": c["finance_loss"][-1], "finance_mcq": c["finance_mcq"]} for c in curves.values()]
        if p["finance_mcq"] is not None]
    metric_fit = None
    if len(metric_points) >= 2:
        slope, intercept = np.polyfit([p[0] for p in metric_points], [p[1] for p in metric_points], 1)
        metric_fit = {"form": "accuracy = a + b * finance_loss", "a": float(intercept), "b": float(slope),
                      "points": len(metric_points)}
    predictions = {}
    for ratio, fit in fits.items():
        finance_loss = predict(fit["finance"], target)
        predictions[ratio] = {"finance_loss": finance_loss, "general_loss": predict(fit["general"], target)}
        if metric_fit:
            predictions[ratio]["finance_mcq"] = float(np.clip(metric_fit["a"] + metric_fit["b"] * finance_loss, 0, 1))
    choice = recommend(predictions, start_losses["general"], section.general_budget)
    result = {"ratios": ratios, "steps": steps, "target_tokens": target, "general_budget": section.general_budget,
              "start": points["start"], "curves": {str(r): c for r, c in curves.items()},
              "fits": {str(r): f for r, f in fits.items()}, "metric_fit": metric_fit,
              "predictions": {str(r): p for r, p in predictions.items()}, "recommendation": choice}
    atomic_write_json(out / "results.json", result)
    return StageResult(outputs={"results": ctx.relative(out / "results.json")},
                       metrics={"recommendation": choice, "predictions": result["predictions"]})


def _heldout_losses(inputs: CPTInputs, tokenizer, train, max_tokens: int) -> dict[str, float]:
    """The start model's mean held-out CE per domain, on the blocks the runs evaluate on."""
    import torch

    model = load_causal_lm(inputs.start, inputs.loading)
    model.eval()
    losses = {}
    with torch.no_grad():
        for domain, dataset in heldout_datasets(inputs.heldout, tokenizer, train.seq_len, max_tokens).items():
            ids = torch.tensor(dataset["input_ids"])
            total = 0.0
            for start in range(0, len(ids), train.batch_size):
                batch = ids[start : start + train.batch_size]
                total += model(input_ids=batch, labels=batch).loss.item() * len(batch)
            losses[domain] = total / len(ids)
    return losses


def apply_ratio(recipe_path: Path, ratio: float, mix: str = "pretrain") -> Path:
    """Write the chosen ratio into the recipe's data.mix.mixes.<mix>.shares (the old file kept as .bak)."""
    import yaml

    text = recipe_path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    mixes = data.setdefault("data", {}).setdefault("mix", {}).setdefault("mixes", {})
    mixes.setdefault(mix, {})["shares"] = {"general": round(1 - ratio, 6), "finance": round(ratio, 6)}
    recipe_path.with_name(recipe_path.name + ".bak").write_text(text, encoding="utf-8")
    recipe_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return recipe_path
