"""The ``reward`` stage: TRL's RewardTrainer (Bradley-Terry) on preference pairs, from the SFT model.

A deterministic 10% of pairs is held out; the stage reports the reward model's pairwise accuracy
on them, the number a user checks before trusting the model as a reward.
"""

from __future__ import annotations

import random

from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig, RewardTrainer

from finloom.llm.chat_data import load_preferences
from finloom.llm.chat_template import ensure_chat_template, resize_for_template
from finloom.llm.loading import load_tokenizer, load_trainable
from finloom.recipe import RewardSection
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs

HOLDOUT_SHARE = 0.1


def split_pairs(rows: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = max(1, int(len(rows) * HOLDOUT_SHARE)) if len(rows) >= 10 else 0
    return [rows[i] for i in order[held:]], [rows[i] for i in order[:held]]


def run(section: RewardSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    rows = load_preferences(section.datasets, recipe.resolve, ctx.stage_dir / "rejects.jsonl", "reward")
    train_rows, eval_rows = split_pairs(rows, recipe.seed)
    tokenizer = load_tokenizer(model_path, recipe.model)
    ensure_chat_template(tokenizer, recipe.model.chat_template, recipe.resolve)
    model = load_trainable(model_path, recipe.model, model_class=AutoModelForSequenceClassification, num_labels=1)
    resize_for_template(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    config = RewardConfig(
        **trainer_kwargs(section.train, ctx.stage_dir / "checkpoints", recipe.seed, f"{recipe.name}/reward"),
        max_length=section.train.seq_len,
        per_device_eval_batch_size=section.train.batch_size,
    )
    trainer = RewardTrainer(
        model=model, args=config, processing_class=tokenizer,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
    )
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, "reward", recipe.report_to, section.train)
    if eval_rows:
        evaluation = trainer.evaluate()
        metrics["eval_accuracy"] = round(evaluation.get("eval_accuracy", float("nan")), 4)
        metrics["eval_pairs"] = len(eval_rows)
    metrics["train_pairs"] = len(train_rows)
    return StageResult(outputs={"model": "reward/model"}, metrics=metrics)
