"""The ``prefs`` stage's settings: the preference builder (prompts, sampling, near duplicates, judging)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import ChatSource, StageSection


class PrefsSection(StageSection):
    """Preference pairs for the reward model: several sampled answers per prompt, near duplicates removed, each
    answer scored, the best and the worst of a prompt whose scores differ enough kept as a scored pair."""

    sources: list[ChatSource] = Field(default_factory=list, description="Prompts: chat records ending with a user turn; "
                                                                "optional answer (option letters), expected (+ unit, "
                                                                "tolerance), checks, golden (a reference answer).")
    models: list[str] = Field(default_factory=list, description="Who answers: stage:NAME, a model directory, or "
                                                                "teacher; default: the model this stage follows.")
    samples: int = Field(5, ge=2, le=64, description="Answers sampled per prompt from each model.")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(0.99, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, le=8192)
    near_duplicate_rouge: float = Field(0.7, gt=0, le=1, description="ROUGE-L F1 at or above which a later answer "
                                                                     "of the same prompt is a near duplicate.")
    judge: Literal["auto", "checks", "absolute", "pairwise", "golden"] = Field(
        "auto", description="auto: verifiable checks where the prompt has answer / expected / checks, against the "
                            "golden answer where it has one, pairwise for kind: reasoning, else absolute 1-10; "
                            "checks: verifiable checks only, no teacher (other prompts are rejected).")
    max_prompts: int | None = Field(None, ge=1, description="Build from a seeded sample of this many prompts "
                                                             "(default: all).")
    min_spread: float = Field(0.2, ge=0, le=1, description="Drop a prompt whose best and worst answers score "
                                                           "closer than this (scores in [0, 1]): all alike.")
    retries: int = Field(2, ge=0, le=10, description="Judge replies that do not parse are asked again, then counted.")
    batch_size: int = Field(16, ge=1, le=4096, description="Prompts per cached batch (resume granularity).")

    def stages_read(self) -> tuple[str, ...]:
        return tuple(m.removeprefix("stage:") for m in self.models if m.startswith("stage:"))

    def settings_read(self) -> tuple[str, ...]:
        if self.judge == "checks" and "teacher" not in self.models:
            return ("model",)  # no judge asked: a stage:NAME teacher later in the run is not read
        return ("model", "teacher")

    @model_validator(mode="after")
    def _sources_when_enabled(self) -> "PrefsSection":
        if self.enabled and not self.sources:
            raise ValueError("sources: at least one prompt file is required while the stage is enabled")
        return self
