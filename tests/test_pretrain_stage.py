"""The base and pretrain stages around their trainers: what they hand the trainer besides the objective (held-out
sets, evaluation schedule, run name, the reference in each mode) and the metrics their manifests report.

Each test re-runs a stage on a copy of the tiny run, so a change to the stage is seen here even where the shared
run was built before it (benchmarks/mutation.py keeps that run across mutants)."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe, write_recipe
from finloom.data.mixing import default_separator_id
from finloom.errors import BadInput
from finloom.files import iter_texts
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.pretrain.stage import (
    finance_domain_index,
    frozen_copy_device,
    heldout_datasets,
    precompute_for_run,
    shard_dataset,
)
from finloom.recipe import load_recipe
from finloom.stages import read_manifest
from test_wiring import Caught, catch, copy_of_run


def test_the_pretrain_stage_hands_its_trainer_the_schedule_heldout_sets_and_names(tiny_data, tiny_run, tmp_path,
                                                                                  monkeypatch):
    import finloom.pretrain.stage as stage

    seen = catch(monkeypatch, stage, "SelfConstraintTrainer")
    recipe, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "pretrain_handover",
                                     **{"pretrain.eval_every": 3, "pretrain.eval_max_tokens": 192,
                                        "pretrain.train.batch_size": 2})
    with pytest.raises(Caught):
        runner.run(only="pretrain", force=True)
    args = seen["args"]
    assert (args.eval_strategy, args.eval_steps, args.eval_on_start) == ("steps", 3, True)
    assert args.per_device_eval_batch_size == 2 and args.per_device_train_batch_size == 2
    assert args.run_name == "tiny/pretrain" and args.seed == recipe.seed
    assert args.output_dir == str(run_dir / "pretrain" / "checkpoints")
    assert args.finance_domain == 0  # the shards' domains are ["finance", "general"]
    assert args.restore_callback_states_from_checkpoint is False  # no KL budget: nothing to restore
    outputs = read_manifest(run_dir, "data")["outputs"]
    tokenizer = load_tokenizer(tiny_run / "base" / "model")
    assert set(seen["eval_dataset"]) == {"finance", "general"}
    for domain, blocks in seen["eval_dataset"].items():
        texts = list(iter_texts(run_dir / outputs[f"{domain}_heldout"]))
        separator = default_separator_id(tokenizer)
        ids = [i for text in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in (*text, separator)]
        assert len(blocks) == 3  # 192 tokens of 64-token blocks
        assert blocks["input_ids"] == blocks["labels"] == [ids[i * 64:(i + 1) * 64] for i in range(3)]
    batch = seen["data_collator"](list(itertools.islice(iter(seen["train_dataset"]), 2)))
    assert set(batch) == {"input_ids", "labels", "domain", "position"}  # self-constraint batches carry domains


def test_without_eval_every_the_stage_neither_evaluates_nor_reports_heldout_losses(tiny_data, tiny_run, tmp_path,
                                                                                    monkeypatch):
    import finloom.pretrain.stage as stage

    seen = catch(monkeypatch, stage, "SelfConstraintTrainer")
    _, _, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "pretrain_no_eval",
                          **{"pretrain.eval_every": None})
    with pytest.raises(Caught):
        runner.run(only="pretrain", force=True)
    assert seen["eval_dataset"] is None and seen["args"].eval_strategy == "no"


def test_eval_every_without_heldout_texts_trains_without_evaluating(tiny_run, tmp_path, monkeypatch):
    """A data stage that kept no held-out texts: the schedule asks for evaluations there is nothing to run on."""
    import finloom.pretrain.stage as stage
    from finloom.recipe import ModelLoading, PretrainSection

    seen = catch(monkeypatch, stage, "SelfConstraintTrainer")
    section = PretrainSection(eval_every=2, train={"max_steps": 2, "batch_size": 2, "seq_len": 64})
    inputs = stage.CPTInputs(shards=tiny_run / "data" / "shards" / "pretrain", seed=7, loading=ModelLoading(),
                             start=tiny_run / "base" / "model", heldout={})
    with pytest.raises(Caught):
        stage.train_causal_lm(load_causal_lm(tiny_run / "base" / "model"), load_tokenizer(tiny_run / "base" / "model"),
                              section, inputs, tmp_path, resume=False, label="pretrain")
    assert seen["eval_dataset"] is None and seen["args"].eval_strategy == "no"


@pytest.mark.parametrize(("objective", "lora", "expected"), [
    ({"reference": "online", "reference_device": "cpu"}, False, "ref_model"),
    ({"reference": "online"}, True, None),  # LoRA: the start model is the policy with its adapters off
    ({"reference": "precomputed", "kl_top_k": 8}, True, "reference"),
])
def test_each_reference_mode_reaches_the_trainer(tiny_data, tiny_run, tmp_path, monkeypatch, objective, lora,
                                                 expected):
    import finloom.pretrain.stage as stage

    seen = catch(monkeypatch, stage, "SelfConstraintTrainer")
    _, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "pretrain_reference",
                                **{"pretrain.objective": objective, "pretrain.lora": {"enabled": lora, "r": 2}})
    with pytest.raises(Caught):
        runner.run(only="pretrain", force=True)
    given = {key for key in ("ref_model", "reference") if seen.get(key) is not None}
    assert given == ({expected} if expected else set())
    if expected == "ref_model":  # a frozen copy of the model pretraining starts from: the base stage's
        start = load_causal_lm(run_dir / "base" / "model").state_dict()
        assert all(torch.equal(weight, start[name]) for name, weight in seen["ref_model"].state_dict().items())
    assert hasattr(seen["model"], "peft_config") is lora


def test_the_pretrain_stage_reports_what_it_trained_on(tiny_data, tiny_run, tmp_path):
    _, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "pretrain_metrics",
                                **{"pretrain.eval_every": 2, "pretrain.eval_max_tokens": 64,
                                   "pretrain.train": {"max_steps": 3, "batch_size": 2, "grad_accum": 2, "seq_len": 64,
                                                      "save_steps": 3}})
    assert runner.run(only="pretrain", force=True) == {"pretrain": "done"}
    metrics = read_manifest(run_dir, "pretrain")["metrics"]
    index = json.loads((run_dir / "data" / "shards" / "pretrain" / "index.json").read_text())
    assert metrics["objective"] == "self_constraint"
    assert metrics["tokens_seen"] == 3 * 2 * 2 * 64
    assert metrics["shard_epochs"] == round(3 * 2 * 2 * 64 / index["tokens"], 3)
    assert metrics["step_time_s"] == round(metrics["train_seconds"] / 3, 4)
    assert metrics["mix"] == {domain: {"token_share": values["share"], "epochs_in_shards": values["epochs"]}
                              for domain, values in index["mix"]["domains"].items()}
    history = json.loads((run_dir / "pretrain" / "log_history.json").read_text())
    for domain in ("finance", "general"):
        evaluated = [entry for entry in history if f"eval_{domain}_loss" in entry]
        assert [entry["step"] for entry in evaluated] == [0, 2, 3]  # at the start, every 2 steps, at the end
        assert metrics[f"heldout_{domain}_loss"] == round(evaluated[-1][f"eval_{domain}_loss"], 5)


def test_the_base_stage_reports_its_model_and_plain_ce(tiny_data, tiny_run, tmp_path):
    _, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "base_metrics",
                                **{"base.train": {"max_steps": 2, "batch_size": 2, "seq_len": 64, "save_steps": 2}})
    assert runner.run(only="base", force=True) == {"base": "done"}
    metrics = read_manifest(run_dir, "base")["metrics"]
    model = load_causal_lm(run_dir / "base" / "model")
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters())
    assert metrics["vocab_size"] == len(load_tokenizer(run_dir / "base" / "model")) == 400
    assert metrics["objective"] == "ce" and metrics["tokens_seen"] == 2 * 2 * 64
    assert set(metrics["mix"]) == {"general"} and "heldout_general_loss" not in metrics  # base has no eval_every


def test_heldout_sets_keep_at_least_one_block_and_skip_empty_domains(tiny_run):
    tokenizer = load_tokenizer(tiny_run / "base" / "model")
    text = " ".join(["the bond pays a coupon every year"] * 40)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [default_separator_id(tokenizer)]
    sets = heldout_datasets({"finance": [text], "general": []}, tokenizer, 16, max_tokens=40)
    assert set(sets) == {"finance"}  # a domain with no blocks gets no dataset
    assert sets["finance"]["input_ids"] == [ids[:16], ids[16:32]]  # 40 tokens allow two whole blocks
    assert heldout_datasets({"finance": [text]}, tokenizer, 16, max_tokens=5)["finance"]["input_ids"] == [ids[:16]]


@pytest.mark.parametrize(("setting", "gpu", "device"), [("same", True, "cuda"), ("same", False, "cpu"),
                                                         ("cpu", True, "cpu"), ("cpu", False, "cpu")])
def test_the_frozen_copy_lives_beside_the_policy_unless_sent_to_the_cpu(setting, gpu, device):
    assert frozen_copy_device(setting, gpu) == device


def test_the_finance_domain_is_found_by_name():
    class Shards:
        def __init__(self, domains):
            self.index = {"domains": domains}

    assert [finance_domain_index(Shards(d)) for d in (["general", "finance"], ["finance"], ["general"])] == [1, 0, -1]


def test_shards_of_another_tokenizer_are_refused_naming_the_mix(tiny_run, tmp_path):
    """Both ways round (the tiny run's shards with another tokenizer, and the other's shards with the run's): the
    check is equality of the two tokenizers, whichever hash sorts first."""
    from finloom.data.mixing import write_token_shards
    from finloom.llm.scratch import train_tokenizer

    own = load_tokenizer(tiny_run / "base" / "model")
    other = train_tokenizer(["a different corpus of words"] * 20, vocab_size=300)
    texts = ["a different corpus of words " * 8] * 4
    write_token_shards({"finance": texts, "general": texts}, other, tmp_path / "other",
                       {"finance": 0.5, "general": 0.5}, seq_len=16)
    for shards, tokenizer in ((tiny_run / "data" / "shards" / "pretrain", other), (tmp_path / "other", own)):
        with pytest.raises(BadInput, match=r"^pretrain\.mix: the shards in .* another tokenizer"):
            shard_dataset(shards, tokenizer, seed=0, label="pretrain")
    assert len(shard_dataset(tiny_run / "data" / "shards" / "pretrain", own, seed=0, label="pretrain")) == 190
    assert len(shard_dataset(tmp_path / "other", other, seed=0, label="pretrain")) > 0


@pytest.mark.parametrize("objective", [{"type": "ce"}, {"type": "ce", "kl_top_k": 16},
                                       {"type": "self_constraint", "kl_top_k": None}])
def test_precomputing_a_reference_needs_self_constraint_with_top_k(tiny_data, tiny_run, objective):
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"pretrain.objective": objective}), "precompute.yaml"))
    with pytest.raises(BadInput, match=r"^pretrain\.objective: precomputing the reference needs"):
        precompute_for_run(tiny_run, recipe, batch_size=4)


@pytest.mark.parametrize(("save_steps", "resumed_from"), [(1, 1), (2, None)])
def test_a_run_killed_after_its_last_checkpoint_resumes_from_the_one_before(tiny_data, tiny_run, tmp_path, save_steps,
                                                                           resumed_from):
    """The kill came after the checkpoint at max_steps but before the model was saved. transformers' Trainer would
    train a step past max_steps from that checkpoint; the stage resumes from the one before it (or starts again
    where there is none) and ends with the uninterrupted run's weights."""
    _, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "pretrain_resume_at_end",
                                **{"pretrain.eval_every": None,
                                   "pretrain.train": {"max_steps": 2, "batch_size": 2, "seq_len": 64,
                                                      "save_steps": save_steps, "logging_steps": 1}})
    assert runner.run(only="pretrain", force=True) == {"pretrain": "done"}
    straight = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
    manifest_path = run_dir / "pretrain" / "manifest.json"
    manifest_path.write_text(json.dumps(json.loads(manifest_path.read_text()) | {"status": "interrupted"}))
    shutil.rmtree(run_dir / "pretrain" / "model")
    assert runner.run(only="pretrain") == {"pretrain": "done"}
    metrics = read_manifest(run_dir, "pretrain")["metrics"]
    assert (metrics["resumed_from_step"], metrics["train_steps"]) == (resumed_from, 2)
    assert metrics["step_time_s"] == round(metrics["train_seconds"] / (2 - (resumed_from or 0)), 4)
    assert math.isfinite(metrics["train_loss"])
    resumed = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
    assert all(torch.equal(weight, resumed[name]) for name, weight in straight.items())
