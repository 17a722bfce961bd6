"""A training stage under a 2-process launch (gloo DDP on the CPU): every process trains, one keeps the books."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from finloom.runner import read_manifest


def test_pretrain_stage_under_torchrun_with_two_processes(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = read_manifest(run_dir, "pretrain")["finished_at"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "finloom",
                           "stage", "pretrain", "--run-dir", str(run_dir), "--force"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(run_dir, "pretrain")
    assert manifest["status"] == "done" and manifest["finished_at"] != before
    assert manifest["metrics"]["train_steps"] == 8
    assert done.stderr.count("✓ pretrain") == 1  # one process reports; the other trains silently
    assert (run_dir / "pretrain" / "model" / "model.safetensors").exists()
    assert not list((run_dir / "pretrain").glob(".model.partial*"))
    assert len(list((run_dir / "pretrain" / "tensorboard").glob("events.*"))) == 1
    history = json.loads((run_dir / "pretrain" / "log_history.json").read_text())
    assert any("self_constraint/general_kl" in entry for entry in history)
