"""The ``base`` and ``pretrain`` stages' settings: the CPT objective (domain self-constraint), LoRA, training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import LoraSettings, Section, StageSection, TrainArgs


class BaseSection(StageSection):
    """Pretrain a from-scratch model on the general corpus to obtain a 'general base'."""

    mix: str = Field("base", description="The data.mix.mixes entry this stage trains on.")
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=200, learning_rate=1e-3))


class ObjectiveSettings(Section):
    """The CPT loss. ``self_constraint``: CE on finance tokens, lambda * KL to the frozen start model on general
    tokens (Baichuan4-Finance's domain self-constraint). ``ce``: plain next-token CE on every token (replay)."""

    type: Literal["self_constraint", "ce"] = "self_constraint"
    kl_lambda: float = Field(1.0, ge=0, description="Weight of the per-token KL on general text.")
    kl_direction: Literal["reverse", "forward"] = Field(
        "reverse", description="reverse: KL(p_theta || p_ref), as Baichuan-M2 writes it; forward: KL(p_ref || p_theta).")
    kl_top_k: int | None = Field(
        None, ge=1, description="KL over the reference's top-k tokens, renormalised (Baichuan Alignment uses 500); "
                                "null: the full vocabulary.")
    kl_tail: bool = Field(
        True, description="With kl_top_k: k + 1 buckets, the last one all probability outside the reference's top k, "
                          "so mass leaving the top k costs KL; false: renormalised over the top k (Baichuan "
                          "Alignment's GRPO form), which lets it leave unpenalised.")
    kl_warmup_steps: int = Field(0, ge=0, description="Lambda rises linearly from 0 over these steps.")
    kl_budget: float | None = Field(
        None, gt=0, description="Set lambda from a KL budget instead (nats per general token; a 2% general-perplexity "
                                "budget is about 0.013): kl_lambda is where it starts, and it follows the measured KL.")
    general_ce_weight: float = Field(0.0, ge=0, description="Optional plain CE on general tokens, added to the KL.")
    reference: Literal["online", "precomputed"] = Field(
        "online", description="online: a frozen copy of the start model; precomputed: top-k log-probs written once by "
                              "`finloom pretrain precompute-ref` (needs kl_top_k), so training holds one model.")
    reference_device: Literal["same", "cpu"] = Field("same", description="online: where the frozen copy lives.")
    reference_dtype: Literal["float16", "float32"] = Field("float16", description="precomputed: stored log-prob type.")

    @model_validator(mode="after")
    def _precomputed_needs_top_k(self) -> "ObjectiveSettings":
        if self.type == "self_constraint" and self.reference == "precomputed" and self.kl_top_k is None:
            raise ValueError("reference: precomputed stores the reference's top-k log-probs; set kl_top_k")
        return self


class PretrainSection(StageSection):
    """Continual pre-training on the general + finance mix."""

    mix: str = Field("pretrain", description="The data.mix.mixes entry this stage trains on.")
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    eval_every: int | None = Field(
        50, ge=1, description="Held-out finance and general loss every N steps (TensorBoard), so forgetting is visible "
                              "while it happens; null: off.")
    eval_max_tokens: int = Field(8192, ge=64, description="Held-out tokens per domain at each of those evaluations.")
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=100, learning_rate=5e-4))


