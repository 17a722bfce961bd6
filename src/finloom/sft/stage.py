"""The ``sft`` stage: TRL's SFTTrainer on conversations, loss on assistant tokens only, for any chat template.

The conversations are tokenized here with their assistant-only labels (``finloom.llm.chat_template``):
the assistant turns are found from the template itself, so Llama-3-, Qwen-, Mistral- and ChatML-style
templates all work, with or without ``{% generation %}`` markers, and a base model without a template
gets the ``plain`` default. The template is saved with the model; its end-of-turn token joins the
generation config's EOS ids.
"""

from __future__ import annotations

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from finloom.llm.chat_data import load_conversations
from finloom.llm.chat_template import (
    ensure_chat_template,
    resize_for_template,
    stop_at_end_of_turn,
    tokenize_with_assistant_mask,
)
from finloom.llm.loading import load_tokenizer, load_trainable
from finloom.recipe import ChatSource, SFTSection
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def run(section: SFTSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    tokenizer = load_tokenizer(model_path, recipe.model)
    template = ensure_chat_template(tokenizer, recipe.model.chat_template, recipe.resolve)
    datasets = list(section.datasets)
    if recipe.prompts.enabled:  # the set the prompt system built
        datasets.append(ChatSource(path=str(ctx.artifact("prompts", "sft")), format="messages"))
    rows = load_conversations(
        datasets, recipe.resolve, ctx.stage_dir / "rejects.jsonl", "sft",
        prepare=lambda row: tokenize_with_assistant_mask(tokenizer, row["messages"], section.train.seq_len))
    model = load_trainable(model_path, recipe.model)
    resize_for_template(model, tokenizer)
    stop_at_end_of_turn(model, tokenizer)
    config = SFTConfig(
        **trainer_kwargs(section.train, ctx.stage_dir / "checkpoints", recipe.seed, f"{recipe.name}/sft"),
        max_length=section.train.seq_len,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, "sft", recipe.report_to)
    labels = [label for row in rows for label in row["labels"]]
    metrics.update(conversations=len(rows), chat_template=template,
                   assistant_token_share=round(sum(label != -100 for label in labels) / max(1, len(labels)), 4))
    return StageResult(outputs={"model": "sft/model"}, metrics=metrics)
