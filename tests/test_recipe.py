"""Recipe validation: every error names its field path and the CLI exits 2 without a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import finloom_cli, tiny_recipe, write_recipe
from finloom.errors import BadInput
from finloom.recipe import load_recipe, parse_recipe
from finloom.stages import enabled_stages


def test_defaults_are_filled_and_stages_ordered(tiny_data):
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(), "defaults.yaml"))
    assert recipe.align.method == "grpo" and recipe.align.grpo.gamma == 0.1 and recipe.align.dpo.beta == 0.1
    assert enabled_stages(recipe) == ["data", "base", "pretrain", "sft", "reward", "align", "eval", "report"]
    assert recipe.resolve("general.jsonl") == tiny_data / "general.jsonl"
    assert recipe.resolve("starter:finance_corpus.jsonl").name == "finance_corpus.jsonl"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"align.dpo.beta": "high"}, "align.dpo.beta: Input should be a valid number"),
        ({"data.colour": "red"}, "data.colour: unknown key"),
        ({"model.scratch.num_heads": 3}, "model.scratch: hidden_size must be a multiple of num_heads"),
        ({"align.method": "sac"}, "align.method: Input should be 'grpo', 'ppo', 'dpo' or 'kto'"),
        ({"align.grpo": {"group_size": 3}}, "align: train.batch_size x train.grad_accum (4) must be a multiple of grpo.group_size (3)"),
        ({"align.grpo.rewards": {"rm": 1.0}, "reward": {"enabled": False}},
         "align.grpo.reward_model: rewards.rm > 0 reads stage:reward, but the reward stage is not enabled"),
        ({"align.grpo.gamma": 0.1, "sft": {"enabled": False}},
         "align.grpo.sft_datasets: gamma > 0 needs SFT conversations"),
        ({"align.grpo.rewards": {"rubric": 1.0}}, "align.grpo.rewards.rubric: the rubric is judged by the teacher"),
        ({"align.grpo.rewards": {"format": 0, "mcq": 0, "calculation": 0, "constraints": 0}},
         "align.grpo.rewards: at least one component needs a weight above 0"),
        ({"align.grpo.reweighting": {"target": {"mcq": 1.5}}}, "mcq: 1.5 is not a reward in [0, 1]"),
        ({"base.train.max_steps": 0}, "base.train.max_steps: Input should be greater than or equal to 1"),
        ({"merge": {"models": ["stage:sft"]}}, "merge: models / checkpoints: a merge needs at least two"),
        ({"merge": {"checkpoints": 2, "weights": [1.0]}}, "weights: 1 given for 2 merged models"),
        ({"merge": {"models": ["stage:sft", "stage:align"]}}, "merge.models: stage:align: no enabled model stage before"),
        ({"merge": {"checkpoints": 2}, "sft.lora": {"enabled": True}}, "merge.checkpoints: the SFT checkpoints hold LoRA"),
        ({"sft.lora": {"quantize": "nf4"}}, "sft.lora: quantize: nf4 quantises the frozen base under LoRA adapters; set enabled: true"),
        ({"sft.lora": {"enabled": True, "quantize": "nf8"}}, "sft.lora.quantize: Input should be 'none', 'nf4' or 'int8'"),
        ({"prefs": {"samples": 3}}, "prefs: sources: at least one prompt file is required"),
        ({"prefs": {"sources": [{"path": "sft.jsonl"}], "models": ["stage:align"]}},
         "prefs.models: stage:align: no enabled model stage before prefs"),
        ({"reward.datasets": []}, "reward.datasets: at least one source is required (or enable the prefs stage"),
        ({"sft.train.gradient_checkpointing": {"every_k_layers": 0}},
         "sft.train.gradient_checkpointing.GradientCheckpointing.every_k_layers"),
    ],
)
def test_schema_errors_name_the_field(tiny_data, override, expected):
    with pytest.raises(BadInput) as error:
        parse_recipe(tiny_recipe(**override), tiny_data)
    assert expected in str(error.value)


def test_disabled_stage_needs_no_datasets_but_enabled_one_does(tiny_data):
    recipe = tiny_recipe(**{"sft": {"enabled": False}, "align.grpo.gamma": 0})  # gamma > 0 reads the SFT data
    assert "sft" not in enabled_stages(parse_recipe(recipe, tiny_data))
    with pytest.raises(BadInput, match=r"sft.datasets: at least one source is required \(or enable the prompts stage"):
        parse_recipe(tiny_recipe(**{"sft": {"train": {"max_steps": 2}}}), tiny_data)
    with pytest.raises(BadInput, match=r"reward.datasets: at least one source is required \(or enable the prefs stage"):
        parse_recipe(tiny_recipe(**{"reward": {"train": {"max_steps": 2}}}), tiny_data)
    with pytest.raises(BadInput, match="align: datasets: at least one source is required"):
        parse_recipe(tiny_recipe(**{"align": {"train": {"max_steps": 2}}}), tiny_data)


def test_hf_and_scratch_are_exclusive(tiny_data):
    with pytest.raises(BadInput, match="set exactly one of model.hf or model.scratch"):
        parse_recipe(tiny_recipe(**{"model.hf": "some/model"}), tiny_data)


def test_missing_data_file_is_named(tiny_data):
    recipe = tiny_recipe(**{"sft.datasets": [{"path": "missing.jsonl"}]})
    with pytest.raises(BadInput, match=r"sft.datasets\[0\].path: file not found: .*missing.jsonl"):
        parse_recipe(recipe, tiny_data)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"pretrain.train.learning_rate": "fast"}, "pretrain.train.learning_rate"),
        ({"eval.bogus": 1}, "eval.bogus: unknown key"),
        ({"data.finance": [{"path": "nope.jsonl"}]}, "data.finance[0].path: file not found"),
    ],
)
def test_cli_exits_2_naming_the_problem(tiny_data, override, expected):
    path = write_recipe(tiny_data, tiny_recipe(**override), "bad.yaml")
    for command in (("recipe", "validate", str(path)), ("run", str(path), "--run-dir", str(tiny_data / "runs" / "bad"))):
        result = finloom_cli(*command)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tiny_data / "runs" / "bad").exists()


@pytest.mark.parametrize(
    ("command", "expected"),
    [(("nosuch",), "No such command 'nosuch'"), (("run", "--nosuch", "x.yaml"), "No such option: --nosuch"),
     (("recipe", "check", "x.yaml"), "No such command 'check'")],
)
def test_cli_usage_errors_exit_2_with_usage_not_a_traceback(command, expected):
    result = finloom_cli(*command)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Usage: finloom" in result.stderr
    assert "Traceback" not in result.stderr


def test_recipe_show_prints_resolved_defaults(tiny_data):
    path = write_recipe(tiny_data, tiny_recipe(), "show.yaml")
    result = finloom_cli("recipe", "show", str(path))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["align"]["dpo"] == {"beta": 0.1, "loss_type": "sigmoid"}
    assert shown["eval"]["batch_size"] == 8


RECIPES = [p for p in sorted((Path(__file__).parents[1] / "recipes").rglob("*.yaml")) if p.parent.name != "accelerate"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_bundled_recipe_validates(path, tmp_path):
    """Real-model recipes name a model directory the user downloads; a stand-in with the same tokenizer shape
    (Qwen2.5's for the qwen recipe) takes its place, the recipe copied beside it as the README's download line
    puts it. `recipe validate` also checks the chat template the chat stages will use."""
    from families import family_model

    model = load_recipe(path, check_files=False).model
    if model is not None and model.hf:
        copy = tmp_path / "recipes" / path.name
        copy.parent.mkdir()
        shutil.copy(path, copy)
        family = "qwen2_5" if "qwen" in path.name else "llama3_base"
        family_model(family, ["a bond is debt; 债券是债务。"] * 20, (copy.parent / model.hf).resolve())
        path = copy
    result = finloom_cli("recipe", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert enabled_stages(load_recipe(path))[-1] == "report"


def test_a_template_that_is_not_prefix_preserving_fails_at_validation(tmp_path):
    from families import family_model

    model = family_model("qwen2_5", ["a bond is debt"] * 20, tmp_path / "model")
    template = tmp_path / "odd.jinja"  # drops earlier assistant turns once a later one exists, as reasoning templates do
    template.write_text("{%- for m in messages -%}{%- if m['role'] != 'assistant' or loop.last -%}"
                        "{{- m['role'] + ': ' + m['content'] + '\\n' }}{%- endif -%}{%- endfor -%}"
                        "{%- if add_generation_prompt -%}{{- 'assistant: ' }}{%- endif -%}", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: odd\nmodel: {{hf: {model}, chat_template: {template}}}\n"
                      "sft: {datasets: [{path: starter:sft_finance.jsonl}]}\n", encoding="utf-8")
    result = finloom_cli("recipe", "validate", str(recipe))
    assert result.returncode == 2 and f"model.chat_template: the template {str(template)!r}" in result.stderr
    assert "is not prefix-preserving" in result.stderr and "Traceback" not in result.stderr


def test_extends_lays_a_recipe_over_another(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "base.yaml").write_text("name: base\nseed: 1\nmodel: {scratch: {num_layers: 2}}\n"
                                        "eval: {max_items: 5, batch_size: 4}\n")
    child = tmp_path / "studies" / "child.yaml"
    child.write_text("extends: ../base.yaml\nname: child\nmodel: {scratch: {num_layers: 3}}\neval: {max_items: 7}\n")
    recipe = load_recipe(child)
    assert (recipe.name, recipe.seed, recipe.model.scratch.num_layers) == ("child", 1, 3)
    assert (recipe.eval.max_items, recipe.eval.batch_size) == (7, 4)  # mappings merge key by key
    assert recipe.source_dir == child.parent  # paths resolve against the file that is run
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nname: loop\n")
    with pytest.raises(BadInput, match="extends itself"):
        load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\nname: orphan\n")
    with pytest.raises(BadInput, match="extends: recipe file not found"):
        load_recipe(tmp_path / "orphan.yaml")
