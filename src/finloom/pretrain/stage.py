"""The ``base`` and ``pretrain`` stages: causal-LM training with the HF Trainer on the data stage's token shards.

``base`` (from-scratch recipes only) builds a small Llama model around the tokenizer the data stage
trained, and pretrains it with plain CE on its mix (general text): the "general base". ``pretrain``
continues from the newest model on its mix with the recipe's objective: domain self-constraint
(``SelfConstraintTrainer``: CE on finance, KL to the frozen start model on general text) or plain
CE (replay), optionally through LoRA. Both stream packed blocks from ``data/shards/<mix>``, evaluate
held-out finance and general loss every ``eval_every`` steps, and log to TensorBoard.

``train_causal_lm`` takes plain values (``CPTInputs``), so the studies (forgetting, mix search)
train exactly as the stage does, in folders of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import TrainingArguments

from finloom.data.mixing import TokenShardDataset, collate_blocks, default_separator_id, token_blocks, tokenizer_hash
from finloom.errors import BadInput
from finloom.files import iter_texts
from finloom.llm.loading import load_causal_lm, load_tokenizer, load_trainable
from finloom.llm.scratch import build_model
from finloom.pretrain.reference import PrecomputedReference, precompute_reference, reference_key
from finloom.pretrain.self_constraint import CPTTrainer, SelfConstraintConfig, SelfConstraintTrainer
from finloom.recipe import BaseSection, ModelLoading, ObjectiveSettings, PretrainSection, TrainArgs
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs, with_lora


@dataclass
class CPTInputs:
    """What a causal-LM training run reads, as plain values."""

    shards: Path
    """A token-shard mix (``data/shards/<mix>`` or a study's own)."""
    seed: int
    loading: ModelLoading
    start: Path | str | None = None
    """The model the run starts from: the frozen reference of the self-constraint KL."""
    heldout: dict[str, list[str]] = field(default_factory=dict)
    """Domain -> held-out texts, evaluated every ``eval_every`` steps."""
    reference_store: Path | None = None
    """Where precomputed references are kept (``RUN/reference``), shared by every run of a directory."""
    trackers: tuple[str, ...] = ("tensorboard",)
    """Where the curves go (the recipe's ``report_to``)."""
    run_name: str | None = None
    """The run's name in the trackers."""


def cpt_inputs(ctx: RunContext, mix: str, start: Path | str | None) -> CPTInputs:
    """The inputs of a run on the data stage's ``mix`` in ``ctx``'s run directory."""
    outputs = ctx.manifest("data")["outputs"]
    heldout = {domain: list(iter_texts(ctx.run_dir / outputs[f"{domain}_heldout"]))
               for domain in ("finance", "general") if f"{domain}_heldout" in outputs}
    return CPTInputs(shards=ctx.artifact("data", f"shards_{mix}"), seed=ctx.recipe.seed, loading=ctx.recipe.model,
                     start=start, heldout=heldout, reference_store=ctx.run_dir / "reference",
                     trackers=tuple(ctx.recipe.report_to), run_name=f"{ctx.recipe.name}/{ctx.stage}")


def shard_dataset(shard_dir: Path, tokenizer, seed: int, label: str) -> TokenShardDataset:
    """The shards, checked to be tokenised with the model's own tokenizer."""
    dataset = TokenShardDataset(shard_dir, seed=seed)
    if dataset.index["tokenizer_hash"] != tokenizer_hash(tokenizer):
        raise BadInput(f"{label}.mix: the shards in {shard_dir} were tokenised with another tokenizer than the "
                       "model's; re-run the data stage (finloom run RECIPE --from data)")
    return dataset


def heldout_datasets(heldout: dict[str, list[str]], tokenizer, seq_len: int, max_tokens: int) -> dict[str, Dataset]:
    """Held-out finance and general blocks for evaluation during training (as many as the data stage kept)."""
    separator = default_separator_id(tokenizer)
    datasets = {}
    for domain, texts in heldout.items():
        blocks = token_blocks(texts, tokenizer, seq_len, separator)[: max(1, max_tokens // seq_len)]
        if blocks:
            datasets[domain] = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    return datasets


def _arguments(config_class, train: TrainArgs, out_dir: Path, inputs: CPTInputs, eval_every: int | None,
               evaluate: bool, **extra):
    kwargs = trainer_kwargs(train, out_dir / "checkpoints", inputs.seed, inputs.run_name)
    if eval_every and evaluate:
        kwargs.update(eval_strategy="steps", eval_steps=eval_every, per_device_eval_batch_size=train.batch_size,
                      eval_on_start=True)  # the curve starts at the start model
    return config_class(**kwargs, **extra)


def _reference(inputs: CPTInputs, objective: ObjectiveSettings, finance_domain: int, batch_size: int,
               lora: bool) -> dict:
    """What supplies p_ref: a precomputed store, a frozen copy of the start model, or (LoRA) the adapters switched off."""
    if objective.reference == "precomputed":
        return {"reference": PrecomputedReference(ensure_reference(inputs, objective, finance_domain, batch_size))}
    if lora:
        return {}
    import torch

    ref_model = load_causal_lm(inputs.start, inputs.loading)
    return {"ref_model": ref_model.to(frozen_copy_device(objective.reference_device, torch.cuda.is_available()))}


def frozen_copy_device(setting: str, gpu: bool) -> str:
    """Where the online reference lives: ``same`` as the policy (the GPU where there is one), or ``cpu`` (slower,
    but the GPU holds only the policy)."""
    return "cuda" if setting == "same" and gpu else "cpu"


def ensure_reference(inputs: CPTInputs, objective: ObjectiveSettings, finance_domain: int, batch_size: int) -> Path:
    """The top-k store for this start model, mix and k, computed now if no earlier run left it."""
    out = inputs.reference_store / reference_key(inputs.start, inputs.shards, objective.kl_top_k,
                                                 objective.reference_dtype, finance_domain)
    if not (out / "index.json").exists():
        model = load_causal_lm(inputs.start, inputs.loading)
        import torch

        model.to("cuda" if torch.cuda.is_available() else "cpu")
        precompute_reference(model, inputs.shards, out, objective.kl_top_k, finance_domain, batch_size,
                             objective.reference_dtype)
    return out


def finance_domain_index(dataset: TokenShardDataset) -> int:
    domains = dataset.index["domains"]
    return domains.index("finance") if "finance" in domains else -1


def train_causal_lm(model, tokenizer, section: BaseSection | PretrainSection, inputs: CPTInputs, out_dir: Path,
                    resume: bool, label: str) -> dict:
    """Train ``model`` as ``section`` says, in ``out_dir``, on ``inputs.shards``; returns the metrics."""
    train = section.train
    dataset = shard_dataset(inputs.shards, tokenizer, inputs.seed, label)
    eval_every = getattr(section, "eval_every", None)
    heldout = heldout_datasets(inputs.heldout, tokenizer, train.seq_len, section.eval_max_tokens) if eval_every else {}
    objective = getattr(section, "objective", None)
    self_constraint = objective is not None and objective.type == "self_constraint"
    lora = isinstance(section, PretrainSection) and section.lora.enabled
    model = with_lora(model, section.lora) if lora else model
    common = dict(model=model, train_dataset=dataset, eval_dataset=heldout or None, processing_class=tokenizer,
                  data_collator=collate_blocks(tags=self_constraint))
    if self_constraint:
        finance_domain = finance_domain_index(dataset)
        args = _arguments(SelfConstraintConfig, train, out_dir, inputs, eval_every, bool(heldout),
                          kl_lambda=objective.kl_lambda, kl_direction=objective.kl_direction,
                          kl_top_k=objective.kl_top_k, kl_tail=objective.kl_tail,
                          kl_warmup_steps=objective.kl_warmup_steps, kl_budget=objective.kl_budget,
                          restore_callback_states_from_checkpoint=objective.kl_budget is not None,
                          general_ce_weight=objective.general_ce_weight, finance_domain=finance_domain)
        trainer = SelfConstraintTrainer(args=args, **common, **_reference(
            inputs, objective, finance_domain, train.batch_size, lora))
    else:
        trainer = CPTTrainer(args=_arguments(TrainingArguments, train, out_dir, inputs, eval_every, bool(heldout)),
                             **common)
    metrics = train_and_save(trainer, out_dir, resume, label, inputs.trackers, train)
    metrics["step_time_s"] = round(metrics["train_seconds"] / max(1, metrics["train_steps"] - (metrics["resumed_from_step"] or 0)), 4)
    mix = dataset.index["mix"]["domains"]
    metrics["mix"] = {domain: {"token_share": values["share"], "epochs_in_shards": values["epochs"]}
                      for domain, values in mix.items() if values["blocks"]}
    metrics["objective"] = objective.type if objective else "ce"
    metrics["tokens_seen"] = train.max_steps * train.batch_size * train.grad_accum * train.seq_len
    metrics["shard_epochs"] = round(metrics["tokens_seen"] / dataset.index["tokens"], 3)
    for domain in heldout:
        losses = [entry[f"eval_{domain}_loss"] for entry in trainer.state.log_history if f"eval_{domain}_loss" in entry]
        if losses:
            metrics[f"heldout_{domain}_loss"] = round(losses[-1], 5)
    return metrics


def run_base(section: BaseSection, ctx: RunContext) -> StageResult:
    tokenizer = load_tokenizer(ctx.artifact("data", "tokenizer"))
    model = build_model(ctx.recipe.model.scratch, tokenizer)
    metrics = train_causal_lm(model, tokenizer, section, cpt_inputs(ctx, section.mix, None), ctx.stage_dir,
                              ctx.resume, ctx.stage)
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    metrics["vocab_size"] = len(tokenizer)
    return StageResult(outputs={"model": f"{ctx.stage}/model"}, metrics=metrics)


def run_pretrain(section: PretrainSection, ctx: RunContext) -> StageResult:
    _, model_path = ctx.input_model()
    tokenizer = load_tokenizer(model_path, ctx.recipe.model)
    model = load_trainable(model_path, ctx.recipe.model, quantize=section.lora.quantize, bf16=section.train.bf16)
    metrics = train_causal_lm(model, tokenizer, section, cpt_inputs(ctx, section.mix, model_path), ctx.stage_dir,
                              ctx.resume, ctx.stage)
    return StageResult(outputs={"model": f"{ctx.stage}/model"}, metrics=metrics)


def precompute_for_run(run_dir: Path, recipe, batch_size: int) -> Path:
    """``finloom pretrain precompute-ref``: the reference store the pretrain stage of this run will read."""
    objective = recipe.pretrain.objective
    if objective.type != "self_constraint" or objective.kl_top_k is None:
        raise BadInput("pretrain.objective: precomputing the reference needs type: self_constraint and kl_top_k")
    ctx = RunContext(run_dir, recipe, "pretrain")
    _, model_path = ctx.input_model()
    inputs = cpt_inputs(ctx, recipe.pretrain.mix, model_path)
    return ensure_reference(inputs, objective, finance_domain_index(TokenShardDataset(inputs.shards)), batch_size)
