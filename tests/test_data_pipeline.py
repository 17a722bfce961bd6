"""The data stage's pipeline end to end: options, sharding over tasks, executors, the LLM judge, resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_recipe, write_recipe
from finloom.data.judge import parse_scores
from finloom.recipe import load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _kept_ids(run_dir: Path) -> dict[str, set[str]]:
    return {path.stem: {doc["id"] for doc in _lines(path)} for path in sorted((run_dir / "data" / "clean").glob("*.jsonl"))}


def _run_data(folder: Path, name: str, **overrides) -> Path:
    recipe = tiny_recipe(**overrides)
    run_dir = folder / "runs" / name
    Runner(load_recipe(write_recipe(folder, recipe, f"{name}.yaml")), run_dir).run(only="data")
    return run_dir


def test_ftfy_traditional_to_simplified_and_full_width(tmp_path):
    source = tmp_path / "extra.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate([
        "The bank doesnâ€™t pay interest on this account. " * 3,
        "銀行存款利率與證券市場的關係，是金融學的基礎問題。" * 3,
        "Ｒｅｖｅｎｕｅ　ｒｏｓｅ　１２％　ｔｏ　ＵＳＤ　５ｍ　this year, the report says.",
    ])), encoding="utf-8")
    from conftest import write_tiny_data

    write_tiny_data(tmp_path)
    run_dir = _run_data(tmp_path, "normalize", **{"data.finance": [{"path": "finance.jsonl"}, {"path": "extra.jsonl"}],
                                                   "data.normalize": {"traditional_to_simplified": True}})
    texts = {doc["id"]: doc["text"] for path in (run_dir / "data" / "clean").glob("finance*.jsonl")
             for doc in _lines(path)}
    assert texts["0"].startswith("The bank doesn\u2019t pay")  # mojibake repaired; curly quote kept
    assert texts["1"].startswith("银行存款利率与证券市场的关系")
    assert texts["2"].startswith("Revenue rose 12% to USD 5m")


def test_decontamination_removes_training_copies_of_eval_items(tmp_path):
    from conftest import write_tiny_data

    write_tiny_data(tmp_path)
    stem = ("Which of the following statements about the expected loss of a loan portfolio under the internal "
            "ratings based approach is correct")
    (tmp_path / "eval_extra.jsonl").write_text(json.dumps(
        {"id": "q1", "task_name": "FRM", "second_level": "Credit", "question": stem + "?\nA.one\nB.two", "answer": "A"})
        + "\n", encoding="utf-8")
    with open(tmp_path / "finance.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "leak", "text": "Exam prep notes. " + stem + "? The answer is A. " * 3}) + "\n")
    run_dir = _run_data(tmp_path, "decontam", **{"data.decontam": {"eval_sets": [{"path": "eval_extra.jsonl"}]}})
    removed = _lines(run_dir / "data" / "removed" / "contaminated.jsonl")
    assert [doc["id"] for doc in removed] == ["leak"]
    assert removed[0]["metadata"]["decontam_hits"] == {"eval_extra": ["q1"]}
    manifest = read_manifest(run_dir, "data")
    assert "eval_extra.jsonl" in manifest["inputs"]["files"]  # the eval set is part of the stage's fingerprint
    assert "fin_mcq.jsonl" in manifest["inputs"]["files"]  # and so are the eval section's sets


def test_tasks_split_the_input_and_give_the_same_result(tiny_data):
    one = _run_data(tiny_data, "one-task")
    three = _run_data(tiny_data, "three-tasks", **{"data.executor": {"tasks": 3, "workers": 2}})
    assert _kept_ids(one) == _kept_ids(three)
    funnel_one = read_manifest(one, "data")["metrics"]["funnel"]
    funnel_three = read_manifest(three, "data")["metrics"]["funnel"]
    assert funnel_one == funnel_three
    assert len(list((three / "data" / "logs" / "clean" / "completions").iterdir())) == 3
    assert not (three / "data" / "work").exists()  # intermediate copies are removed once merged


def test_ray_executor_gives_the_same_result_as_local(tiny_data):
    pytest.importorskip("ray")
    local = _run_data(tiny_data, "local-2", **{"data.executor": {"tasks": 2}})
    on_ray = _run_data(tiny_data, "ray-2", **{"data.executor": {"type": "ray", "tasks": 2, "workers": 2}})
    assert _kept_ids(local) == _kept_ids(on_ray)
    assert read_manifest(local, "data")["metrics"]["funnel"] == read_manifest(on_ray, "data")["metrics"]["funnel"]


def test_slurm_executor_needs_a_partition_and_sbatch(tiny_data):
    from finloom.errors import BadInput

    recipe = tiny_recipe(**{"data.executor": {"type": "slurm"}})
    with pytest.raises(BadInput, match="data.executor: slurm.partition is required"):
        load_recipe(write_recipe(tiny_data, recipe, "slurm-bad.yaml"))
    recipe = tiny_recipe(**{"data.executor": {"type": "slurm", "slurm": {"partition": "cpu"}}})
    runner = Runner(load_recipe(write_recipe(tiny_data, recipe, "slurm.yaml")), tiny_data / "runs" / "slurm")
    if subprocess.run(["which", "sbatch"], capture_output=True).returncode != 0:
        with pytest.raises(BadInput, match="sbatch is not on PATH"):
            runner.run(only="data")


def _slurm_partition() -> str | None:
    """The default partition of a Slurm cluster this machine can submit to, if any."""
    if shutil.which("sbatch") is None:
        return None
    listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
    defaults = [name.rstrip("*") for name in listed.stdout.split() if name.endswith("*")]
    return defaults[0] if listed.returncode == 0 and defaults else None


@pytest.mark.skipif(_slurm_partition() is None, reason="needs a Slurm cluster (sbatch, sinfo) to submit to")
def test_slurm_executor_gives_the_same_result_as_local(tiny_data):
    """Runs where a Slurm cluster answers (a single-node slurm-wlm is enough); skipped elsewhere."""
    local = _run_data(tiny_data, "local-slurm-2", **{"data.executor": {"tasks": 2}})
    on_slurm = _run_data(tiny_data, "slurm-2", **{"data.executor": {
        "type": "slurm", "tasks": 2, "workers": 2,
        "slurm": {"partition": _slurm_partition(), "time": "00:20:00", "mem_per_cpu_gb": 1, "poll_s": 1}}})
    assert _kept_ids(local) == _kept_ids(on_slurm)
    assert read_manifest(local, "data")["output_hashes"] == read_manifest(on_slurm, "data")["output_hashes"]
    assert list((on_slurm / "data" / "logs" / "clean" / "slurm_logs").iterdir())  # it did go through Slurm


def test_slurm_phases_depend_on_each_other(tiny_data, tmp_path):
    from finloom.data.executors import slurm_executors
    from finloom.data.pipeline import Classifiers, PipelinePaths, build_phases
    from finloom.data.stage import _sources
    from finloom.stages import RunContext

    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(**{"data.executor": {
        "type": "slurm", "tasks": 4, "slurm": {"partition": "cpu", "time": "01:00:00"}}}), "slurm-build.yaml"))
    ctx = RunContext(tmp_path, recipe, "data")
    phases = build_phases(recipe.data, _sources(recipe.data, ctx), PipelinePaths(tmp_path / "data"), Classifiers(),
                          None, [])
    executors = slurm_executors(phases, recipe.data.executor, tmp_path / "logs")
    assert [e.job_name for e in executors][:3] == ["finloom-data-clean", "finloom-data-exact_signatures",
                                                  "finloom-data-exact_find"]
    assert executors[0].depends is None and all(e.depends is p for p, e in zip(executors, executors[1:]))
    assert [e.tasks for e in executors] == [phase.tasks for phase in phases]
    assert executors[0].tasks == 4 and executors[0].partition == "cpu"


@pytest.mark.parametrize("reply, expected", [
    ("readability: 4\ncoherence: 5\ninformativeness: 3\nsafety: 5", {"readability": 4, "coherence": 5,
                                                                     "informativeness": 3, "safety": 5}),
    ('{"readability": 2, "coherence": 3, "informativeness": 1, "safety": 5}', {"readability": 2, "coherence": 3,
                                                                               "informativeness": 1, "safety": 5}),
    ("**Readability**: 4/5\n**Coherence** = 3\nInformativeness：2\nSafety: 5", {"readability": 4, "coherence": 3,
                                                                              "informativeness": 2, "safety": 5}),
    ("Readability: 4\nCoherence: 3\nInformativeness: 2", None),
    ("Readability: 4\nCoherence: 3\nInformativeness: 2\nSafety: 9", None),
    ("I cannot rate this.", None),
])
def test_judge_replies_parse_or_fail_whole(reply, expected):
    assert parse_scores(reply, ["readability", "coherence", "informativeness", "safety"]) == expected


def test_judge_through_a_real_server_then_resume_after_interrupt(tiny_data, served_sft, tmp_path):
    """The judge is the tiny SFT model behind `finloom serve`: its replies do not parse, which must be retried,
    counted and kept (never silently dropped). SIGINT during the judged phase, then a resume that reruns only
    the unfinished tasks."""
    recipe = tiny_recipe(**{
        "teacher": {"base_url": served_sft, "concurrency": 2, "max_retries": 1},
        "data.judge": {"enabled": True, "retries": 1, "max_tokens": 48},
        "data.executor": {"tasks": 2},
    })
    path = write_recipe(tiny_data, recipe, "judge.yaml")
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "finloom", "run", str(path), "--run-dir", str(run_dir),
                                "--only", "data"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_done = run_dir / "data" / "logs" / "minhash_filter" / "completions" / "00000"
    deadline = time.time() + 300
    while not first_done.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert first_done.exists(), process.stderr.read().decode()[-3000:] if process.poll() is not None else "timeout"
    finished_at = first_done.stat().st_mtime_ns
    clean_marker = run_dir / "data" / "logs" / "clean" / "completions" / "00001"
    clean_at = clean_marker.stat().st_mtime_ns
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert read_manifest(run_dir, "data")["status"] == "interrupted"

    assert Runner(load_recipe(path), run_dir).run(only="data") == {"data": "done"}
    assert first_done.stat().st_mtime_ns == finished_at  # the finished task was not run again
    assert clean_marker.stat().st_mtime_ns == clean_at  # nor were earlier phases
    manifest = read_manifest(run_dir, "data")
    steps = {row["step"]: row for row in manifest["metrics"]["steps"]}
    judged = steps["LLM judge"]
    assert judged["in"] == 80 and judged["kept"] == 80  # unparsed replies keep the document, counted below
    stats = {}
    for part in (run_dir / "data" / "logs" / "minhash_filter" / "stats").glob("*.json"):
        for step in json.loads(part.read_text()):
            if step["name"].endswith("LLM judge"):
                for key, value in step["stats"].items():
                    stats[key] = stats.get(key, 0) + (value if isinstance(value, int) else value["total"])
    assert stats.get("judge_scored", 0) + stats.get("judge_unparsed", 0) == 80
    documents = [doc for name in ("general", "finance") for doc in _lines(run_dir / "data" / "clean" / f"{name}.jsonl")]
    assert all(len(doc["metadata"]["judge"]) in (1, 2) for doc in documents)  # one ask, one retry when unparsed
    assert all(doc["metadata"]["judge_scores"] is None or set(doc["metadata"]["judge_scores"]) ==
               {"readability", "coherence", "informativeness", "safety"} for doc in documents)
    funnel = manifest["metrics"]["funnel"]
    assert funnel["read"] == sum(funnel["kept"].values()) + sum(funnel["removed"].values())
