"""The ``prompts`` stage's settings: tag, select, score and answer the prompts the SFT set is built from.

The reports leave most values out; the defaults here are finloom's and say why in their descriptions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import ChatSource, DataPath, Section, Source, StageSection

TAG_DIMENSIONS = ("ability", "attributes", "domain", "language", "difficulty", "constraint")
COMPUTED_DIMENSIONS = ("language", "constraint")
"""Dimensions computed from the text (language id; a count of explicit constraints), never asked for."""
CLASSIFIED_DIMENSIONS = tuple(d for d in TAG_DIMENSIONS if d not in COMPUTED_DIMENSIONS)


class TaggingSettings(Section):
    """Six-dimension tags: language and constraint level computed; the rest by a classifier or the teacher."""

    method: Literal["classifier", "teacher"] = Field(
        "classifier", description="classifier: hashed n-gram classifiers, one per dimension, trained on labelled "
                                  "prompts (offline, seconds); teacher: the teacher tags every prompt.")
    labels: DataPath | None = Field(
        None, description="Labelled prompts (JSONL: text and one field per dimension) the classifiers train on.")
    teacher_labels: int = Field(
        0, ge=0, description="With method classifier: the teacher labels this many prompts of the pool and the "
                             "classifiers train on those (plus labels, if given); agreement is measured on a "
                             "held-out fifth of them.")
    holdout: float = Field(0.2, ge=0, lt=1, description="Share of the labels held out to measure agreement.")
    retries: int = Field(2, ge=0, description="Re-asks of a teacher reply that does not parse, then counted as failed.")

    @model_validator(mode="after")
    def _some_labels(self) -> "TaggingSettings":
        if self.method == "classifier" and self.labels is None and self.teacher_labels == 0:
            raise ValueError("tagging: method classifier needs labels (a file) or teacher_labels > 0")
        return self


class Quota(Section):
    min_share: float = Field(0.0, ge=0, le=1, description="At least this share of the kept prompts, where there "
                                                          "are enough (a shortfall is reported).")
    max_share: float = Field(1.0, gt=0, le=1, description="At most this share of the kept prompts.")

    @model_validator(mode="after")
    def _ordered(self) -> "Quota":
        if self.min_share > self.max_share:
            raise ValueError(f"min_share {self.min_share} is above max_share {self.max_share}")
        return self


class TaskAwareSettings(Section):
    """The report's task-aware embedding for template search: the generic embedding mapped by a linear layer trained
    with a triplet loss on pairs mined by LCS inside clusters (finloom.prompts.task_embedding). Off by default: the
    generic embedding finds frames that differ in a slot; turn it on for frames around long, varied contexts
    (measured in benchmarks/RESULTS.md), usually with a lower template.min_shared."""

    enabled: bool = False
    compare: int = Field(48, ge=1, description="Prompts of its cluster each prompt is compared with by LCS.")
    frame_share: float = Field(0.35, gt=0, le=1, description="A positive's LCS covers at least this share of the "
                                                             "shorter prompt (and min_frame_tokens tokens).")
    other_share: float = Field(0.25, ge=0, lt=1, description="A negative's LCS covers at most this share.")
    margin: float = Field(0.3, gt=0, le=2, description="Triplet margin on cosine distance.")
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.01, gt=0)
    identity_weight: float = Field(1.0, ge=0, description="Pull of the map toward the identity (keeps what the "
                                                          "generic embedding knows).")

    @model_validator(mode="after")
    def _shares_ordered(self) -> "TaskAwareSettings":
        if self.other_share >= self.frame_share:
            raise ValueError(f"other_share {self.other_share} must be below frame_share {self.frame_share}")
        return self


class TemplateSettings(Section):
    """Prompts that differ only in slot values ("template + context"): found by the longest common token
    subsequence among embedding neighbours; a family keeps ``keep`` prompts, the best first."""

    enabled: bool = True
    candidate_similarity: float = Field(0.8, ge=-1, le=1, description="Pairs at least this similar are compared.")
    min_shared: float = Field(0.7, gt=0, le=1, description="Common subsequence / longer prompt's length.")
    min_frame_tokens: int = Field(20, ge=1, description="A shared frame shorter than this is no template: 'What is "
                                                        "X?' prompts share a frame but ask for different knowledge.")
    keep: int = Field(2, ge=1, description="Prompts kept per template family.")
    task_aware: TaskAwareSettings = Field(default_factory=TaskAwareSettings)


class NearDuplicateSettings(Section):
    """Prompts asking the same thing with small edits (a typo, a line of boilerplate appended): embedding
    neighbours whose longest common token subsequence covers nearly all of the shorter prompt. Measured on the
    bundled pool (benchmarks/RESULTS.md): a cosine threshold alone cannot tell a typo from a different topic in
    the same frame ("Tell me two facts about coffee / gravity" sit at 0.97 with WordLlama)."""

    candidate_similarity: float = Field(0.6, ge=-1, le=1, description="Pairs at least this similar are compared.")
    min_shared: float = Field(0.9, gt=0, le=1, description="Common subsequence / shorter prompt's length.")
    min_tokens: int = Field(4, ge=1, description="Shorter prompts are never near duplicates ('help' is in many).")
    neighbours: int = Field(10, ge=1, description="Each prompt is compared with its this many most similar earlier "
                                                  "prompts (for near duplicates and templates alike).")


class SelectionSettings(Section):
    embedding: str = Field(
        "wordllama", description="wordllama (static token embeddings shipped in its PyPI wheel: nothing is "
                                 "downloaded), hashed (character n-gram vectors, no model at all), or the path of a "
                                 "sentence-transformers model directory.")
    near_duplicate: NearDuplicateSettings = Field(default_factory=NearDuplicateSettings)
    clusters: int = Field(0, ge=0, description="k-means clusters for diversity (0: about sqrt(n / 2)); the kept "
                                               "set is filled round-robin across clusters.")
    template: TemplateSettings = Field(default_factory=TemplateSettings)
    quotas: dict[str, dict[str, Quota]] = Field(
        default_factory=dict, description="Per tag dimension and value, e.g. {ability: {calculation: {max_share: "
                                          "0.2}}, domain: {compliance: {min_share: 0.02}}}.")
    max_prompts: int | None = Field(None, ge=1, description="Keep at most this many (default: all that pass).")

    @model_validator(mode="after")
    def _known_dimensions(self) -> "SelectionSettings":
        unknown = sorted(set(self.quotas) - set(TAG_DIMENSIONS))
        if unknown:
            raise ValueError(f"quotas: unknown dimension {unknown[0]!r} (dimensions: {', '.join(TAG_DIMENSIONS)})")
        return self


class PromptQualitySettings(Section):
    method: Literal["none", "annotations", "teacher"] = Field(
        "none", description="annotations: each record's own 'quality' field (0-1); teacher: anchor-based pairwise "
                            "judging; none: no quality filter.")
    drop_below: float = Field(0.5, ge=0, le=1, description="Prompts scoring below this are dropped.")
    anchors: int = Field(3, ge=1, description="Anchor prompts per bucket each prompt is compared with.")
    buckets: str = Field("ability", description="The tag dimension prompts are bucketed by; anchors come from "
                                                "the prompt's own bucket.")
    retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _bucket_dimension(self) -> "PromptQualitySettings":
        if self.buckets not in TAG_DIMENSIONS:
            raise ValueError(f"buckets: {self.buckets!r} is not a tag dimension ({', '.join(TAG_DIMENSIONS)})")
        return self


class ResponseSettings(Section):
    method: Literal["given", "sample"] = Field(
        "given", description="given: each record's own final assistant turn (e.g. bundled project-written "
                             "answers); sample: candidates from the models below, filtered.")
    models: list[str] = Field(
        default_factory=list, description="Where candidates come from: 'teacher', 'stage:NAME' (a model of this "
                                          "run) or a local model directory.")
    samples: int = Field(4, ge=1, le=64, description="Candidates per prompt and model.")
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    filter: Literal["judge", "reward_model", "none"] = Field(
        "judge", description="judge: the teacher scores each candidate 1-10 and the best is kept; reward_model: "
                             "the reward model below scores them; none: the first.")
    min_score: float = Field(6, ge=1, le=10, description="judge: a prompt whose best candidate scores below this is "
                                                         "dropped.")
    reward_model: str | None = Field(None, description="filter reward_model: a reward model directory (the reward "
                                                       "stage's, e.g. of an earlier run) or a finloom serve URL.")
    min_reward: float | None = Field(None, description="reward_model: a prompt whose best candidate's reward is below "
                                                       "this is dropped (default: none is).")
    critique_rewrite: bool = Field(False, description="The teacher critiques the chosen response and rewrites it.")
    refusal_cap: float = Field(0.1, ge=0, le=1, description="At most this share of kept responses may be refusals.")
    retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _models_to_sample(self) -> "ResponseSettings":
        if self.method == "sample" and not self.models:
            raise ValueError("responses.models: method sample needs at least one model")
        if self.method == "sample" and self.filter == "reward_model" and not self.reward_model:
            raise ValueError("responses.reward_model: filter reward_model needs a reward model (directory or URL)")
        return self


class BackTranslationSettings(Section):
    """Instruction back-translation: the teacher writes the prompt a good existing text answers."""

    sources: list[Source] = Field(default_factory=list, description="Good texts (JSONL with a text field, ...).")
    max_texts: int = Field(200, ge=1)
    min_chars: int = Field(80, ge=1, description="Shorter texts are too thin to answer a prompt.")


class PromptSelection(StageSection):
    """Prompt pools, tagged on six dimensions and selected for diversity and quality: the part of the prompt system
    both the SFT set (``prompts``) and PAS (``pas``) are built on."""

    sources: list[ChatSource] = Field(default_factory=list, description="Prompt pools: conversations (messages, "
                                                                        "ShareGPT, Alpaca) or {prompt: ...} records.")
    tagging: TaggingSettings = Field(default_factory=lambda: TaggingSettings(labels=DataPath(path="starter:prompt_tags.jsonl")))
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    quality: PromptQualitySettings = Field(default_factory=PromptQualitySettings)
    batch_size: int = Field(32, ge=1, description="Prompts per teacher batch: the unit of progress and of resume.")

    def selection_uses_teacher(self) -> bool:
        return self.tagging.method == "teacher" or self.tagging.teacher_labels > 0 or self.quality.method == "teacher"


class PromptsSection(PromptSelection):
    """Build the SFT set: tag prompts on six dimensions, select for diversity and quality, build responses."""

    responses: ResponseSettings = Field(default_factory=ResponseSettings)
    back_translation: BackTranslationSettings = Field(default_factory=BackTranslationSettings)

    @model_validator(mode="after")
    def _inputs_when_enabled(self) -> "PromptsSection":
        if self.enabled and not self.sources and not self.back_translation.sources:
            raise ValueError("sources: at least one prompt pool (or back_translation.sources) is required")
        return self

    def needs_model(self) -> bool:
        return any(model.startswith("stage:") for model in self.responses.models) if self.responses.method == "sample" \
            else False

    def uses_teacher(self) -> bool:
        return (self.selection_uses_teacher()
                or (self.responses.method == "sample" and (self.responses.filter == "judge" or self.responses.critique_rewrite
                                                           or "teacher" in self.responses.models))
                or bool(self.back_translation.sources))

    def settings_read(self) -> tuple[str, ...]:
        return (("model",) if self.needs_model() else ()) + (("teacher",) if self.uses_teacher() else ())

    def stages_read(self) -> tuple[str, ...]:
        return tuple(model.removeprefix("stage:") for model in self.responses.models
                     if self.responses.method == "sample" and model.startswith("stage:"))
