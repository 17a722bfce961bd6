"""Building blocks of every section: strict sections, stage sections, data sources, training arguments."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STARTER_DATA_DIR = Path(__file__).parents[1] / "starter" / "data"
STARTER_PREFIX = "starter:"


class Section(BaseModel):
    """Unknown keys are errors; infinities and NaN are not numbers a recipe means (``learning_rate: .inf``)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


HUB_PREFIX = "hub:"


class DataPath(Section):
    """Anything a recipe reads from disk (checked at validation, hashed into fingerprints), or from the Hub."""

    path: str

    @property
    def on_hub(self) -> bool:
        """``hub:ORG/NAME``: a Hugging Face dataset, read only when the machine is online (the user's choice)."""
        return self.path.startswith(HUB_PREFIX)


class Source(DataPath):
    """One input: a file (JSONL, Parquet, text, HTML, PDF) or a folder of them (format from each suffix)."""

    format: Literal["auto", "jsonl", "parquet", "text", "html", "pdf"] = "auto"
    text_field: str = "text"
    tag: str | None = Field(None, description="Source tag kept in each document's metadata (default: the file name).")
    lang: str | None = Field(None, description="Declared language, kept as metadata; language id still runs.")


class GradientCheckpointing(Section):
    """One checkpoint per k consecutive decoder layers: memory ~ h*L/k + k*h*n (L layers, n activations per
    layer), least at k = sqrt(L / n) (Baichuan Alignment). ``auto`` computes that k from the model's shape."""

    every_k_layers: int | Literal["auto"] = Field("auto", description="Layers per checkpoint (1: per layer, as "
                                                                       "transformers does); auto: sqrt(L / n).")

    @field_validator("every_k_layers")
    @classmethod
    def _positive(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("must be at least 1 (or auto)")
        return value


class LoraSettings(Section):
    """Train LoRA adapters (PEFT) instead of every weight; the adapters are merged into the saved model."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    quantize: Literal["none", "nf4", "int8"] = Field(
        "none", description="Hold the frozen base quantised while the adapters train (bitsandbytes): nf4 is QLoRA "
                            "(4-bit NormalFloat, double quantisation), int8 is LLM.int8. The saved model is the "
                            "adapters merged into the full-precision base.")

    @model_validator(mode="after")
    def _quantize_needs_adapters(self) -> "LoraSettings":
        if self.quantize != "none" and not self.enabled:
            raise ValueError(f"quantize: {self.quantize} quantises the frozen base under LoRA adapters; "
                             "set enabled: true (a quantised model cannot be trained whole)")
        return self


class TrainArgs(Section):
    """Optimisation settings shared by every training stage (mapped onto HF TrainingArguments)."""

    max_steps: int = Field(100, ge=1, le=10**8, description="Optimiser steps (at most 100 million).")
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, ge=1, le=2**16, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1, le=2**16)
    seq_len: int = Field(256, ge=8, le=2**20, description="Tokens per training sequence.")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "warmup_stable_decay"] = "cosine"
    decay_steps: int | None = Field(None, ge=1, description="warmup_stable_decay: steps of the final decay "
                                                             "(default: 10% of max_steps).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (resume point).")
    logging_steps: int = Field(5, ge=1)
    bf16: bool = False
    gradient_checkpointing: bool | GradientCheckpointing = Field(
        False, description="true: one checkpoint per layer; {every_k_layers: k | auto}: one per k layers.")

    def checkpoint_group(self) -> int | str | None:
        """Layers per gradient checkpoint (``auto`` for the sqrt rule), or None when checkpointing is off."""
        if isinstance(self.gradient_checkpointing, GradientCheckpointing):
            return self.gradient_checkpointing.every_k_layers
        return 1 if self.gradient_checkpointing else None


class StageSection(Section):
    """A stage's section. A stage runs when its section is in the recipe (``enabled: false`` turns it off);
    a section left out is off, except the report's."""

    enabled: bool = True

    def needs_model(self) -> bool:
        """Whether this stage, as configured, needs the recipe's model section."""
        return True

    def settings_read(self) -> tuple[str, ...]:
        """Other parts of the recipe this stage reads as configured (dotted paths); they enter its fingerprint."""
        return ("model",)

    def stages_read(self) -> tuple[str, ...]:
        """Stages this stage reads because of how it is configured, beyond those the catalogue gives it."""
        return ()


class ChatSource(DataPath):
    """Conversations or preference pairs: a JSONL, JSON (an array) or Parquet file, a folder written by
    ``datasets.save_to_disk``, or ``hub:ORG/NAME``; in the layout ``format`` names (auto: from the fields)."""

    format: Literal["auto", "messages", "sharegpt", "alpaca"] = Field(
        "auto", description="messages (OpenAI / TRL), sharegpt (conversations: from / value), alpaca (instruction, "
                            "input, output, history); auto: from each record's fields.")
    split: str = Field("train", description="The split of a Hub dataset or a saved DatasetDict.")
    name: str | None = Field(None, description="A Hub dataset's configuration.")


class ChatDataSection(StageSection):
    datasets: list[ChatSource] = Field(default_factory=list)
    datasets_required: ClassVar[bool] = True
    """False where another stage can supply the data (the recipe checks it then: sft from prompts)."""

    @model_validator(mode="after")
    def _datasets_when_enabled(self) -> "ChatDataSection":
        if self.enabled and not self.datasets and self.datasets_required:
            raise ValueError("datasets: at least one source is required while the stage is enabled")
        return self


