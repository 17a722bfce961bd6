"""The chat stages' settings: ``sft``, ``reward`` and ``align``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from finloom.recipe.base import ChatDataSection, LoraSettings, Section, TrainArgs


class SFTSection(ChatDataSection):
    """Supervised fine-tuning on conversations; loss on assistant tokens only. With the prompts stage enabled it
    trains on the set that stage built, plus ``datasets`` if any."""

    datasets_required: ClassVar[bool] = False

    packing: bool = Field(True, description="Pack conversations into train.seq_len rows (best-fit decreasing), "
                                            "each attending only to itself: the same loss as unpacked, without the "
                                            "padding.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=100, learning_rate=1e-5))


class RewardSection(ChatDataSection):
    """Scalar reward model on chosen/rejected pairs, initialised from the SFT model."""

    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=50, learning_rate=1e-5))


class DPOArgs(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference (SFT) model.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"


class AlignSection(ChatDataSection):
    """Preference alignment of the SFT model."""

    method: Literal["dpo"] = "dpo"
    dpo: DPOArgs = Field(default_factory=DPOArgs)
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=50, learning_rate=5e-6))


