"""The ``base`` and ``pretrain`` stages: causal-LM training with the HF Trainer on the data stage's token shards.

``base`` (from-scratch recipes only) builds a small Llama model around the tokenizer the data stage
trained, and pretrains it with plain CE on its mix (general text): the "general base". ``pretrain``
continues from the newest model on its mix with the recipe's objective: domain self-constraint
(``SelfConstraintTrainer``: CE on finance, KL to the frozen start model on general text) or plain
CE (replay), optionally through LoRA. Both stream packed blocks from ``data/shards/<mix>``, evaluate
held-out finance and general loss every ``eval_every`` steps, and log to TensorBoard.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import TrainingArguments

from finloom.data.mixing import TokenShardDataset, collate_blocks, default_separator_id, tokenizer_hash
from finloom.errors import BadInput
from finloom.eval.perplexity import token_blocks
from finloom.files import iter_texts
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.llm.scratch import build_model
from finloom.pretrain.reference import PrecomputedReference, precompute_reference, reference_key
from finloom.pretrain.self_constraint import CPTTrainer, SelfConstraintConfig, SelfConstraintTrainer
from finloom.recipe import BaseSection, ObjectiveSettings, PretrainSection, TrainArgs
from finloom.runner import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def shard_dataset(ctx: RunContext, mix: str, tokenizer, shard_dir: Path | None = None) -> TokenShardDataset:
    """The stage's mix (or the shards in ``shard_dir``), checked to be tokenised with the model's own tokenizer."""
    dataset = TokenShardDataset(shard_dir or ctx.artifact("data", f"shards_{mix}"), seed=ctx.recipe.seed)
    if dataset.index["tokenizer_hash"] != tokenizer_hash(tokenizer):
        raise BadInput(f"{ctx.stage}.mix: the {mix!r} shards were tokenised with another tokenizer than the model's; "
                       "re-run the data stage (finloom run RECIPE --from data)")
    return dataset


def heldout_datasets(ctx: RunContext, tokenizer, seq_len: int, max_tokens: int) -> dict[str, Dataset]:
    """Held-out finance and general blocks for evaluation during training (as many as the data stage kept)."""
    outputs = ctx.manifest("data")["outputs"]
    separator = default_separator_id(tokenizer)
    datasets = {}
    for domain in ("finance", "general"):
        if f"{domain}_heldout" in outputs:
            blocks = token_blocks(list(iter_texts(ctx.run_dir / outputs[f"{domain}_heldout"])), tokenizer, seq_len,
                                  separator)[: max(1, max_tokens // seq_len)]
            if blocks:
                datasets[domain] = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    return datasets


def _arguments(config_class, train: TrainArgs, ctx: RunContext, eval_every: int | None, evaluate: bool, **extra):
    kwargs = trainer_kwargs(train, ctx.stage_dir / "checkpoints", ctx.recipe.seed)
    if eval_every and evaluate:
        kwargs.update(eval_strategy="steps", eval_steps=eval_every, per_device_eval_batch_size=train.batch_size,
                      eval_on_start=True)  # the curve starts at the start model
    return config_class(**kwargs, **extra)


def _with_lora(model, section: PretrainSection):
    if not section.lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    lora = section.lora
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, task_type="CAUSAL_LM"))


def _reference(ctx: RunContext, objective: ObjectiveSettings, model_path, dataset: TokenShardDataset,
               finance_domain: int, batch_size: int, lora: bool) -> dict:
    """What supplies p_ref: a precomputed store, a frozen copy of the start model, or (LoRA) the adapters switched off."""
    recipe = ctx.recipe
    if objective.reference == "precomputed":
        return {"reference": PrecomputedReference(ensure_reference(ctx, objective, model_path, dataset.shard_dir,
                                                                   finance_domain, batch_size))}
    if lora:
        return {}
    ref_model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code, recipe.model.dtype)
    if objective.reference_device == "same":
        import torch

        ref_model.to("cuda" if torch.cuda.is_available() else "cpu")
    return {"ref_model": ref_model}


def ensure_reference(ctx: RunContext, objective: ObjectiveSettings, model_path, shard_dir: Path, finance_domain: int,
                     batch_size: int) -> Path:
    """The top-k store for this start model, mix and k, computed now if no earlier run left it."""
    out = ctx.run_dir / "reference" / reference_key(Path(model_path), shard_dir, objective.kl_top_k,
                                                   objective.reference_dtype, finance_domain)
    if not (out / "index.json").exists():
        recipe = ctx.recipe
        model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code, recipe.model.dtype)
        import torch

        model.to("cuda" if torch.cuda.is_available() else "cpu")
        precompute_reference(model, shard_dir, out, objective.kl_top_k, finance_domain, batch_size,
                             objective.reference_dtype)
    return out


def train_causal_lm(ctx: RunContext, model, tokenizer, section: BaseSection | PretrainSection, model_path=None,
                    shard_dir: Path | None = None) -> StageResult:
    """Train ``model`` as ``section`` says, in ``ctx.stage_dir``, on its mix (or ``shard_dir``)."""
    train = section.train
    dataset = shard_dataset(ctx, section.mix, tokenizer, shard_dir)
    eval_every = getattr(section, "eval_every", None)
    heldout = heldout_datasets(ctx, tokenizer, train.seq_len, getattr(section, "eval_max_tokens", 8192)) if eval_every else {}
    objective = getattr(section, "objective", None)
    self_constraint = objective is not None and objective.type == "self_constraint"
    lora = isinstance(section, PretrainSection) and section.lora.enabled
    model = _with_lora(model, section) if isinstance(section, PretrainSection) else model
    common = dict(model=model, train_dataset=dataset, eval_dataset=heldout or None, processing_class=tokenizer,
                  data_collator=collate_blocks(tags=self_constraint))
    if self_constraint:
        domains = dataset.index["domains"]
        finance_domain = domains.index("finance") if "finance" in domains else -1
        args = _arguments(SelfConstraintConfig, train, ctx, eval_every, bool(heldout),
                          kl_lambda=objective.kl_lambda, kl_direction=objective.kl_direction,
                          kl_top_k=objective.kl_top_k, kl_warmup_steps=objective.kl_warmup_steps,
                          general_ce_weight=objective.general_ce_weight, finance_domain=finance_domain)
        trainer = SelfConstraintTrainer(args=args, **common, **_reference(
            ctx, objective, model_path, dataset, finance_domain, train.batch_size, lora))
    else:
        trainer = CPTTrainer(args=_arguments(TrainingArguments, train, ctx, eval_every, bool(heldout)), **common)
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, ctx.stage)
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
    return StageResult(outputs={"model": f"{ctx.stage}/model"}, metrics=metrics)


def run_base(section: BaseSection, ctx: RunContext) -> StageResult:
    tokenizer = load_tokenizer(ctx.artifact("data", "tokenizer"))
    model = build_model(ctx.recipe.model.scratch, tokenizer)
    result = train_causal_lm(ctx, model, tokenizer, section)
    result.metrics["parameters"] = sum(p.numel() for p in model.parameters())
    result.metrics["vocab_size"] = len(tokenizer)
    return result


def run_pretrain(section: PretrainSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    tokenizer = load_tokenizer(model_path, recipe.model.trust_remote_code)
    model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code, recipe.model.dtype)
    return train_causal_lm(ctx, model, tokenizer, section, model_path)


def precompute_for_run(runner, batch_size: int) -> Path:
    """``finloom pretrain precompute-ref``: the reference store the pretrain stage of this run will read."""
    recipe = runner.recipe
    objective = recipe.pretrain.objective
    if objective.type != "self_constraint" or objective.kl_top_k is None:
        raise BadInput("pretrain.objective: precomputing the reference needs type: self_constraint and kl_top_k")
    ctx = RunContext(runner.run_dir, recipe, "pretrain")
    _, model_path = ctx.input_model()
    shard_dir = ctx.artifact("data", f"shards_{recipe.pretrain.mix}")
    domains = TokenShardDataset(shard_dir).index["domains"]
    finance_domain = domains.index("finance") if "finance" in domains else -1
    return ensure_reference(ctx, objective, model_path, shard_dir, finance_domain, batch_size)
