"""The ``sft`` stage: TRL's SFTTrainer on conversations, loss on assistant tokens only, for any chat template.

The conversations are tokenized here with their assistant-only labels (``finloom.llm.chat_template``):
the assistant turns are found from the template itself, so Llama-3-, Qwen-, Mistral- and ChatML-style
templates all work, with or without ``{% generation %}`` markers, and a base model without a template
gets the ``plain`` default. The template is saved with the model; its end-of-turn token joins the
generation config's EOS ids.

With ``packing`` (the default) the conversations are packed into ``seq_len`` rows in which each sample
attends only to itself (``finloom.sft.packing``), so the loss is the unpacked loss without the padding;
the manifest records the token utilisation of the packed batches beside what unpadded batches would give.
"""

from __future__ import annotations

from pathlib import Path

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
from finloom.recipe import ChatSource, PASSection, SFTSection
from finloom.sft.packing import (
    PackedCollator,
    pack_rows,
    packed_utilisation,
    padded_utilisation,
    uses_varlen_attention,
)
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs, with_lora


def run(section: SFTSection, ctx: RunContext) -> StageResult:
    datasets = list(section.datasets)
    if ctx.recipe.prompts.enabled:  # the set the prompt system built
        datasets.append(ChatSource(path=str(ctx.artifact("prompts", "sft")), format="messages"))
    _, model_path = ctx.input_model()
    metrics = train_on_conversations(ctx, model_path, datasets, section, ctx.stage_dir / "rejects.jsonl")
    return StageResult(outputs={"model": "sft/model"}, metrics=metrics)


def train_on_conversations(ctx: RunContext, model_path, datasets: list[ChatSource], section: SFTSection | PASSection,
                           rejects: Path) -> dict:
    """Fine-tune ``model_path`` on ``datasets`` into STAGE/model with the settings of ``section`` (train, packing,
    lora): the SFT stage's trainer, which the PAS model trains with too. Returns the metrics."""
    recipe = ctx.recipe
    tokenizer = load_tokenizer(model_path, recipe.model)
    template = ensure_chat_template(tokenizer, recipe.model.chat_template, recipe.resolve)
    rows = load_conversations(
        datasets, recipe.resolve, rejects, ctx.stage,
        prepare=lambda row: tokenize_with_assistant_mask(tokenizer, row["messages"], section.train.seq_len))
    model = load_trainable(model_path, recipe.model, quantize=section.lora.quantize, bf16=section.train.bf16)
    resize_for_template(model, tokenizer)
    stop_at_end_of_turn(model, tokenizer)
    model.config.use_cache = False  # with a cache, transformers would not read packed position ids
    train = section.train
    config = SFTConfig(
        **trainer_kwargs(train, ctx.stage_dir / "checkpoints", recipe.seed, f"{recipe.name}/{ctx.stage}"),
        max_length=train.seq_len,
        dataset_num_proc=None,
        packing=False,  # packed here, by TRL's packer, with a collator that keeps rows apart (see sft.packing)
    )
    lengths = [len(row["input_ids"]) for row in rows]
    utilisation = {"unpacked": padded_utilisation(lengths, train.batch_size)}
    if section.packing:
        dataset = pack_rows(rows, train.seq_len)
        utilisation["packed"] = packed_utilisation([sum(n) for n in dataset["seq_lengths"]], train.seq_len)
        collator = PackedCollator(tokenizer.pad_token_id, flatten=uses_varlen_attention(model))
    else:
        dataset, collator = Dataset.from_list(rows), None
    trainer = SFTTrainer(model=with_lora(model, section.lora), args=config, train_dataset=dataset,
                         processing_class=tokenizer, data_collator=collator)
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, ctx.stage, recipe.report_to, train)
    labels = [label for row in rows for label in row["labels"]]
    metrics.update(conversations=len(rows), chat_template=template, packing=section.packing,
                   packed_rows=len(dataset) if section.packing else None, token_utilisation=utilisation,
                   assistant_token_share=round(sum(label != -100 for label in labels) / max(1, len(labels)), 4))
    return metrics
