"""The whole recipe: one section per stage, and the checks that span sections.

A stage runs when its section is in the recipe; a section left out is off (``recipe show`` prints
``enabled: false`` for it), except the report's, which summarises whatever ran. So a data-only or
eval-only recipe names just those sections, and ``model`` is needed only by stages that load a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import STARTER_DATA_DIR, STARTER_PREFIX, Section, StageSection
from finloom.recipe.align import AlignSection
from finloom.recipe.chat import RewardSection, SFTSection
from finloom.recipe.data import DataSection
from finloom.recipe.eval import EvalSection
from finloom.recipe.model import ClientSection, ModelSection
from finloom.recipe.pretrain import BaseSection, PretrainSection
from finloom.recipe.pas import PASSection
from finloom.recipe.prompts import PromptsSection
from finloom.recipe.forgetting import ForgettingSection
from finloom.recipe.merge import MergeSection
from finloom.recipe.prefs import PrefsSection
from finloom.recipe.mix_search import MixSearchSection
from finloom.recipe.report import ReportSection


TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")


def _off(section_class):
    return Field(default_factory=lambda: section_class(enabled=False))


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 1234
    run_dir: str | None = Field(None, description="Default: runs/<name> next to the working directory.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores).")
    report_to: list[Literal[TRACKERS]] = Field(  # type: ignore[valid-type]
        ["tensorboard"], description="Where every training stage sends its curves (runs named RECIPE/STAGE): tensorboard "
                                     "(STAGE/tensorboard), wandb, mlflow, trackio when installed; their offline modes "
                                     "(WANDB_MODE=offline, a file: MLFLOW_TRACKING_URI) are theirs to set.")
    model: ModelSection | None = Field(None, description="The model to start from; needed by every stage that "
                                                         "loads or builds one.")
    teacher: ClientSection | None = None
    data: DataSection = _off(DataSection)
    base: BaseSection = _off(BaseSection)
    pretrain: PretrainSection = _off(PretrainSection)
    prompts: PromptsSection = _off(PromptsSection)
    sft: SFTSection = _off(SFTSection)
    merge: MergeSection = _off(MergeSection)
    prefs: PrefsSection = _off(PrefsSection)
    reward: RewardSection = _off(RewardSection)
    align: AlignSection = _off(AlignSection)
    pas: PASSection = _off(PASSection)
    eval: EvalSection = _off(EvalSection)
    forgetting: ForgettingSection = _off(ForgettingSection)
    mix_search: MixSearchSection = _off(MixSearchSection)
    report: ReportSection = Field(default_factory=ReportSection)

    source_dir: Path = Field(Path("."), exclude=True, description="Directory of the recipe file.")

    @classmethod
    def section_names(cls) -> list[str]:
        """The stage sections, in schema order."""
        return [name for name, field in cls.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, StageSection)]

    @model_validator(mode="after")
    def _stages_fit_together(self) -> "Recipe":
        problems = [*self._model_problems(), *self._teacher_problems(), *self._tracker_problems(),
                    *self._prompts_problems(),
                    *self._merge_problems(), *self._reward_problems(), *self._align_problems(), *self._pas_problems()]
        for stage in ("base", "pretrain"):
            section = self.section(stage)
            if not section.enabled or not self.data.enabled:
                continue
            if not self.data.mix.enabled:
                problems.append(f"data.mix.enabled: stage {stage} trains on token shards; enable the mix")
            elif section.mix not in self.data.mix.mixes:
                problems.append(f"{stage}.mix: no mix {section.mix!r} in data.mix.mixes "
                                f"(has: {', '.join(sorted(self.data.mix.mixes))})")
            if section.train.seq_len != self.data.mix.seq_len:
                problems.append(f"{stage}.train.seq_len: {section.train.seq_len} differs from data.mix.seq_len "
                                f"{self.data.mix.seq_len} (the shards are packed at that length)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _model_problems(self) -> list[str]:
        enabled = [name for name in self.section_names() if self.section(name).enabled]
        needing = [name for name in enabled if self.section(name).needs_model()]
        if self.model is None:
            return [f"model: the {needing[0]} stage needs a model (model.hf or model.scratch)"] if needing else []
        problems = []
        if self.model.scratch is None and self.base.enabled:
            problems.append("base: the base stage builds a from-scratch model; with model.hf, leave it out")
        later = [name for name in needing if name not in ("data", "base")]
        if self.model.scratch is not None and not self.base.enabled and later:
            problems.append(f"base.enabled: a model.scratch recipe needs the base stage (it builds the model "
                            f"that {later[0]} starts from)")
        return problems

    def _prompts_problems(self) -> list[str]:
        problems = []
        if self.sft.enabled and not self.sft.datasets and not self.prompts.enabled:
            problems.append("sft.datasets: at least one source is required (or enable the prompts stage, whose "
                            "set sft then trains on)")
        if self.prompts.enabled and self.prompts.uses_teacher() and self.teacher is None:
            problems.append("teacher: the prompts stage, as configured, asks the teacher (tagging, quality, "
                            "responses or back-translation); add a teacher section")
        for model in self.prompts.responses.models if self.prompts.enabled else ():
            stage = model.removeprefix("stage:")
            if model.startswith("stage:") and (stage not in self.section_names() or not self.section(stage).enabled
                                               or self.section_names().index(stage) > self.section_names().index("prompts")):
                problems.append(f"prompts.responses.models: {model}: no enabled model stage before prompts")
        return problems

    def _reward_problems(self) -> list[str]:
        problems = []
        if self.reward.enabled and not self.reward.datasets and not self.prefs.enabled:
            problems.append("reward.datasets: at least one source is required (or enable the prefs stage, whose "
                            "pairs reward then trains on)")
        for model in self.prefs.models if self.prefs.enabled else ():
            stage = model.removeprefix("stage:")
            names = self.section_names()
            if model.startswith("stage:") and (stage not in names or not self.section(stage).enabled
                                               or names.index(stage) > names.index("prefs")):
                problems.append(f"prefs.models: {model}: no enabled model stage before prefs")
        return problems

    def _align_problems(self) -> list[str]:
        if not self.align.enabled or not self.align.online:
            return []
        grpo, problems = self.align.grpo, []
        if grpo.reward_model_source() == "stage:reward" and not self.reward.enabled:
            problems.append("align.grpo.reward_model: rewards.rm > 0 reads stage:reward, but the reward stage is not "
                            "enabled (enable it, name a reward-model directory or URL, or set rewards.rm: 0)")
        sft_has_data = self.sft.enabled and (self.sft.datasets or self.prompts.enabled)
        if grpo.gamma > 0 and not grpo.sft_datasets and not sft_has_data:
            problems.append("align.grpo.sft_datasets: gamma > 0 needs SFT conversations; list them, enable the sft "
                            "stage, or set gamma: 0")
        if grpo.rewards.rubric:
            local = (self.teacher.local_model or "") if self.teacher else ""
            if self.teacher is None:
                problems.append("align.grpo.rewards.rubric: the rubric is judged by the teacher; add a teacher section")
            elif local.startswith("stage:") and local.removeprefix("stage:") in ("align", "eval", "report"):
                problems.append(f"teacher.local_model: {local} does not exist yet when align judges its rubric")
        return problems

    def _pas_problems(self) -> list[str]:
        if not self.pas.enabled:
            return []
        problems, names = [], self.section_names()
        if self.pas.uses_teacher() and self.teacher is None:
            problems.append("teacher: the pas stage writes and critiques complements with the teacher; add a teacher "
                            "section (or give only pas.complements)")
        local = (self.teacher.local_model or "") if self.teacher else ""
        if local.startswith("stage:") and local.removeprefix("stage:") in names[names.index("pas"):]:
            problems.append(f"teacher.local_model: {local} does not exist yet when pas asks its teacher")
        for field, model in (("start_model", self.pas.start_model), ("eval.target", self.pas.eval.target)):
            stage = (model or "").removeprefix("stage:")
            if (model or "").startswith("stage:") and (stage not in names or not self.section(stage).enabled
                                                       or names.index(stage) > names.index("pas")):
                problems.append(f"pas.{field}: {model}: no enabled model stage before pas")
        return problems

    def _merge_problems(self) -> list[str]:
        if not self.merge.enabled:
            return []
        names = self.section_names()
        problems = []
        for field, model in [*(("models", m) for m in self.merge.models), ("base", self.merge.base or "")]:
            stage = model.removeprefix("stage:")
            if model.startswith("stage:") and (stage not in names or not self.section(stage).enabled
                                               or names.index(stage) > names.index("merge")):
                problems.append(f"merge.{field}: {model}: no enabled model stage before merge")
        if self.merge.checkpoints and self.sft.enabled and self.sft.lora.enabled:
            problems.append("merge.checkpoints: the SFT checkpoints hold LoRA adapters, not models; merge whole "
                            "models (sft.lora.enabled: false) or list merged model directories in merge.models")
        return problems

    def _tracker_problems(self) -> list[str]:
        import importlib.util

        return [f"report_to: {name} is not installed (pip install {name})" for name in self.report_to
                if name != "tensorboard" and importlib.util.find_spec(name) is None]

    def _teacher_problems(self) -> list[str]:
        local = (self.teacher.local_model or "") if self.teacher else ""
        if local.startswith("stage:"):
            stage = local.removeprefix("stage:")
            if stage not in self.section_names():
                return [f"teacher.local_model: {local}: no stage {stage!r} (stages: {', '.join(self.section_names())})"]
            if not self.section(stage).enabled:
                return [f"teacher.local_model: {local}: the {stage} stage is not enabled in this recipe"]
        if not (self.data.enabled and self.data.judge.enabled):
            return []
        if self.teacher is None:
            return ["data.judge.enabled: the judge needs a teacher section (its LLM endpoint)"]
        if (self.teacher.local_model or "").startswith("stage:"):
            return ["teacher.local_model: the data stage runs before any stage has a model; "
                    "judge the data with an endpoint or a model directory"]
        return []

    def resolve(self, path: str) -> Path:
        """Absolute path of a data path written in the recipe."""
        if path.startswith(STARTER_PREFIX):
            return STARTER_DATA_DIR / path[len(STARTER_PREFIX):]
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.source_dir / candidate).resolve()

    def start_model(self) -> str:
        """``model.hf`` as a local directory (relative to the recipe) if one exists, else a Hub id."""
        local = self.resolve(self.model.hf)
        return str(local) if local.exists() else self.model.hf

    def section(self, stage: str) -> StageSection:
        return getattr(self, stage)
