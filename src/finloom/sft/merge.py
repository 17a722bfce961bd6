"""Model merging (the ``merge`` stage and ``finloom merge``): Linear, Task Arithmetic and Model Stock.

The merge itself is mergekit's: it reads safetensors lazily and merges tensor by tensor, so memory stays
near one model plus one tensor per input, whatever the number of inputs. finloom adds what a run needs
around it: inputs named by stage (``stage:sft``) or as the last checkpoints of the stage before, weights
only from safetensors, the chat model's tokenizer, template and end-of-turn ids carried over from the first
input (mergekit would take the base's, a model without the chat template), and an atomic output.

Definitions, per tensor, with base w0 and inputs w_1..w_N, weights a_i (default 1/N):
- linear: sum(a_i w_i) / sum(a_i);
- task_arithmetic: w0 + sum(a_i (w_i - w0));
- model_stock: w0 + t (mean(w_i) - w0), t = N cos / (1 + (N - 1) cos), cos the mean pairwise cosine of the
  deltas w_i - w0 (Jang et al. 2024).
"""

from __future__ import annotations

from pathlib import Path

from transformers import GenerationConfig

from finloom.errors import BadInput
from finloom.files import atomic_dir
from finloom.llm.loading import load_tokenizer
from finloom.recipe import MergeSection
from finloom.stages import STAGE_MODEL_PREFIX, RunContext, StageResult, model_stage_before
from finloom.training import complete_checkpoints

NEEDS_BASE = ("model_stock", "task_arithmetic")


def merge_models(method: str, models: list[Path], out: Path, base: Path | None = None,
                 weights: list[float] | None = None) -> Path:
    """Merge ``models`` (HF directories with safetensors weights) into ``out``; returns ``out``."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    if method in NEEDS_BASE and base is None:
        raise BadInput(f"merge: {method} needs the base model the inputs were fine-tuned from")
    if len(models) < 2:
        raise BadInput(f"merge: at least two models to merge (got {len(models)})")
    for path in [*models, *([base] if base else [])]:
        if not Path(path).is_dir() or not any(Path(path).glob("*.safetensors")):
            raise BadInput(f"merge: {path}: not a model directory with .safetensors weights (finloom merges only "
                           "safetensors)")
    weights = weights or [1 / len(models)] * len(models)
    config = {"merge_method": method, "dtype": "float32",
              "models": [{"model": str(Path(m).resolve()), "parameters": {"weight": w}} for m, w in zip(models, weights)]}
    if method in NEEDS_BASE:
        config["base_model"] = str(Path(base).resolve())
    try:
        merge_config = MergeConfiguration.model_validate(config)
    except ValueError as error:
        raise BadInput(f"merge: {error}") from None
    with atomic_dir(out) as tmp:
        run_merge(merge_config, str(tmp), MergeOptions(copy_tokenizer=False, safe_serialization=True,
                                                       lazy_unpickle=False, write_model_card=False, quiet=True))
        first = Path(models[0])
        load_tokenizer(first).save_pretrained(tmp)
        if (first / "generation_config.json").exists():
            GenerationConfig.from_pretrained(str(first)).save_pretrained(tmp)
    return out


def merge_inputs(section: MergeSection, ctx: RunContext) -> list[tuple[str, Path]]:
    """(label, directory) of every model merged: ``models``, then the last ``checkpoints`` of the stage before."""
    inputs = [(name, ctx.named_model(name)) for name in section.models]
    if section.checkpoints:
        stage = model_stage_before(ctx.recipe, ctx.stage)
        if stage is None:
            raise BadInput("merge.checkpoints: no model stage runs before merge to take checkpoints from")
        folder = ctx.run_dir / stage / "checkpoints"
        found = complete_checkpoints(folder)  # not one a kill cut short
        if len(found) < section.checkpoints:
            raise BadInput(f"merge.checkpoints: {section.checkpoints} wanted, but {stage} kept {len(found)} in {folder} "
                           f"(its train.save_steps / save_total_limit decide how many)")
        inputs += [(f"{stage}@{path.name}", path) for path in found[-section.checkpoints:]]
    return inputs


def _stage_model(ctx: RunContext, label: str) -> str | None:
    """The stage whose own model this input is (``stage:sft``, or the sft run's final checkpoint), if any: eval
    scores it under that stage's name instead of a second time."""
    if label.startswith(STAGE_MODEL_PREFIX):
        return label.removeprefix(STAGE_MODEL_PREFIX)
    stage, _, checkpoint = label.partition("@checkpoint-")
    if checkpoint and ctx.manifest(stage)["metrics"].get("train_steps") == int(checkpoint):
        return stage
    return None


def run(section: MergeSection, ctx: RunContext) -> StageResult:
    inputs = merge_inputs(section, ctx)
    if model_stage_before(ctx.recipe, ctx.stage) is None and not section.base:
        raise BadInput("merge.base: no model stage runs before merge; name the base model")
    if section.base:
        base_label, base = section.base, ctx.named_model(section.base)
    else:  # the model the stage before this one started from
        base_label, base = ctx.input_model(model_stage_before(ctx.recipe, ctx.stage))
    merge_models(section.method, [path for _, path in inputs], ctx.stage_dir / "model",
                 Path(base) if section.method in NEEDS_BASE else None, section.weights)
    return StageResult(outputs={"model": "merge/model"}, metrics={
        "method": section.method,
        "inputs": [{"label": label, "path": ctx.relative(path) if path.resolve().is_relative_to(ctx.run_dir.resolve())
                    else str(path), "evaluated_as": _stage_model(ctx, label)} for label, path in inputs],
        "weights": None if section.method == "model_stock" else section.weights or [round(1 / len(inputs), 6)] * len(inputs),
        "base": base_label if section.method in NEEDS_BASE else None,
    })
