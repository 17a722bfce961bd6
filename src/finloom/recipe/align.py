"""The ``align`` stage's settings: one stage, one method at a time (``grpo``, ``ppo``, ``dpo``, ``kto``).

GRPO is the default, as in Baichuan Alignment: sampled groups scored by the reward combination (verifiable
checks, a reward model, the finance rubric), the KL to the pre-RL model inside the per-token reward, exact over
the reference's top-k tokens, and a KL on SFT data (gamma) in place of the pre-training loss. PPO, the report's
baseline, is the same loop with a value head and GAE. DPO and KTO train on preference data instead. Values the
reports leave out are defaults here, each described where it is set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from finloom.recipe.base import ChatDataSection, ChatSource, Section, TrainArgs

REWARD_COMPONENTS = ("format", "mcq", "calculation", "constraints", "rm", "rubric")
"""What a sampled answer can be scored on: finloom.grading.rewards' verifiable checks, a reward model, the rubric."""


class DPOArgs(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference (SFT) model.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"


class KTOArgs(Section):
    """TRL's KTOTrainer on unpaired answers labelled good or bad: records with ``completion`` and ``label``, or
    preference pairs split into a good chosen and a bad rejected answer."""

    beta: float = Field(0.1, gt=0, description="Strength of the KL to the reference (SFT) model.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of good answers.")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of bad answers.")


class RewardWeights(Section):
    """Weights of the reward components; a sample is scored on the weighted mean of the components it has (a
    prompt without an option-letter answer has no ``mcq``), every component logged per sample."""

    format: float = Field(0.2, ge=0, description="The answer has the shape its task needs.")
    mcq: float = Field(1.0, ge=0, description="Option letters equal the answer's set.")
    calculation: float = Field(1.0, ge=0, description="The final number within tolerance, in the expected unit.")
    constraints: float = Field(1.0, ge=0, description="Share of the prompt's rule-checked constraints met.")
    rm: float = Field(0.0, ge=0, description="The reward model's score, squashed to (0, 1) by a sigmoid.")
    rubric: float = Field(0.0, ge=0, description="The finance rubric judged by the teacher (prompts with weights).")

    @model_validator(mode="after")
    def _some_weight(self) -> "RewardWeights":
        if not any(getattr(self, name) for name in REWARD_COMPONENTS):
            raise ValueError("at least one component needs a weight above 0")
        return self


class Reweighting(Section):
    """Per-category evaluation during RL and re-weighting of the prompt sampler toward weak categories.

    Every ``eval_every`` steps the policy answers held-out prompts of each category greedily; a category's
    sampling weight becomes its share in the training prompts times exp(strength x max(0, target - score)),
    floored at ``min_share`` after normalising (the report gives no rule; this one is smooth and never starves a
    category)."""

    enabled: bool = True
    eval_every: int = Field(10, ge=1, description="Optimiser steps between evaluations.")
    holdout: float = Field(0.1, gt=0, lt=1, description="Share of each category's prompts held out for it.")
    max_prompts: int = Field(16, ge=1, description="Held-out prompts evaluated per category.")
    target: float | dict[str, float] = Field(0.8, description="Reward a category should reach (one for all, or "
                                                               "per category; unnamed categories get 0.8).")
    strength: float = Field(2.0, ge=0, description="How hard a shortfall pulls the sampler toward a category.")
    min_share: float = Field(0.05, ge=0, lt=1, description="No category's share drops below this.")

    @field_validator("target")
    @classmethod
    def _in_unit_range(cls, value):
        for name, target in (value.items() if isinstance(value, dict) else [("target", value)]):
            if not 0 <= target <= 1:
                raise ValueError(f"{name}: {target} is not a reward in [0, 1]")
        return value

    def target_for(self, category: str) -> float:
        return self.target.get(category, 0.8) if isinstance(self.target, dict) else self.target


class GRPOArgs(Section):
    """GRPO on TRL's GRPOTrainer, with Baichuan Alignment's changes (``finloom.align.grpo``)."""

    group_size: int = Field(3, ge=2, le=64, description="Answers sampled per prompt (the report uses 3).")
    beta: float = Field(0.05, ge=0, description="Weight of the per-token KL to the pre-RL model in the reward.")
    top_k: int = Field(500, ge=1, description="The KL runs over the reference's top-k tokens, both distributions "
                                              "renormalised there; k >= vocabulary gives the full KL.")
    gamma: float = Field(0.1, ge=0, description="Weight of the KL to the pre-RL model on SFT data, replacing the "
                                                "pre-training (PTX) loss; 0 turns it off.")
    sft_datasets: list[ChatSource] = Field(default_factory=list, description="Conversations for the gamma term "
                                                                             "(default: what the sft stage trained "
                                                                             "on).")
    sft_batch_size: int | None = Field(None, ge=1, description="Conversations per micro-batch for the gamma term "
                                                               "(default: train.batch_size); it costs a forward of "
                                                               "policy and reference on them per micro-batch.")
    max_completion_tokens: int = Field(64, ge=1, le=32768)
    temperature: float = Field(1.0, gt=0, le=2)
    rewards: RewardWeights = Field(default_factory=RewardWeights)
    partial_credit: float = Field(0.0, ge=0, le=1, description="MCQ: credit for naming only correct letters, "
                                                               "times their share.")
    tolerance: float = Field(0.005, ge=0, description="Calculation: relative tolerance (a prompt's own wins).")
    reward_model: str | None = Field(None, description="stage:reward, a reward-model directory or a finloom serve "
                                                       "URL (default: stage:reward when rewards.rm > 0).")
    reweighting: Reweighting = Field(default_factory=Reweighting)
    vllm: Literal["auto", "on", "off"] = Field("auto", description="Sample through vLLM colocated on the training "
                                                                  "GPU (auto: when a GPU and vLLM are present); "
                                                                  "else HF generate.")

    def reward_model_source(self) -> str | None:
        if not self.rewards.rm:
            return None
        return self.reward_model or "stage:reward"


class PPOArgs(Section):
    """PPO as the report's baseline: the grpo settings (sampling, rewards, KL) plus a value head and GAE."""

    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE's lambda (gamma is 1).")
    value_coef: float = Field(0.1, ge=0, description="Weight of the value head's loss.")
    value_clip: float = Field(0.2, gt=0, description="How far a value may move from its rollout estimate.")


class AlignSection(ChatDataSection):
    """Alignment of the SFT model. ``datasets``: for grpo, prompts (chat records ending with a user turn, with the
    task fields the verifiable rewards read: answer, valid, expected, unit, tolerance, checks, category; ppo
    reads them too, with the grpo settings); for dpo
    and kto, preference pairs (kto also takes unpaired ``completion`` + ``label`` records)."""

    method: Literal["grpo", "ppo", "dpo", "kto"] = "grpo"
    grpo: GRPOArgs = Field(default_factory=GRPOArgs)
    ppo: PPOArgs = Field(default_factory=PPOArgs)
    dpo: DPOArgs = Field(default_factory=DPOArgs)
    kto: KTOArgs = Field(default_factory=KTOArgs)
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=50, learning_rate=5e-6, batch_size=6),
                             description="batch_size: answers per device and step (for grpo: whole groups).")

    @model_validator(mode="after")
    def _whole_groups(self) -> "AlignSection":
        rows = self.train.batch_size * self.train.grad_accum
        if self.online and rows % self.grpo.group_size:
            raise ValueError(f"train.batch_size x train.grad_accum ({rows}) must be a multiple of grpo.group_size "
                             f"({self.grpo.group_size}): every prompt's answers are scored together")
        return self

    @property
    def online(self) -> bool:
        """Sampling its own answers (grpo, ppo), with the grpo settings."""
        return self.method in ("grpo", "ppo")

    def _grpo_reads_sft(self) -> bool:
        return self.online and self.grpo.gamma > 0 and not self.grpo.sft_datasets

    def stages_read(self) -> tuple[str, ...]:
        reads = []
        if self.online and self.grpo.reward_model_source() == "stage:reward":
            reads.append("reward")
        if self._grpo_reads_sft():
            reads.append("prompts")  # the sft stage's set, when the prompt system built it
        return tuple(reads)

    def settings_read(self) -> tuple[str, ...]:
        reads = ["model"]
        if self._grpo_reads_sft():
            reads.append("sft.datasets")
        if self.online and self.grpo.rewards.rubric:
            reads.append("teacher")
        return tuple(reads)
