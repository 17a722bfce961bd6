"""The ``merge`` stage's settings: which models to merge, by which method, over which base."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import StageSection

MERGE_METHODS = ("model_stock", "linear", "task_arithmetic")


class MergeSection(StageSection):
    """Merge several fine-tuned models of one base into one (mergekit, tensor by tensor); later stages start
    from the merged model and eval compares it with its inputs. Model Stock was best in Baichuan Alignment."""

    method: Literal[MERGE_METHODS] = Field(  # type: ignore[valid-type]
        "model_stock", description="model_stock: base + t * (mean - base), t from the angle between the fine-tuned "
                                   "deltas (needs 2+ models); linear: weighted mean; task_arithmetic: base + "
                                   "sum(weight_i * (model_i - base)).")
    models: list[str] = Field(default_factory=list, description="Model directories, or stage:NAME for a stage's model.")
    checkpoints: int = Field(0, ge=0, le=64, description="Also merge the last N checkpoints of the stage this one "
                                                         "follows (e.g. the SFT run's last two).")
    base: str | None = Field(None, description="The common base (directory or stage:NAME) for model_stock and "
                                               "task_arithmetic; default: the model the stage before this one "
                                               "started from.")
    weights: list[float] | None = Field(None, description="One per merged model, in order (models, then "
                                                          "checkpoints oldest first); default 1/N each.")

    @model_validator(mode="after")
    def _enough_inputs(self) -> "MergeSection":
        count = len(self.models) + self.checkpoints
        if self.enabled and count < 2:
            raise ValueError("models / checkpoints: a merge needs at least two models "
                             f"(got {len(self.models)} model(s) and {self.checkpoints} checkpoint(s))")
        if self.weights is not None and len(self.weights) != count:
            raise ValueError(f"weights: {len(self.weights)} given for {count} merged models")
        return self

    def stages_read(self) -> tuple[str, ...]:
        named = [*self.models, *([self.base] if self.base else [])]
        return tuple(model.removeprefix("stage:") for model in named if model.startswith("stage:"))
