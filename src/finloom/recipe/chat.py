"""The chat stages' settings: ``sft`` and ``reward`` (``align`` has its own module)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from finloom.recipe.base import ChatDataSection, LoraSettings, TrainArgs


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
    """Scalar reward model on chosen/rejected pairs, initialised from the SFT model: Bradley-Terry plus
    ``score_alpha`` times the squared error of both rewards to the pair's absolute scores, where it has them. With
    the prefs stage enabled it trains on that stage's pairs too (scores already in [0, 1])."""

    datasets_required: ClassVar[bool] = False

    score_alpha: float = Field(1.0, ge=0, description="Weight of the squared error to the absolute scores (0: "
                                                      "Bradley-Terry alone). Pairs without scores get none.")
    score_range: tuple[float, float] = Field((0.0, 1.0), description="The scale of score_chosen / score_rejected "
                                                                     "in the data, mapped to [0, 1] (e.g. [1, 10] "
                                                                     "for UltraFeedback).")
    holdout: float = Field(0.1, ge=0, lt=1, description="Share of pairs held out for accuracy and calibration.")
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=50, learning_rate=1e-5))

    @model_validator(mode="after")
    def _range_ordered(self) -> "RewardSection":
        low, high = self.score_range
        if not low < high:
            raise ValueError(f"score_range: [{low}, {high}] must go from low to high")
        return self
