"""The runner: manifests, skip when unchanged, re-run downstream on change, lock, resume, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe, write_recipe
from finloom.errors import RunLocked
from finloom.recipe import load_recipe
from finloom.runner import RunLock, Runner, stage_status
from finloom.stages import StageResult, read_manifest
from finloom.training import complete_checkpoints, last_complete_checkpoint, logged_mean_loss

STAGES = ["data", "base", "pretrain", "sft", "reward", "align", "eval", "report"]


def test_manifests_record_what_went_in_and_came_out(tiny_run):
    for stage in STAGES:
        manifest = read_manifest(tiny_run, stage)
        assert manifest["status"] == "done", stage
        assert manifest["seed"] == 7
        assert len(manifest["config_hash"]) == 64
        assert manifest["wall_time_s"] >= 0 and manifest["peak_rss_mb"] > 0
        assert manifest["versions"]["torch"] and manifest["versions"]["transformers"]
        for name, relative in manifest["outputs"].items():
            assert (tiny_run / relative).exists(), (stage, name)
            assert len(manifest["output_hashes"][name]) == 64
    sft = read_manifest(tiny_run, "sft")
    assert sft["inputs"]["stages"] == {"pretrain": read_manifest(tiny_run, "pretrain")["fingerprint"]}
    assert set(sft["inputs"]["files"]) == {"sft.jsonl"}
    model_files = {p.name for p in (tiny_run / "sft" / "model").iterdir()}
    assert "model.safetensors" in model_files and "tokenizer.json" in model_files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in model_files)


def test_sft_rejects_malformed_conversations(tiny_run):
    rejects = [json.loads(line) for line in (tiny_run / "sft" / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["last message must be from the assistant"]
    assert read_manifest(tiny_run, "sft")["metrics"]["conversations"] == 16


def test_second_run_skips_every_stage(tiny_data, tiny_run):
    recipe = load_recipe(tiny_data / "shared.yaml")
    started = time.perf_counter()
    states = Runner(recipe, tiny_run).run()
    assert states == {stage: "skipped" for stage in STAGES}
    assert time.perf_counter() - started < 30


def test_change_reruns_stage_and_downstream_only(tiny_data, tmp_path):
    first = load_recipe(write_recipe(tiny_data, tiny_recipe(), "change_a.yaml"))
    run_dir = tmp_path / "run"
    Runner(first, run_dir).run()
    before = {stage: read_manifest(run_dir, stage)["fingerprint"] for stage in STAGES}
    changed = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"sft.train.learning_rate": 2e-4}), "change_b.yaml"))
    states = Runner(changed, run_dir).run()
    assert states == {"data": "skipped", "base": "skipped", "pretrain": "skipped", "sft": "done",
                      "reward": "done", "align": "done", "eval": "done", "report": "done"}
    after = {stage: read_manifest(run_dir, stage)["fingerprint"] for stage in STAGES}
    assert [s for s in STAGES if before[s] != after[s]] == ["sft", "reward", "align", "eval", "report"]


def test_same_recipe_twice_gives_same_metrics(tiny_data, tiny_run, tmp_path):
    recipe = load_recipe(tiny_data / "shared.yaml")
    Runner(recipe, tmp_path / "again").run(only=None)
    for stage in ("base", "pretrain", "sft", "reward", "align"):
        first = read_manifest(tiny_run, stage)["metrics"]
        second = read_manifest(tmp_path / "again", stage)["metrics"]
        assert first["final_loss"] == second["final_loss"], stage
    assert read_manifest(tiny_run, "eval")["metrics"]["summary"] == read_manifest(tmp_path / "again", "eval")["metrics"]["summary"]


def test_locked_run_directory_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match="locked by pid"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released again
        pass


def test_resume_skips_a_checkpoint_cut_off_while_being_written(tmp_path):
    for step, state in [(20, '{"global_step": 20}'), (40, '{"global_step": 40}'), (60, None), (80, '{"global_st')]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "runs").mkdir()  # not a checkpoint: left alone
    assert complete_checkpoints(tmp_path) == [tmp_path / "checkpoint-20", tmp_path / "checkpoint-40"]
    assert len(list(tmp_path.iterdir())) == 5  # reading removes nothing
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-40")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20", "checkpoint-40", "runs"]
    assert last_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize("stage,how", [("pretrain", "sigkill"), ("pretrain", "sigint"), ("sft", "sigkill")])
def test_interrupted_training_resumes_from_checkpoint(tiny_data, tmp_path, stage, how):
    """pretrain on token shards; sft packed (its default), so the packed rows resume in the same order too."""
    steps = 600 if stage == "pretrain" else 200
    train = {"max_steps": steps, "batch_size": 4, "seq_len": 64 if stage == "pretrain" else 128, "save_steps": 20}
    recipe = tiny_recipe(**{f"{stage}.train": train})
    for later in ("eval", "reward", "align"):
        recipe[later]["enabled"] = False
    path = write_recipe(tiny_data, recipe, f"resume_{stage}_{how}.yaml")
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "finloom", "run", str(path), "--run-dir", str(run_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = run_dir / stage / "checkpoints" / "checkpoint-40"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), process.stderr.read().decode()[-2000:] if process.poll() is not None else "timeout"
    time.sleep(0.5)  # the kill may land while a later checkpoint is half-written: resume must cope
    process.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
    code = process.wait(timeout=60)
    assert code == (-9 if how == "sigkill" else 130)
    assert read_manifest(run_dir, stage)["status"] == ("running" if how == "sigkill" else "interrupted")
    states = Runner(load_recipe(path), run_dir).run(only=stage)
    assert states == {stage: "done"}
    metrics = read_manifest(run_dir, stage)["metrics"]
    assert metrics["resumed_from_step"] >= 40
    assert metrics["train_steps"] == steps

    # The same recipe without the interruption: the same weights, tensor by tensor (resume restores the data
    # position, not only the step), and the same loss over all steps.
    again = tmp_path / "again"
    shutil.copytree(run_dir, again)
    assert Runner(load_recipe(path), again).run(only=stage, force=True) == {stage: "done"}
    resumed, straight = (load_file(d / stage / "model" / "model.safetensors") for d in (run_dir, again))
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[name], straight[name]) for name in resumed)
    uninterrupted = read_manifest(again, stage)["metrics"]
    assert uninterrupted["resumed_from_step"] is None
    assert metrics["train_loss"] == pytest.approx(uninterrupted["train_loss"], abs=2e-4)  # logged at 4 decimals


@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_interrupted_online_rl_resumes_with_its_category_weights(tiny_data, tmp_path, method):
    """A killed GRPO (or PPO) run resumes from its checkpoint: every step done once, the per-category evaluations up to the
    checkpoint kept and the rest redone, and the sampler's weights those in force at the checkpoint."""
    recipe = tiny_recipe(**{"align.method": method,
                            "align.train": {"max_steps": 60, "batch_size": 4, "seq_len": 96, "save_steps": 20},
                            "align.grpo.reweighting": {"eval_every": 10, "max_prompts": 3, "holdout": 0.2}})
    recipe["eval"]["enabled"] = False
    path = write_recipe(tiny_data, recipe, f"resume_{method}.yaml")
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "finloom", "run", str(path), "--run-dir", str(run_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = run_dir / "align" / "checkpoints"
    deadline = time.time() + 300
    checkpoint = checkpoints / "checkpoint-40"
    # polled read-only: removing the half-written checkpoint under the trainer would crash it
    while checkpoint not in complete_checkpoints(checkpoints) and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert checkpoint in complete_checkpoints(checkpoints), (
        process.stderr.read().decode()[-2000:] if process.poll() is not None else "timeout")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -9
    log = run_dir / "align" / "categories.jsonl"
    before = [json.loads(line) for line in log.read_text().splitlines()]
    assert Runner(load_recipe(path), run_dir).run(only="align") == {"align": "done"}
    metrics = read_manifest(run_dir, "align")["metrics"]
    assert metrics["resumed_from_step"] >= 40 and metrics["train_steps"] == 60
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40, 50, 60] and rows[-1]["final"]
    kept = [r for r in before if r["step"] <= metrics["resumed_from_step"]]
    assert rows[:len(kept)] == kept  # the evaluations before the checkpoint are not redone
    assert metrics["heldout_reward_before"] == rows[0]["scores"]
    if method == "ppo":  # the value head is resumed from the checkpoint and left out of the exported model
        assert "value_head.weight" in load_file(checkpoint / "model.safetensors")
        assert not any("value_head" in name for name in load_file(run_dir / "align" / "model" / "model.safetensors"))


def test_logged_mean_loss_weights_each_window_by_its_steps():
    history = [{"loss": 3.0, "step": 5}, {"eval_finance_loss": 9.0, "step": 5}, {"loss": 1.0, "step": 15}]
    assert logged_mean_loss(history) == pytest.approx((3.0 * 5 + 1.0 * 10) / 15)


LOCK_AND_FORK = """
import os, sys, time
from pathlib import Path
from finloom.runner import RunLock

lock = RunLock(Path(sys.argv[1])).__enter__()
child = os.fork()
if child == 0:  # inherits the lock's open file, as the process manager datatrove forks does
    time.sleep(300)
    os._exit(0)
print(child, flush=True)
time.sleep(300)
"""


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", LOCK_AND_FORK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    try:
        assert RunLock.holder(tmp_path).startswith(f"pid {process.pid} ")
        with pytest.raises(RunLocked, match=f"locked by pid {process.pid}"):
            with RunLock(tmp_path):
                pass
        process.kill()
        process.wait(timeout=30)
        assert RunLock.holder(tmp_path) is None  # the orphan still holds the old file, but its taker is dead
        with RunLock(tmp_path):
            assert RunLock.holder(tmp_path).startswith(f"pid {os.getpid()} ")
    finally:
        os.kill(child, signal.SIGKILL)


def test_status_says_interrupted_when_no_process_holds_the_run(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    manifest = json.loads((run_dir / "sft" / "manifest.json").read_text())
    (run_dir / "sft" / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert {r["stage"]: r["status"] for r in stage_status(run_dir)}["sft"] == "interrupted (no process holds the run)"
    with RunLock(run_dir):
        assert {r["stage"]: r["status"] for r in stage_status(run_dir)}["sft"] == "running"


def test_a_ctrl_c_swallowed_inside_a_stage_still_stops_the_run(tiny_data, tiny_run, tmp_path, monkeypatch):
    """Library code that catches the KeyboardInterrupt (or a finaliser that drops it) must not turn Ctrl-C into
    a finished run: the stage is marked interrupted and the interrupt reaches the CLI (exit 130)."""
    import finloom.report.stage

    def swallowing(section, ctx):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        return StageResult()

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    monkeypatch.setattr(finloom.report.stage, "run", swallowing)
    with pytest.raises(KeyboardInterrupt):
        Runner(load_recipe(tiny_data / "shared.yaml"), run_dir).run(only="report", force=True)
    assert read_manifest(run_dir, "report")["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
