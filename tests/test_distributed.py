"""A training stage under `accelerate launch --multi_gpu --num_processes 2` on the CPU (torchrun + gloo): every
process trains, one keeps the books. (`--cpu --num_processes 2` starts one process: accelerate's CPU launcher
needs MPI for more; without CUDA the multi-GPU launcher's processes use gloo on the CPU.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import tiny_recipe, write_recipe
from finloom.recipe import load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest

STEPS = 8


def launch_two(recipe, run_dir, stage: str) -> subprocess.CompletedProcess:
    """``finloom run RECIPE --only STAGE`` under accelerate's multi-GPU launcher: two gloo processes on the CPU."""
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "finloom", "run", str(recipe),
         "--run-dir", str(run_dir), "--only", stage],
        capture_output=True, text=True, timeout=600)


def _pretrain_recipe(tiny_data, batch_size: int, name: str):
    recipe = tiny_recipe(**{"pretrain.train": {"max_steps": STEPS, "batch_size": batch_size, "seq_len": 64,
                                               "save_steps": 4, "logging_steps": 1}})
    return write_recipe(tiny_data, recipe, name)


def test_pretrain_under_accelerate_launch_with_two_processes(tiny_data, tiny_run, tmp_path):
    """Two processes of 2 blocks each train like one process of 4 blocks: accelerate hands each process its half
    of the same global batch and averages the gradients (one process of 2 blocks gives other losses: it is
    how this test caught a launch that started one process). Only rank 0 takes the run lock (a second taker would
    fail, the lock being non-blocking) and writes manifests, the model and the curves."""
    single_dir, launched_dir = tmp_path / "single", tmp_path / "launched"
    for folder in (single_dir, launched_dir):
        shutil.copytree(tiny_run, folder)
    single = Runner(load_recipe(_pretrain_recipe(tiny_data, 4, "dist_single.yaml")), single_dir)
    assert single.run(only="pretrain") == {"pretrain": "done"}

    launched_recipe = _pretrain_recipe(tiny_data, 2, "dist_launched.yaml")
    done = launch_two(launched_recipe, launched_dir, "pretrain")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("✓ pretrain") == 1  # one process reports; the other trains silently
    assert "locked by" not in done.stderr
    assert re.fullmatch(r"pid \d+ started [\d.]+", (launched_dir / ".lock").read_text())

    manifest = read_manifest(launched_dir, "pretrain")
    assert manifest["status"] == "done" and manifest["metrics"]["train_steps"] == STEPS
    assert sorted(p.name for p in (launched_dir / "pretrain").iterdir() if p.name.startswith((".", "manifest"))) == [
        "manifest.json"]  # no partial model directory, no second manifest
    assert (launched_dir / "pretrain" / "model" / "model.safetensors").exists()
    assert len(list((launched_dir / "pretrain" / "tensorboard").glob("events.*"))) == 1

    def losses(run_dir):
        history = json.loads((run_dir / "pretrain" / "log_history.json").read_text())
        return [entry["loss"] for entry in history if "loss" in entry]

    one, two = losses(single_dir), losses(launched_dir)
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=2e-3)  # the same global batches, gradients averaged over the processes
    assert any("self_constraint/general_kl" in entry
               for entry in json.loads((launched_dir / "pretrain" / "log_history.json").read_text()))


def test_grpo_under_accelerate_launch_with_two_processes(tiny_data, tiny_run, tmp_path):
    """GRPO on two processes: each samples its half of every group batch (TRL keeps a prompt's answers together
    across processes), both draw the same prompts by the same category weights (every process evaluates the
    held-out prompts and reaches the same weights), and one writes the category log and the model."""
    run_dir = tmp_path / "launched"
    shutil.copytree(tiny_run, run_dir)
    recipe = tiny_recipe(**{"align.train": {"max_steps": 4, "batch_size": 2, "seq_len": 96, "save_steps": 2,
                                            "logging_steps": 1},
                            "align.grpo.reweighting": {"eval_every": 2, "max_prompts": 3, "holdout": 0.2}})
    path = write_recipe(tiny_data, recipe, "dist_grpo.yaml")
    done = launch_two(path, run_dir, "align")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("✓ align") == 1
    metrics = read_manifest(run_dir, "align")["metrics"]
    assert metrics["train_steps"] == 4 and metrics["method"] == "grpo"
    rows = [json.loads(line) for line in (run_dir / "align" / "categories.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]  # written once, not once per process
    assert (run_dir / "align" / "model" / "model.safetensors").exists()
