"""The forgetting experiment's settings: CPT variants at one budget, and the targets they are checked against."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finloom.recipe.base import Section, StageSection, TrainArgs
from finloom.recipe.pretrain import ObjectiveSettings


class ForgettingVariant(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    mix: Literal["pretrain", "finance_only"] = Field(
        "pretrain", description="pretrain: the pretrain stage's mix; finance_only: every token from finance text.")


def _default_variants() -> list[ForgettingVariant]:
    return [
        ForgettingVariant(name="finance_only_ce", objective=ObjectiveSettings(type="ce"), mix="finance_only"),
        ForgettingVariant(name="replay_ce", objective=ObjectiveSettings(type="ce")),
        ForgettingVariant(name="self_constraint_full", objective=ObjectiveSettings()),
        ForgettingVariant(name="self_constraint_top500", objective=ObjectiveSettings(kl_top_k=500)),
    ]


class ForgettingSection(StageSection):
    """The forgetting experiment: CPT variants from the same start model at an equal token budget, each
    evaluated on finance and general held-out perplexity and MCQ. A study: it trains every variant, so it has its
    own recipe (recipes/studies/forgetting.yaml) and `finloom experiment forgetting`."""

    variants: list[ForgettingVariant] = Field(default_factory=_default_variants, min_length=2)
    seeds: int = Field(2, ge=1, le=20, description="Data orders each variant trains with; every number is a mean with "
                                                   "a 95% interval over them (needs 2 or more).")
    train: TrainArgs | None = Field(None, description="Budget and optimiser of every variant; default: pretrain.train.")
    reuse_pretrain: bool = Field(
        True, description="A variant identical to the pretrain stage (objective, mix, budget) reuses its model.")
    general_ppl_tolerance: float = Field(
        0.02, ge=0, description="Target: general PPL at most this much above the start model's (a fall is no forgetting).")
    finance_gain_share: float = Field(
        0.9, ge=0, le=1, description="Target: this share of finance-only CE's finance-PPL reduction.")

    def settings_read(self) -> tuple[str, ...]:
        return ("model", "pretrain", "eval")  # its variants train like pretrain and are evaluated like eval
