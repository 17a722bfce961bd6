"""The ``pas`` stage's settings: build (prompt, complement) pairs, train the PAS model, measure it.

PAS (Baichuan Alignment) is a small model that writes complementary guidance for a user's prompt,
appended to it before the main model answers. The report gives the shape (about 30 words; 4-5
golden examples per category; a five-criterion critique; regeneration) but few values: the
defaults here are finloom's and say why in their descriptions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import DataPath, LoraSettings, Section, TrainArgs
from finloom.recipe.prompts import PromptSelection


class PASGeneration(Section):
    """Complements written by the teacher from per-category few-shot examples."""

    fewshot: DataPath = Field(DataPath(path="starter:pas_fewshot.jsonl"), description=(
        "Golden examples (JSONL: category, lang, prompt, complement); the bundled ones are written by finloom."))
    shots: int = Field(4, ge=0, le=10, description="Examples of the prompt's category shown to the teacher "
                                                   "(the report used 4-5).")
    attempts: int = Field(3, ge=1, le=10, description="Generations per prompt: the first and the regenerations "
                                                      "after a rejection (the report's ablation: -3.8 points "
                                                      "without regeneration).")
    temperature: float = Field(0.7, ge=0, le=2, description="Regenerations must be able to come out differently.")
    max_tokens: int = Field(96, ge=8, description="Tokens per complement (about 30 words fit in 60).")


class PASCritique(Section):
    """Which complements are kept. The five criteria are the report's; the rules check what can be computed
    (language, length, new numbers, keywords) on every complement, the teacher judges all five."""

    method: Literal["teacher", "rules"] = Field(
        "teacher", description="teacher: the rules, then the teacher's critique on what passes them; rules: the "
                               "rules alone (offline; the teacher's critique is then not applied, and the report "
                               "says so).")
    max_words: int = Field(60, ge=5, description="(4) excessive demands: a longer complement asks too much "
                                                 "(Chinese: counted as characters / 2).")
    max_constraints: int = Field(3, ge=1, description="(4) excessive demands: more kinds of explicit constraint "
                                                      "(length, format, count, ...) than this.")
    complex_prompt_words: int = Field(150, ge=10, description="(2) a prompt at least this long is already complex ...")
    complex_max_words: int = Field(25, ge=1, description="... and its complement may add at most this many words.")
    retries: int = Field(1, ge=0, description="Re-asks of a critique reply that does not parse; then the "
                                              "complement counts as unjudged and is regenerated.")


class PASEval(Section):
    """With vs without PAS on the scenario suite, answered by the target model."""

    enabled: bool = True
    files: list[DataPath] = Field(default_factory=lambda: [DataPath(path="starter:eval_scenarios.jsonl")],
                                  description="Scenario files (the eval stage's scenario layout).")
    max_items: int = Field(12, ge=1)
    max_tokens: int = Field(128, ge=1, description="Tokens per answer.")
    judge_max_tokens: int = Field(256, ge=16)
    judge_retries: int = Field(1, ge=0)
    target: str | None = Field(None, description="The model answering, a directory or stage:NAME (default: the "
                                                 "newest lineage model before pas).")


class PASSection(PromptSelection):
    """Prompt augmentation: select prompts, write and critique complements, train the PAS model, evaluate it."""

    complements: list[DataPath] = Field(
        default_factory=list, description="Ready (prompt, complement) pairs (JSONL: prompt, complement, optional "
                                          "category, keywords) trained on beside the generated ones; they pass the "
                                          "same rules.")
    generation: PASGeneration = Field(default_factory=PASGeneration)
    critique: PASCritique = Field(default_factory=PASCritique)
    categories: list[str] | None = Field(
        None, description="Augment only prompts of these categories when the model is served (default: all); "
                          "a category is the finance scenario family, else the ability tag.")
    start_model: str | None = Field(None, description="What the PAS model is trained from: a model directory or "
                                                      "stage:NAME (default: the newest lineage model before pas). "
                                                      "A small model is enough (the report's is small).")
    packing: bool = True
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=200, learning_rate=1e-5),
                             description="The report: 2 epochs of ~9,000 pairs at 4096 tokens.")
    eval: PASEval = Field(default_factory=PASEval)

    @model_validator(mode="after")
    def _inputs_when_enabled(self) -> "PASSection":
        if self.enabled and not self.sources and not self.complements:
            raise ValueError("sources: a prompt pool to write complements for (or complements: ready pairs) is "
                             "required")
        return self

    def uses_teacher(self) -> bool:
        """The teacher writes and critiques complements for the pool's prompts (and tags or scores them, if so set)."""
        return self.selection_uses_teacher() or bool(self.sources)

    def settings_read(self) -> tuple[str, ...]:
        """The evaluation's judge is the teacher too, where the recipe has one."""
        return ("model",) + (("teacher",) if self.uses_teacher() or self.eval.enabled else ())

    def stages_read(self) -> tuple[str, ...]:
        return tuple(model.removeprefix("stage:") for model in (self.start_model, self.eval.target)
                     if model and model.startswith("stage:"))
