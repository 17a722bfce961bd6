"""Recipe settings reach the trainers: each stage is run from a recipe and its trainer caught as it is built.

The trainers' own tests check the formulas; these check the code between the recipe and them (a stage that
passed the opposite KL direction, a lambda of 0, or swapped chosen and rejected, left every formula test green).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import tiny_recipe, write_recipe
from finloom.recipe import load_recipe
from finloom.runner import Runner


class Caught(Exception):
    """Raised by a trainer as it is built, after recording what the stage passed it."""


def catch(monkeypatch, module, name: str) -> dict:
    seen: dict = {}
    original = getattr(module, name)

    class Catching(original):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            raise Caught

    monkeypatch.setattr(module, name, Catching)
    return seen


def copy_of_run(tiny_data, tiny_run, tmp_path, name: str, **overrides):
    """(recipe, run directory, runner): a copy of the tiny run under ``tmp_path`` with the tiny recipe plus
    ``overrides`` (written as ``NAME.yaml``), for a test that re-runs one of its stages."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**overrides), f"{name}.yaml"))
    return recipe, run_dir, Runner(recipe, run_dir)


def _run(tiny_data, tiny_run, tmp_path, stage: str, **overrides) -> None:
    _, _, runner = copy_of_run(tiny_data, tiny_run, tmp_path, f"wiring_{stage}", **overrides)
    with pytest.raises(Caught):
        runner.run(only=stage, force=True)


@pytest.mark.parametrize("objective", [
    {"kl_direction": "forward", "kl_lambda": 2.5, "kl_warmup_steps": 7, "kl_top_k": None, "general_ce_weight": 0.3},
    {"kl_direction": "reverse", "kl_lambda": 0.4, "kl_warmup_steps": 0, "kl_top_k": 32, "kl_tail": False},
    {"kl_direction": "reverse", "kl_lambda": 1.5, "kl_budget": 0.02},
])
def test_pretrain_objective_settings_reach_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch, objective):
    import finloom.pretrain.stage as stage

    seen = catch(monkeypatch, stage, "SelfConstraintTrainer")
    _run(tiny_data, tiny_run, tmp_path, "pretrain", **{"pretrain.objective": objective})
    args = seen["args"]
    for key, value in objective.items():
        assert getattr(args, key) == value, key
    assert args.kl_tail == objective.get("kl_tail", True)
    assert seen["ref_model"] is not None and seen.get("reference") is None  # online: a frozen copy


def test_a_precomputed_reference_reaches_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch):
    import finloom.pretrain.stage as stage
    from finloom.pretrain.reference import PrecomputedReference

    seen = catch(monkeypatch, stage, "SelfConstraintTrainer")
    _run(tiny_data, tiny_run, tmp_path, "pretrain",
         **{"pretrain.objective": {"kl_top_k": 16, "reference": "precomputed"}})
    assert isinstance(seen["reference"], PrecomputedReference) and seen.get("ref_model") is None
    assert seen["args"].kl_top_k == 16


def test_plain_ce_pretraining_uses_no_reference(tiny_data, tiny_run, tmp_path, monkeypatch):
    import finloom.pretrain.stage as stage

    seen = catch(monkeypatch, stage, "CPTTrainer")
    _run(tiny_data, tiny_run, tmp_path, "pretrain", **{"pretrain.objective": {"type": "ce"}})
    assert "ref_model" not in seen and "reference" not in seen


@pytest.mark.parametrize(("beta", "loss_type"), [(0.05, "sigmoid"), (0.3, "ipo")])
def test_dpo_settings_and_pair_order_reach_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch, beta, loss_type):
    import finloom.align.stage as stage

    seen = catch(monkeypatch, stage, "DPOTrainer")
    _run(tiny_data, tiny_run, tmp_path, "align", **{"align.method": "dpo", "align.datasets": [{"path": "prefs.jsonl"}],
                                                    "align.dpo": {"beta": beta, "loss_type": loss_type}})
    assert seen["args"].beta == beta and seen["args"].loss_type == [loss_type]  # TRL keeps loss types as a list
    pairs = [json.loads(line) for line in (tiny_data / "prefs.jsonl").read_text().splitlines()]
    rows = list(seen["train_dataset"])
    assert [r["chosen"] for r in rows] == [p["chosen"] for p in pairs]  # chosen stays chosen
    assert [r["rejected"] for r in rows] == [p["rejected"] for p in pairs]
    assert seen["ref_model"] is not seen["model"]


def test_kto_settings_and_labels_reach_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch):
    import finloom.align.stage as stage

    seen = catch(monkeypatch, stage, "KTOTrainer")
    _run(tiny_data, tiny_run, tmp_path, "align", **{"align.method": "kto", "align.datasets": [{"path": "prefs.jsonl"}],
                                                    "align.kto": {"beta": 0.2, "undesirable_weight": 1.5}})
    assert seen["args"].beta == 0.2 and seen["args"].undesirable_weight == 1.5 and seen["args"].desirable_weight == 1
    pairs = [json.loads(line) for line in (tiny_data / "prefs.jsonl").read_text().splitlines()]
    rows = list(seen["train_dataset"])
    assert [r["completion"] for r in rows if r["label"]] == [p["chosen"] for p in pairs]  # chosen is the good one
    assert [r["completion"] for r in rows if not r["label"]] == [p["rejected"] for p in pairs]
    assert seen["ref_model"] is not seen["model"]


@pytest.mark.parametrize("grpo", [
    {"group_size": 2, "beta": 0.3, "top_k": 17, "gamma": 0.4, "temperature": 0.7, "max_completion_tokens": 5,
     "sft_batch_size": 3},
    {"group_size": 4, "beta": 0.0, "top_k": 500, "gamma": 0.0, "reweighting": {"enabled": False}},
])
def test_grpo_settings_reach_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch, grpo):
    import finloom.align.stage as stage

    seen = catch(monkeypatch, stage, "FinloomGRPOTrainer")
    _run(tiny_data, tiny_run, tmp_path, "align", **{"align.grpo": grpo | {"rewards": {"mcq": 2.0, "format": 0.5}}})
    args = seen["args"]
    assert (args.num_generations, args.kl_beta, args.kl_top_k, args.sft_kl_gamma) == (
        grpo["group_size"], grpo["beta"], grpo["top_k"], grpo["gamma"])
    assert args.beta == 0  # TRL's own approximate KL stays off
    assert args.sft_kl_batch_size == grpo.get("sft_batch_size")
    assert args.temperature == grpo.get("temperature", 1.0)
    assert args.max_completion_length == grpo.get("max_completion_tokens", 64)
    reward = seen["reward_funcs"][0]
    assert reward.weights["mcq"] == 2.0 and reward.weights["format"] == 0.5 and reward.weights["rm"] == 0
    records = [json.loads(line) for line in (tiny_data / "rl.jsonl").read_text().splitlines()][:-1]  # last: broken
    rows = list(seen["train_dataset"])
    by_id = {r["id"]: r for r in records}
    assert len(rows) == len(records) - 2 - 1  # 10% of each category (16 mcq, 8 constraints), at least one, held out
    for row in rows:
        task = json.loads(row["reward_task"])
        assert row["prompt"] == by_id[row["id"]]["prompt"] and task.get("answer") == by_id[row["id"]].get("answer")
        assert task.get("checks") == by_id[row["id"]].get("checks")
    if grpo["gamma"]:  # the regulariser's data: the sft stage's conversations, assistant tokens labelled
        sft = [json.loads(line) for line in (tiny_data / "sft.jsonl").read_text().splitlines()]
        assert len(seen["sft_rows"]) == len(sft) - 1  # one has no answer
        assert all(any(label != -100 for label in row["labels"]) for row in seen["sft_rows"])
    else:
        assert seen["sft_rows"] is None
    categories = seen["prompt_categories"]
    assert (categories is None) == (grpo.get("reweighting") == {"enabled": False})
    if categories is not None:
        assert categories == [row["category"] for row in rows]


def test_ppo_reaches_its_trainer_with_the_grpo_settings(tiny_data, tiny_run, tmp_path, monkeypatch):
    import finloom.align.stage as stage

    seen = catch(monkeypatch, stage, "FinloomPPOTrainer")
    _run(tiny_data, tiny_run, tmp_path, "align", **{"align.method": "ppo", "align.grpo.beta": 0.2,
                                                    "align.ppo": {"gae_lambda": 0.8, "value_coef": 0.3}})
    args = seen["args"]
    assert (args.gae_lambda, args.value_coef, args.value_clip) == (0.8, 0.3, 0.2)
    assert (args.kl_beta, args.num_generations, args.kl_top_k) == (0.2, 2, 50)  # the tiny recipe's grpo settings
    assert seen["sft_rows"] and seen["prompt_categories"]


def test_vllm_on_where_it_cannot_run_is_a_clear_error(tiny_data, tiny_run, tmp_path):
    from finloom.errors import BadInput

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"align.grpo.vllm": "on"}), "wiring_vllm.yaml"))
    with pytest.raises(BadInput, match="align.grpo.vllm: on, but (no GPU is visible|vLLM is not installed)"):
        Runner(recipe, run_dir).run(only="align", force=True)


@pytest.mark.parametrize("alpha", [0.0, 2.5])
def test_reward_score_settings_reach_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch, alpha):
    import finloom.reward.stage as stage

    seen = catch(monkeypatch, stage, "ScoredRewardTrainer")
    _run(tiny_data, tiny_run, tmp_path, "reward", **{"reward.score_alpha": alpha, "reward.holdout": 0.25})
    assert seen["args"].score_alpha == alpha
    pairs = len((tiny_data / "prefs.jsonl").read_text().splitlines())
    assert len(seen["eval_dataset"]) == int(pairs * 0.25) and len(seen["train_dataset"]) == pairs - int(pairs * 0.25)


@pytest.mark.parametrize("packing", [True, False])
def test_sft_trains_on_assistant_tokens_only(tiny_data, tiny_run, tmp_path, monkeypatch, packing):
    """sft.packing reaches the trainer: packed rows of whole conversations with finloom's collator, or the
    conversations one per row with TRL's; either way the labels are the assistant turns, nothing else."""
    import finloom.sft.stage as stage
    from finloom.llm.loading import load_tokenizer
    from finloom.sft.packing import PackedCollator

    seen = catch(monkeypatch, stage, "SFTTrainer")
    _run(tiny_data, tiny_run, tmp_path, "sft", **{"sft.packing": packing})
    tokenizer = load_tokenizer(tiny_run / "sft" / "model")
    conversations = [json.loads(line)["messages"] for line in (tiny_data / "sft.jsonl").read_text().splitlines()]
    answers = ["".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
               for messages in conversations if messages[-1]["role"] == "assistant"]
    rows = list(seen["train_dataset"])
    samples = []
    for row in rows:
        lengths = row["seq_lengths"] if packing else [len(row["input_ids"])]
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        samples += [row["labels"][start:start + n] for start, n in zip(starts, lengths)]
    assert (len(rows) < len(answers)) == packing and isinstance(seen["data_collator"], PackedCollator) == packing
    assert len(samples) == len(answers) == len(conversations) - 1  # the one without an answer is a reject
    trained = sorted(tokenizer.decode([t for t in labels if t != -100]) for labels in samples)
    assert trained == sorted(answers)


def test_curves_go_to_the_trackers_the_recipe_names_offline(tiny_data, tiny_run, tmp_path, monkeypatch):
    """report_to reaches the trainer: mlflow, pointed at a local folder (its offline mode; mlflow-skinny, the test
    extra, keeps a file store), gets a run named RECIPE/STAGE with the training loss, beside TensorBoard's event
    files; the manifest says where both went."""
    import mlflow

    from finloom.stages import read_manifest

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"report_to": ["tensorboard", "mlflow"]}),
                                      "trackers.yaml"))
    assert Runner(recipe, run_dir).run(only="sft", force=True) == {"sft": "done"}
    assert read_manifest(run_dir, "sft")["metrics"]["curves"] == {"tensorboard": "sft/tensorboard", "mlflow": store}
    assert list((run_dir / "sft" / "tensorboard").glob("events.out.tfevents.*"))
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [run.info.run_name for run in runs] == ["tiny/sft"]
    assert runs[0].data.metrics["train_loss"] == pytest.approx(read_manifest(run_dir, "sft")["metrics"]["train_loss"], abs=1e-4)


def test_a_tracker_that_is_not_installed_is_named_at_validation(tiny_data):
    import importlib.util

    from finloom.errors import BadInput
    from finloom.recipe import parse_recipe

    missing = next(name for name in ("wandb", "trackio") if importlib.util.find_spec(name) is None)
    with pytest.raises(BadInput, match=f"report_to: {missing} is not installed"):
        parse_recipe(tiny_recipe(**{"report_to": [missing]}), tiny_data)


@pytest.mark.parametrize("prompts_on", [False, True])
def test_sft_trains_on_the_prompt_systems_set_where_it_is_on(tiny_data, tiny_run, tmp_path, monkeypatch, prompts_on):
    """With the prompt system on, its SFT set (prompts/sft.jsonl, written here) joins sft.datasets; off, it is not
    read even where it exists."""
    import finloom.sft.stage as stage

    extra = {"prompts.enabled": True, "prompts.sources": [{"path": "sft.jsonl"}]} if prompts_on else {}
    _, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "sft_prompts", **{"sft.packing": False}, **extra)
    built = [{"messages": [{"role": "user", "content": f"built prompt {i}"},
                           {"role": "assistant", "content": f"built answer {i}"}]} for i in range(2)]
    (run_dir / "prompts").mkdir(exist_ok=True)
    (run_dir / "prompts" / "sft.jsonl").write_text("".join(json.dumps(row) + "\n" for row in built), encoding="utf-8")
    (run_dir / "prompts" / "manifest.json").write_text(json.dumps({"status": "done",
                                                                  "outputs": {"sft": "prompts/sft.jsonl"}}))
    seen = catch(monkeypatch, stage, "SFTTrainer")
    with pytest.raises(Caught):
        runner.run(only="sft", force=True)
    texts = [seen["processing_class"].decode(row["input_ids"]) for row in seen["train_dataset"]]
    assert len(texts) == 17 - 1 + 2 * prompts_on  # the tiny sft.jsonl's 16 conversations with an answer
    assert sum("built answer" in text for text in texts) == 2 * prompts_on


def test_sft_checkpointing_and_lora_settings_reach_training(tiny_data, tiny_run, tmp_path):
    """train.gradient_checkpointing {every_k_layers} is what training used (the manifest reports the k applied),
    and sft.lora trains adapters that are saved merged into a plain model that moved from its start."""
    from safetensors.torch import load_file

    from finloom.stages import read_manifest

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    train = {"max_steps": 3, "batch_size": 4, "seq_len": 128, "learning_rate": 1e-2,
             "gradient_checkpointing": {"every_k_layers": 2}}
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"sft.train": train, "sft.lora": {"enabled": True, "r": 4}}),
                                      "sft_lora.yaml"))
    assert Runner(recipe, run_dir).run(only="sft", force=True) == {"sft": "done"}
    assert read_manifest(run_dir, "sft")["metrics"]["checkpoint_every_k_layers"] == 2
    model_dir = run_dir / "sft" / "model"
    assert not (model_dir / "adapter_config.json").exists()
    tuned, start = (load_file(d / "model.safetensors") for d in (model_dir, run_dir / "pretrain" / "model"))
    assert tuned.keys() == start.keys()
    moved = [name for name in tuned if "layers" in name and not torch.equal(tuned[name], start[name])]
    assert moved and all("proj" in name for name in moved)  # LoRA touches the linear layers only


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_sft_lora_quantize_trains_on_a_quantised_base_and_saves_full_precision(tiny_data, tiny_run, tmp_path, quantize):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip install -e '.[qlora]'")
    """sft.lora.quantize reaches the trainer (the base it trained held nf4 / int8 weights, bitsandbytes on the CPU)
    and the saved model is the adapters merged into the original float32 weights: every weight changed by a matrix
    of rank at most r, which a merge into the dequantised weights (quantisation error everywhere) would not be."""
    from safetensors.torch import load_file

    from finloom.stages import read_manifest

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    train = {"max_steps": 3, "batch_size": 4, "seq_len": 128, "learning_rate": 1e-2}
    lora = {"enabled": True, "r": 2, "quantize": quantize}
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"sft.train": train, "sft.lora": lora}), "sft_qlora.yaml"))
    assert Runner(recipe, run_dir).run(only="sft", force=True) == {"sft": "done"}
    metrics = read_manifest(run_dir, "sft")["metrics"]
    assert metrics["quantized_base"] == quantize
    model_dir = run_dir / "sft" / "model"
    assert "quantization_config" not in json.loads((model_dir / "config.json").read_text())
    tuned, start = (load_file(d / "model.safetensors") for d in (model_dir, run_dir / "pretrain" / "model"))
    assert tuned.keys() == start.keys() and all(tuned[name].dtype == torch.float32 for name in tuned)
    deltas = {name: tuned[name] - start[name] for name in tuned if tuned[name].dim() == 2}
    moved = {name: delta for name, delta in deltas.items() if delta.abs().max() > 0}
    assert moved and all("proj" in name for name in moved)
    assert max(int(torch.linalg.matrix_rank(delta.double(), atol=1e-6)) for delta in moved.values()) <= 2
    assert metrics["trainable_parameters"] == sum(2 * sum(delta.shape) for name, delta in deltas.items() if "proj" in name)


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_quantised_base_under_fsdp_or_zero3_is_refused_naming_the_setting(tiny_run, monkeypatch, variable):
    from finloom.errors import BadInput
    from finloom.llm.loading import load_trainable

    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip install -e '.[qlora]'")
    monkeypatch.setenv(variable, "true")  # what accelerate launch sets for those configs
    with pytest.raises(BadInput, match="lora.quantize: nf4 holds one quantised copy of the base per process"):
        load_trainable(tiny_run / "sft" / "model", quantize="nf4")
    monkeypatch.setenv(variable, "false")
    assert load_trainable(tiny_run / "sft" / "model", quantize="nf4").is_quantized
