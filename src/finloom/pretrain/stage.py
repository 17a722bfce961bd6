"""The ``base`` and ``pretrain`` stages: causal-LM training with the HF Trainer on the data stage's token shards.

``base`` (from-scratch recipes only) builds a small Llama model around the tokenizer the data stage
trained, and pretrains it on its mix (general text), giving the "general base" later stages start
from. ``pretrain`` continues training on its mix (general + finance; plain cross-entropy for now).
Both stream packed blocks from ``data/shards/<mix>`` and record the mix they saw.
"""

from __future__ import annotations

from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from finloom.data.mixing import TokenShardDataset, tokenizer_hash
from finloom.errors import BadInput
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.llm.scratch import build_model
from finloom.recipe import BaseSection, PretrainSection
from finloom.runner import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def shard_dataset(ctx: RunContext, mix: str, tokenizer) -> TokenShardDataset:
    """The stage's mix, checked to be tokenised with the model's own tokenizer."""
    dataset = TokenShardDataset(ctx.artifact("data", f"shards_{mix}"), seed=ctx.recipe.seed)
    if dataset.index["tokenizer_hash"] != tokenizer_hash(tokenizer):
        raise BadInput(f"{ctx.stage}.mix: the {mix!r} shards were tokenised with another tokenizer than the model's; "
                       "re-run the data stage (finloom run RECIPE --from data)")
    return dataset


def _train_causal_lm(ctx: RunContext, model, tokenizer, section: BaseSection | PretrainSection) -> StageResult:
    train = section.train
    dataset = shard_dataset(ctx, section.mix, tokenizer)
    args = TrainingArguments(**trainer_kwargs(train, ctx.stage_dir / "checkpoints", ctx.recipe.seed))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, ctx.stage)
    mix = dataset.index["mix"]["domains"]
    metrics["mix"] = {domain: {"token_share": values["share"], "epochs_in_shards": values["epochs"]}
                      for domain, values in mix.items() if values["blocks"]}
    metrics["tokens_seen"] = train.max_steps * train.batch_size * train.grad_accum * train.seq_len
    metrics["shard_epochs"] = round(metrics["tokens_seen"] / dataset.index["tokens"], 3)
    return StageResult(outputs={"model": f"{ctx.stage}/model"}, metrics=metrics)


def run_base(section: BaseSection, ctx: RunContext) -> StageResult:
    tokenizer = load_tokenizer(ctx.artifact("data", "tokenizer"))
    model = build_model(ctx.recipe.model.scratch, tokenizer)
    result = _train_causal_lm(ctx, model, tokenizer, section)
    result.metrics["parameters"] = sum(p.numel() for p in model.parameters())
    result.metrics["vocab_size"] = len(tokenizer)
    return result


def run_pretrain(section: PretrainSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    tokenizer = load_tokenizer(model_path, recipe.model.trust_remote_code)
    model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code, recipe.model.dtype)
    return _train_causal_lm(ctx, model, tokenizer, section)
