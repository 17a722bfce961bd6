"""The ``eval`` stage's settings: benchmarks in public layouts, API models, scenario scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import Section, Source, StageSection

DEFAULT_EVAL_RECIPE = Path(__file__).parents[1] / "eval" / "suites" / "starter.yaml"


BENCHMARK_LAYOUTS = ("flame", "columns", "cflue", "mmlu", "arc", "hellaswag", "calc", "scenario")
DEFAULT_LAYOUT = {"mcq": "flame", "calc": "calc", "scenario": "scenario"}


class HubSource(Section):
    """A dataset on the Hugging Face Hub, read only when the machine is online (the user's choice)."""

    path: str = Field(description="e.g. cais/mmlu")
    name: str | None = Field(None, description="Dataset configuration, e.g. all.")
    split: str = "test"


class BenchmarkSpec(Section):
    """One benchmark: its files (a file or a folder, one sub-task per file) in a public layout, and how to score it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    kind: Literal["mcq", "calc", "scenario"] = "mcq"
    layout: Literal[BENCHMARK_LAYOUTS] | None = Field(  # type: ignore[valid-type]
        None, description="flame (FLAME-Cer), columns (FinanceIQ, FinEval, C-Eval, CMMLU), cflue, mmlu, arc, "
                          "hellaswag, calc, scenario; default by kind.")
    files: list[Source] = Field(default_factory=list)
    hub: HubSource | None = None
    domain: Literal["finance", "general"] = "finance"
    scoring: Literal["auto", "cloze", "letters", "generate"] = Field(
        "auto", description="auto: log-likelihood (cloze) for every local model, plus generation for chat models "
                            "and endpoints; cloze / letters: log-likelihood only; generate: generation only.")
    num_fewshot: int = Field(0, ge=0)
    max_items: int | None = Field(None, ge=1, description="At most this many items (default: eval.max_items).")

    @model_validator(mode="after")
    def _one_source(self) -> "BenchmarkSpec":
        if bool(self.files) == (self.hub is not None):
            raise ValueError("set exactly one of files or hub")
        if self.layout is None:
            self.layout = DEFAULT_LAYOUT[self.kind]
        return self


class EndpointSpec(Section):
    """A model behind an OpenAI-compatible API (vLLM, finloom serve, a hosted model) to put in the same table."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str = "default"
    api_key_env: str | None = None
    chat: bool = Field(True, description="Chat completions (generation); false: text completions.")
    logprobs: bool = Field(False, description="The server returns prompt log-probs (echo): MCQ by log-likelihood too.")
    tokenizer: str | None = Field(None, description="Local tokenizer directory, needed with logprobs.")
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(120.0, gt=0)


class ScenarioSettings(Section):
    """FLAME-Sce scoring: the teacher judges each dimension -1..5; final = weighted mean of the task's weights."""

    usable_basic: float = Field(3.0, description="Usable when the final score reaches this (basic tasks) ...")
    usable_high_stakes: float = Field(4.0, description="... or this (high-stakes tasks), with no dimension at -1.")
    judge_retries: int = Field(2, ge=0, description="Re-asks when a judge reply cannot be parsed; then it is counted.")
    judge_max_tokens: int = Field(256, ge=16)
    max_gen_tokens: int = Field(512, ge=8, description="Tokens a model may write per scenario answer.")


class EvalSection(StageSection):
    """Benchmarks run through lm-evaluation-harness, and held-out perplexity, for every stage's model."""

    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    endpoints: list[EndpointSpec] = Field(default_factory=list, description="API models evaluated beside the stages.")
    scenarios: ScenarioSettings = Field(default_factory=ScenarioSettings)
    max_items: int | None = Field(None, ge=1, description="Evaluate at most this many items per benchmark.")
    perplexity_max_tokens: int = Field(
        50000, ge=64, description="Held-out tokens scored per domain (50k: a 2% perplexity change is then larger than "
                                  "the sampling noise of the held-out text).")
    batch_size: int = Field(8, ge=1)
    max_gen_tokens: int = Field(128, ge=8, description="Tokens per generated MCQ / calculation answer.")

    @model_validator(mode="after")
    def _unique_names(self) -> "EvalSection":
        names = [b.name for b in self.benchmarks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"benchmarks: names must be unique, repeated: {duplicated}")
        return self

    def needs_model(self) -> bool:
        return False  # API models in endpoints are evaluated without one

    def settings_read(self) -> tuple[str, ...]:
        """The scenario benchmarks are scored by the teacher: another judge re-runs the evaluation."""
        return ("model", "teacher") if any(spec.kind == "scenario" for spec in self.benchmarks) else ("model",)
