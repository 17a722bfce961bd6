"""The ``sft`` stage: TRL's SFTTrainer on conversations, loss on assistant tokens only."""

from __future__ import annotations

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from finloom.llm.chat_data import load_conversations
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.recipe import SFTSection
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def run(section: SFTSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    rows = load_conversations(section.datasets, recipe.resolve, ctx.stage_dir / "rejects.jsonl", "sft")
    tokenizer = load_tokenizer(model_path, recipe.model)
    model = load_causal_lm(model_path, recipe.model)
    config = SFTConfig(
        **trainer_kwargs(section.train, ctx.stage_dir / "checkpoints", recipe.seed),
        max_length=section.train.seq_len,
        assistant_only_loss=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, "sft")
    metrics["conversations"] = len(rows)
    return StageResult(outputs={"model": "sft/model"}, metrics=metrics)
