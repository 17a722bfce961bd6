"""The stage contract and the catalogue: what every stage is, written down once.

A stage is a function ``run(section, ctx) -> StageResult`` in its own module: it gets its recipe
section and a ``RunContext`` (its own directory, and the manifests and artifacts of the stages it
reads) and returns the artifacts it wrote and its metrics. Stages talk only through artifacts on
disk, so any stage can run alone once the stages it reads have completed.

The catalogue says, per stage: its entry point; whether it trains (then every process of a
distributed launch runs it); whether it writes a model of the lineage (base -> pretrain -> sft ->
merge -> align, each starting from the newest enabled one before it, or from ``model.hf``) and whether that
is a chat model; which stages it reads. A stage's recipe section adds what depends on its settings
(``StageSection.stages_read`` and ``settings_read``), and all of it enters the stage's fingerprint,
so re-running anything a stage reads re-runs the stage. The runner, the CLI, eval and the report
read this module; adding a stage is one folder, one entry here and one recipe section.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from finloom.errors import BadInput
from finloom.recipe import ClientSection, Recipe, recipe_to_dict

STAGE_MODEL_PREFIX = "stage:"


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str
    """``module:function`` of the stage's ``run(section, ctx) -> StageResult``."""
    summary: str
    trains: bool = False
    """Trains a model: under ``accelerate launch`` every process runs it; other stages run on the main one."""
    model: bool = False
    """Writes ``STAGE/model``, a model of the lineage that later stages start from."""
    chat: bool = False
    """Its model is a chat model: eval also answers by generation through the chat template."""
    reads: tuple[str, ...] = ()
    """Stages whose artifacts it reads, when they are enabled."""
    starts_from_model: bool = False
    """Starts from the newest enabled lineage model before it (else ``model.hf``), so it reads that stage."""
    reads_all_before: bool = False
    """Reads every enabled stage before it (evaluation, studies, the report)."""
    key_metrics: tuple[str, ...] = ()
    """Metrics ``finloom status`` shows for it."""
    resumes_after_failure: bool = False
    """Its finished work stays valid when it fails (an endpoint outage midway): a re-run of the same recipe
    continues from its caches, as after an interruption, instead of starting over."""

    def entry_point(self) -> Callable:
        module_name, function = self.entry.split(":")
        return getattr(importlib.import_module(module_name), function)


CATALOGUE = (
    Stage("data", "finloom.data.stage:run", "clean, deduplicate, desensitise, score and mix the corpora; "
          "tokenizer and token shards"),
    Stage("base", "finloom.pretrain.stage:run_base", "build and pretrain a from-scratch model on general text",
          trains=True, model=True, reads=("data",), key_metrics=("final_loss", "parameters")),
    Stage("pretrain", "finloom.pretrain.stage:run_pretrain", "continual pre-training (domain self-constraint)",
          trains=True, model=True, reads=("data",), starts_from_model=True, key_metrics=("final_loss",)),
    Stage("prompts", "finloom.prompts.stage:run", "the SFT set: tag prompts on six dimensions, select for "
          "diversity and quality, build responses", key_metrics=("kept", "dropped"), resumes_after_failure=True),
    Stage("sft", "finloom.sft.stage:run", "supervised fine-tuning on conversations", trains=True, model=True,
          chat=True, reads=("prompts",), starts_from_model=True, key_metrics=("final_loss",)),
    Stage("merge", "finloom.sft.merge:run", "merge fine-tuned models or checkpoints (Model Stock, linear, task "
          "arithmetic)", model=True, chat=True, starts_from_model=True, key_metrics=("method",)),
    Stage("prefs", "finloom.reward.prefs:run", "preference pairs: the run's answers sampled, near duplicates "
          "removed, scored by checks or the teacher", starts_from_model=True, key_metrics=("pairs", "dropped"),
          resumes_after_failure=True),
    Stage("reward", "finloom.reward.stage:run", "reward model on preference pairs (Bradley-Terry + MSE to scores)",
          trains=True, reads=("prefs",), starts_from_model=True, key_metrics=("final_loss", "eval_accuracy", "score_spearman")),
    Stage("align", "finloom.align.stage:run", "preference alignment: GRPO (default), PPO, DPO or KTO", trains=True, model=True, chat=True,
          starts_from_model=True, key_metrics=("final_loss", "reward_accuracy", "reward_margin")),
    Stage("pas", "finloom.pas.stage:run", "prompt augmentation: complements written and critiqued, the PAS model "
          "trained on them, answers with vs without it", trains=True, starts_from_model=True,
          key_metrics=("pairs", "critique_pass_rate", "win_rate"), resumes_after_failure=True),
    Stage("eval", "finloom.eval.stage:run", "every model on the same benchmarks and held-out perplexity",
          reads_all_before=True),
    Stage("forgetting", "finloom.experiments.forgetting:run", "study: CPT variants at one budget, side by side",
          reads_all_before=True),
    Stage("mix_search", "finloom.experiments.mix_search:run", "study: the CPT mix's finance share by scaling laws",
          reads_all_before=True),
    Stage("report", "finloom.report.stage:run", "report.html, report.md and the model card", reads_all_before=True),
)
STAGES = {stage.name: stage for stage in CATALOGUE}
STAGE_NAMES = tuple(STAGES)
MODEL_STAGES = tuple(stage.name for stage in CATALOGUE if stage.model)
TRAINING_STAGES = tuple(stage.name for stage in CATALOGUE if stage.trains)


def enabled_stages(recipe: Recipe) -> list[str]:
    return [name for name in STAGE_NAMES if recipe.section(name).enabled]


def model_stage_before(recipe: Recipe, stage: str) -> str | None:
    """The newest enabled lineage model before ``stage``: the model it starts from (None: ``model.hf``)."""
    enabled = enabled_stages(recipe)
    earlier = [name for name in MODEL_STAGES if name in enabled and STAGE_NAMES.index(name) < STAGE_NAMES.index(stage)]
    return earlier[-1] if earlier else None


def teacher_stage(recipe: Recipe) -> str | None:
    """The stage whose model is the teacher (``teacher.local_model: stage:NAME``), if any."""
    local = recipe.teacher.local_model if recipe.teacher else None
    return local.removeprefix(STAGE_MODEL_PREFIX) if local and local.startswith(STAGE_MODEL_PREFIX) else None


def resolve_teacher(recipe: Recipe, run_dir: Path | None) -> ClientSection | None:
    """The recipe's teacher, with ``local_model: stage:NAME`` resolved to that stage's model in ``run_dir``.

    Every judge of a run asks this; outside a run (``run_dir`` None) a ``stage:`` teacher is an error."""
    teacher, stage = recipe.teacher, teacher_stage(recipe)
    if stage is None:
        return teacher
    manifest = read_manifest(run_dir, stage) if run_dir else None
    if manifest is None or manifest.get("status") != "done" or "model" not in manifest.get("outputs", {}):
        where = "in this run" if run_dir else ("outside a run ('stage:' judges exist only inside a run; give "
                                               "teacher.base_url or a model directory)")
        raise BadInput(f"teacher.local_model: {teacher.local_model}: no model of stage {stage!r} {where}")
    return teacher.model_copy(update={"local_model": str(Path(run_dir) / manifest["outputs"]["model"])})


def upstream_stages(recipe: Recipe, stage: str) -> list[str]:
    """The stages whose artifacts ``stage`` reads, in pipeline order."""
    spec, section = STAGES[stage], recipe.section(stage)
    enabled = enabled_stages(recipe)
    before = [name for name in enabled if STAGE_NAMES.index(name) < STAGE_NAMES.index(stage)]
    if spec.reads_all_before:
        reads = set(before)
    else:
        reads = {name for name in spec.reads if name in enabled}
        if spec.starts_from_model and (start := model_stage_before(recipe, stage)):
            reads.add(start)
    reads.update(name for name in section.stages_read() if name in enabled)  # the recipe checks the needed ones
    if "teacher" in section.settings_read() and (judge := teacher_stage(recipe)):
        reads.add(judge)
    return [name for name in STAGE_NAMES if name in reads]


def settings_read(recipe: Recipe, stage: str) -> dict:
    """The parts of the recipe outside its own section that ``stage`` reads, by dotted path (None where unset)."""
    resolved = recipe_to_dict(recipe)
    values = {}
    for path in recipe.section(stage).settings_read():
        node = resolved
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        values[path] = node
    return values


def read_manifest(run_dir: Path, stage: str) -> dict | None:
    path = Path(run_dir) / stage / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


@dataclass
class StageResult:
    outputs: dict[str, str] = field(default_factory=dict)
    """Artifact name -> path relative to the run directory."""
    metrics: dict = field(default_factory=dict)


class RunContext:
    """What a stage may touch: its own directory, and the manifests and artifacts of upstream stages."""

    def __init__(self, run_dir: Path, recipe: Recipe, stage: str, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.recipe = recipe
        self.stage = stage
        self.stage_dir = self.run_dir / stage
        self.resume = resume
        """True when an interrupted attempt with the same fingerprint left checkpoints to resume."""

    def manifest(self, stage: str) -> dict:
        manifest = read_manifest(self.run_dir, stage)
        if manifest is None or manifest.get("status") != "done":
            raise BadInput(f"stage {self.stage!r} needs stage {stage!r}, which has not completed in {self.run_dir}")
        return manifest

    def artifact(self, stage: str, name: str) -> Path:
        outputs = self.manifest(stage)["outputs"]
        if name not in outputs:
            raise BadInput(f"stage {stage!r} has no output {name!r} (has: {sorted(outputs)})")
        return self.run_dir / outputs[name]

    def input_model(self, stage: str | None = None) -> tuple[str, Path | str]:
        """The model ``stage`` (default: this one) starts from, as (label, path): the newest enabled lineage
        model before it, else ``model.hf`` as "start"."""
        upstream = model_stage_before(self.recipe, stage or self.stage)
        if upstream is None:
            return "start", self.recipe.start_model()
        return upstream, self.artifact(upstream, "model")

    def named_model(self, name: str) -> Path:
        """A model a recipe names: ``stage:NAME`` (that stage's model in this run) or a directory."""
        if name.startswith(STAGE_MODEL_PREFIX):
            return self.artifact(name.removeprefix(STAGE_MODEL_PREFIX), "model")
        return self.recipe.resolve(name)

    def teacher(self) -> ClientSection | None:
        return resolve_teacher(self.recipe, self.run_dir)

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.run_dir.resolve()))
