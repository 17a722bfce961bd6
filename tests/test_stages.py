"""The stage catalogue: it agrees with the recipe schema, it decides what re-runs, and the layers stay in order."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from conftest import tiny_recipe, write_recipe
from finloom.recipe import AlignSection, Recipe, StageSection, load_recipe, parse_recipe
from finloom.runner import Runner
from finloom.stages import CATALOGUE, STAGE_NAMES, STAGES, enabled_stages, read_manifest, upstream_stages

SOURCE = Path(__file__).parents[1] / "src" / "finloom"


def test_catalogue_matches_the_recipe_schema():
    assert STAGE_NAMES == tuple(Recipe.section_names())
    for stage in CATALOGUE:
        assert callable(stage.entry_point()), stage.name
        section_class = Recipe.model_fields[stage.name].annotation
        assert issubclass(section_class, StageSection)
        assert set(stage.reads) <= set(STAGE_NAMES[:STAGE_NAMES.index(stage.name)]), stage.name
        assert not (stage.chat and not stage.model), stage.name
    assert [s.name for s in CATALOGUE if s.model] == ["base", "pretrain", "sft", "merge", "align"]


def test_every_section_has_defaults_and_a_section_left_out_is_off(tmp_path):
    empty = parse_recipe({"name": "empty"}, tmp_path)
    assert enabled_stages(empty) == ["report"]
    assert empty.model is None
    for name in STAGE_NAMES:
        assert isinstance(empty.section(name), StageSection)


def test_data_only_and_eval_only_recipes_need_no_placeholders(tiny_data):
    data_only = parse_recipe({"name": "d", "data": {"general": [{"path": "general.jsonl"}],
                                                    "finance": [{"path": "finance.jsonl"}], "mix": {"enabled": False}}},
                             tiny_data)
    assert enabled_stages(data_only) == ["data", "report"]
    eval_only = parse_recipe({"name": "e", "eval": {"endpoints": [{"name": "api", "base_url": "http://127.0.0.1:1/v1"}],
                                                    "benchmarks": [{"name": "m", "files": [{"path": "fin_mcq.jsonl"}]}]}},
                             tiny_data)
    assert enabled_stages(eval_only) == ["eval", "report"]


@pytest.mark.parametrize(("recipe", "expected"), [
    ({"name": "x", "sft": {"datasets": [{"path": "sft.jsonl"}]}}, "model: the sft stage needs a model"),
    ({"name": "x", "model": {"hf": "some/model"}, "base": {}}, "base: the base stage builds a from-scratch model"),
    ({"name": "x", "model": {"scratch": {}}, "sft": {"datasets": [{"path": "sft.jsonl"}]}},
     "base.enabled: a model.scratch recipe needs the base stage"),
])
def test_model_section_problems_are_named_at_validation(tiny_data, recipe, expected):
    from finloom.errors import BadInput

    with pytest.raises(BadInput, match=expected):
        parse_recipe(recipe, tiny_data)


def test_upstream_stages_follow_the_catalogue(tiny_data):
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(), "catalogue.yaml"))
    assert upstream_stages(recipe, "pretrain") == ["data", "base"]
    assert upstream_stages(recipe, "reward") == ["sft"]
    assert upstream_stages(recipe, "align") == ["sft"]
    with_rm = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"align.grpo.rewards": {"rm": 1.0}}), "catalogue_rm.yaml"))
    assert upstream_stages(with_rm, "align") == ["sft", "reward"]  # its reward model: stage:reward
    assert upstream_stages(recipe, "report") == ["data", "base", "pretrain", "sft", "reward", "align", "eval"]
    no_sft = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"sft.enabled": False, "align.grpo.gamma": 0}),
                                      "catalogue_no_sft.yaml"))
    assert upstream_stages(no_sft, "align") == ["pretrain"]  # starts from the newest model before it


def test_a_stage_teacher_must_be_a_stage_that_runs(tiny_data):
    from finloom.errors import BadInput

    scenario = [{"name": "s", "kind": "scenario", "files": [{"path": "fin_mcq.jsonl"}]}]
    with pytest.raises(BadInput, match="teacher.local_model: stage:sft: the sft stage is not enabled"):
        parse_recipe(tiny_recipe(**{"teacher": {"local_model": "stage:sft"}, "eval.benchmarks": scenario,
                                    "sft.enabled": False}), tiny_data)
    with pytest.raises(BadInput, match="teacher.local_model: stage:judge: no stage 'judge'"):
        parse_recipe(tiny_recipe(**{"teacher": {"local_model": "stage:judge"}, "eval.benchmarks": scenario}), tiny_data)


def _fingerprints(recipe_dict: dict, tiny_data: Path, run_dir: Path, name: str) -> dict[str, str]:
    runner = Runner(load_recipe(write_recipe(tiny_data, recipe_dict, name)), run_dir)
    return {stage: runner.fingerprint(stage, {})["fingerprint"] for stage in enabled_stages(runner.recipe)}


def test_every_setting_a_stage_reads_is_in_its_fingerprint(tiny_data, tiny_run):
    base = _fingerprints(tiny_recipe(), tiny_data, tiny_run, "fp_base.yaml")
    teacher = _fingerprints(tiny_recipe(**{"teacher": {"base_url": "http://127.0.0.1:9/v1"}}), tiny_data, tiny_run,
                            "fp_teacher.yaml")
    assert base == teacher  # no stage of this recipe asks the teacher
    scenario = {"name": "s", "kind": "scenario", "files": [{"path": "fin_mcq.jsonl"}]}
    judged = [_fingerprints(tiny_recipe(**{"teacher": {"base_url": url}, "eval.benchmarks": [scenario]}), tiny_data,
                            tiny_run, f"fp_judge{i}.yaml") for i, url in enumerate(("http://a/v1", "http://b/v1"))]
    assert [s for s in judged[0] if judged[0][s] != judged[1][s]] == ["eval"]  # another judge re-runs eval only
    data_judge = [_fingerprints(tiny_recipe(**{"teacher": {"base_url": url}, "data.judge": {"enabled": True}}),
                                tiny_data, tiny_run, f"fp_data_judge{i}.yaml")
                  for i, url in enumerate(("http://a/v1", "http://b/v1"))]
    assert data_judge[0]["data"] != data_judge[1]["data"]
    dtype = _fingerprints(tiny_recipe(**{"model.dtype": "float32"}), tiny_data, tiny_run, "fp_dtype.yaml")
    assert dtype["data"] == base["data"] and dtype["pretrain"] != base["pretrain"]  # tokenising ignores dtype


def test_a_stage_whose_settings_read_another_stage_reruns_when_it_changes(tiny_data, tiny_run, tmp_path, monkeypatch):
    """The reward -> align case: once align trains against the reward model, retraining the reward model must
    re-run align. ``stages_read`` is how a section says so; here align is made to read reward as GRPO will."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    changed = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"reward.train.learning_rate": 2e-4}),
                                       "reward_changed.yaml"))
    assert Runner(changed, run_dir).run(only="reward") == {"reward": "done"}
    assert Runner(changed, run_dir).run(only="align") == {"align": "skipped"}  # DPO does not read the reward model

    monkeypatch.setattr(AlignSection, "stages_read", lambda self: ("reward",))
    assert upstream_stages(changed, "align") == ["sft", "reward"]
    assert Runner(changed, run_dir).run(only="align") == {"align": "done"}
    align = read_manifest(run_dir, "align")
    assert align["inputs"]["stages"]["reward"] == read_manifest(run_dir, "reward")["fingerprint"]
    assert Runner(changed, run_dir).run(only="align") == {"align": "skipped"}


# -- layers -------------------------------------------------------------------------------------
# Lower layers never import higher ones; the stage families of one layer never import each other.
LAYERS = [
    {"errors", "files", "progress", "logs", "interrupts", "checks", "__init__"},  # checks: rules on a text, no imports
    {"starter"},  # its generator keeps only prompts whose reference passes their own checks
    {"recipe"},
    {"stages"},
    {"llm", "training", "grading"},
    {"data"},
    {"pretrain", "prompts", "sft", "reward", "align", "eval"},
    {"pas"},  # composes families: the prompt system's selection, the SFT trainer, scenario scoring, pairwise judging
    {"experiments"},
    {"report"},
    {"runner"},
    {"cli"},
    {"__main__"},
]
FAMILY_LAYER = 6


def _layer(package: str) -> int:
    found = [i for i, names in enumerate(LAYERS) if package in names]
    assert found, f"finloom.{package} is in no layer: add it to LAYERS where it belongs"
    return found[0]


def _imports(path: Path) -> set[str]:
    """Top-level finloom packages a module imports (at module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finloom."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("finloom."))
    return found


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        package = relative.parts[0].removesuffix(".py")
        for imported in _imports(path) - {package}:
            if _layer(imported) > _layer(package):
                problems.append(f"{relative} imports finloom.{imported} (a higher layer)")
            elif _layer(imported) == _layer(package) == FAMILY_LAYER:
                problems.append(f"{relative} imports finloom.{imported} (another stage family)")
    assert problems == []


def test_no_stage_module_imports_the_runner():
    for stage in STAGES.values():
        module = stage.entry.split(":")[0]
        path = SOURCE.joinpath(*module.split(".")[1:]).with_suffix(".py")
        assert "runner" not in _imports(path), module
