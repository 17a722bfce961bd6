"""The ``base`` and ``pretrain`` stages: causal-LM training with the HF Trainer.

``base`` (from-scratch recipes only) trains the tokenizer on the recipe's corpus, builds a small
Llama model and pretrains it on general text, giving the "general base" later stages start from.
``pretrain`` continues training on the general + finance mix (plain cross-entropy for now).
"""

from __future__ import annotations

from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.llm.scratch import END_OF_TEXT, build_model, train_tokenizer
from finloom.pretrain.blocks import mix_blocks, read_texts, token_blocks
from finloom.recipe import BaseSection, PretrainSection, TrainArgs
from finloom.runner import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def _train_causal_lm(ctx: RunContext, model, tokenizer, train: TrainArgs, shares: dict[str, float]) -> StageResult:
    separator = tokenizer.convert_tokens_to_ids(END_OF_TEXT) if END_OF_TEXT in tokenizer.get_vocab() else tokenizer.eos_token_id
    blocks = {
        domain: token_blocks(read_texts(ctx.artifact("data", domain)), tokenizer, train.seq_len, separator)
        for domain, share in shares.items() if share > 0
    }
    total = train.max_steps * train.batch_size * train.grad_accum
    rows, realised = mix_blocks(blocks, {d: s for d, s in shares.items() if s > 0}, total, ctx.recipe.seed)
    dataset = Dataset.from_list([{"input_ids": row["input_ids"]} for row in rows])
    args = TrainingArguments(**trainer_kwargs(train, ctx.stage_dir / "checkpoints", ctx.recipe.seed))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, ctx.stage)
    metrics["mix"] = realised
    metrics["tokens_seen"] = total * train.seq_len
    return StageResult(outputs={"model": f"{ctx.stage}/model"}, metrics=metrics)


def run_base(section: BaseSection, ctx: RunContext) -> StageResult:
    spec = ctx.recipe.model.scratch
    tokenizer_dir = ctx.stage_dir / "tokenizer"
    if ctx.resume and tokenizer_dir.exists():
        tokenizer = load_tokenizer(tokenizer_dir)
    else:
        texts, budget = [], spec.tokenizer_max_chars
        for domain in ("general", "finance"):
            for text in read_texts(ctx.artifact("data", domain)):
                if budget <= 0:
                    break
                texts.append(text[:budget])
                budget -= len(text)
        tokenizer = train_tokenizer(texts, spec.vocab_size)
        tokenizer.save_pretrained(str(tokenizer_dir))
    model = build_model(spec, tokenizer)
    result = _train_causal_lm(ctx, model, tokenizer, section.train, {"general": 1.0})
    result.metrics["parameters"] = sum(p.numel() for p in model.parameters())
    result.metrics["vocab_size"] = len(tokenizer)
    return result


def run_pretrain(section: PretrainSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    tokenizer = load_tokenizer(model_path, recipe.model.trust_remote_code)
    model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code, recipe.model.dtype)
    shares = {"finance": section.finance_ratio, "general": 1.0 - section.finance_ratio}
    return _train_causal_lm(ctx, model, tokenizer, section.train, shares)

