"""The ``align`` stage: TRL's DPOTrainer on preference pairs, policy and reference both the SFT model."""

from __future__ import annotations

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from finloom.llm.chat_data import load_preferences
from finloom.llm.chat_template import ensure_chat_template, resize_for_template, stop_at_end_of_turn
from finloom.llm.loading import load_causal_lm, load_tokenizer, load_trainable
from finloom.recipe import AlignSection
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def run(section: AlignSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    rows = load_preferences(section.datasets, recipe.resolve, ctx.stage_dir / "rejects.jsonl", "align")
    tokenizer = load_tokenizer(model_path, recipe.model)
    ensure_chat_template(tokenizer, recipe.model.chat_template, recipe.resolve)
    config = DPOConfig(
        **trainer_kwargs(section.train, ctx.stage_dir / "checkpoints", recipe.seed, f"{recipe.name}/align"),
        beta=section.dpo.beta,
        loss_type=section.dpo.loss_type,
        max_length=section.train.seq_len,
    )
    policy, reference = load_trainable(model_path, recipe.model), load_causal_lm(model_path, recipe.model)
    for model in (policy, reference):
        resize_for_template(model, tokenizer)
    stop_at_end_of_turn(policy, tokenizer)
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, "align", recipe.report_to, section.train)
    logged = [entry for entry in trainer.state.log_history if "rewards/accuracies" in entry]
    if logged:
        metrics["reward_accuracy"] = round(logged[-1]["rewards/accuracies"], 4)
        metrics["reward_margin"] = round(logged[-1]["rewards/margins"], 4)
    metrics["pairs"] = len(rows)
    return StageResult(outputs={"model": "align/model"}, metrics=metrics)
