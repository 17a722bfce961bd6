"""The mix search's settings: candidate finance shares, the length of each short run, the general-loss budget."""

from __future__ import annotations

from pydantic import Field, model_validator

from finloom.recipe.base import StageSection


class MixSearchSection(StageSection):
    """Choose the finance share of the CPT mix by loss and metric scaling laws fitted on short runs (a study:
    ``recipes/studies/mix_search.yaml`` or ``finloom pretrain mix-search``). The laws' forms are not given in the
    report; finloom's are documented in ``finloom.experiments.mix_search``."""

    ratios: list[float] = Field([0.1, 0.2, 0.3, 0.5], description="Finance shares to try, each in (0, 1).")
    steps: int = Field(200, ge=1, description="Training steps of each short run.")
    eval_points: int = Field(5, ge=1, description="Held-out evaluations per run (points of each loss curve).")
    general_budget: float = Field(0.02, ge=0, description="Allowed relative rise of general loss over the start model.")
    target_tokens: int | None = Field(None, ge=1, description="Budget to extrapolate to; default: the pretrain stage's.")
    mcq_items: int = Field(200, ge=1, description="Finance MCQ items scored per run (the metric scaling law).")

    @model_validator(mode="after")
    def _ratios_valid(self) -> "MixSearchSection":
        if not all(0 < r < 1 for r in self.ratios) or len(set(self.ratios)) < 2:
            raise ValueError(f"ratios: give at least two distinct finance shares strictly between 0 and 1, "
                             f"got {self.ratios}")
        return self

    def settings_read(self) -> tuple[str, ...]:
        return ("model", "pretrain", "eval")  # each run trains like pretrain; accuracy is measured like eval
