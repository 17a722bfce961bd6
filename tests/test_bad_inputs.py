"""Bad input, as new users bring it: each case exits with its code, names the field or the record, and
loses nothing. One test per kind of input (recipes, records, training), a case per bug found; add to it."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil

import pytest

from conftest import finloom_cli, tiny_recipe, write_recipe
from finloom.stages import read_manifest


def _expect_exit_2(result, *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    for text in expected:
        assert text in result.stderr, (text, result.stderr[-2000:])
    assert "Traceback" not in result.stderr


# -- recipes -----------------------------------------------------------------------------------
def _recipe_text(tiny_data, name: str, text: str):
    path = tiny_data / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("case", "override", "expected"), [
    ("infinite learning rate", {"pretrain.train.learning_rate": float("inf")},
     "pretrain.train.learning_rate: Input should be a finite number"),
    ("infinite KL weight", {"pretrain.objective": {"kl_lambda": float("inf")}},
     "pretrain.objective.kl_lambda: Input should be a finite number"),
    ("NaN weight decay", {"sft.train.weight_decay": float("nan")}, "sft.train.weight_decay: Input should be a finite"),
    ("a model no machine holds", {"model.scratch.hidden_size": 10**12},
     "model.scratch.hidden_size: Input should be less than or equal to 32768"),
    ("a model too big to build here", {"model.scratch": {"hidden_size": 16384, "intermediate_size": 65536,
                                                         "num_layers": 64, "num_heads": 128, "num_kv_heads": 8}},
     "model.scratch: about 242.8 billion parameters"),
    ("steps no one means", {"base.train.max_steps": 10**30},
     "base.train.max_steps: Input should be less than or equal to 100000000"),
    ("a scratch model without its base stage", {"base": {"enabled": False}},
     "base.enabled: a model.scratch recipe needs the base stage"),
    ("a local model.hf that does not exist", {"model": {"hf": "./models/none"}, "base": {"enabled": False}},
     "model.hf: no model directory at"),
])
def test_bad_recipe_values_exit_2_naming_the_field(tiny_data, case, override, expected):
    recipe = tiny_recipe(**override)
    if "hf" in recipe["model"]:
        del recipe["base"]
    path = write_recipe(tiny_data, recipe, "bad_value.yaml")
    for command in (("recipe", "validate", str(path)), ("run", str(path), "--run-dir", str(tiny_data / "runs" / "bv"))):
        _expect_exit_2(finloom_cli(*command), expected)
    assert not (tiny_data / "runs" / "bv").exists()


def test_model_hf_directories_are_checked_at_validation(tiny_data, tiny_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_run / "base" / "model", no_weights)
    (no_weights / "model.safetensors").unlink()
    for folder, expected in ((empty, "has no config.json"), (no_weights, "has no safetensors weights")):
        recipe = tiny_recipe(**{"model": {"hf": str(folder)}})
        del recipe["base"]
        _expect_exit_2(finloom_cli("recipe", "validate", str(write_recipe(tiny_data, recipe, "hf_dir.yaml"))),
                       f"model.hf: {folder} {expected}")


@pytest.mark.parametrize(("case", "content", "expected"), [
    ("binary garbage", b"\xff\xfe\x00\x81garbage", "not UTF-8 text"),
    ("a Latin-1 comment", "name: latin\n# caf\xe9 au lait\n".encode("latin-1"), "not UTF-8 text"),
    ("a key given twice", b"name: twice\nseed: 1\nseed: 2\n", "duplicate key 'seed' (line 3)"),
])
def test_unreadable_recipe_files_exit_2_with_the_reason(tiny_data, case, content, expected):
    path = tiny_data / "unreadable.yaml"
    path.write_bytes(content)
    _expect_exit_2(finloom_cli("recipe", "validate", str(path)), expected)


def test_a_directory_given_as_the_recipe_says_so(tiny_data):
    _expect_exit_2(finloom_cli("recipe", "validate", str(tiny_data)), "is a directory; give the recipe's YAML file")


def test_an_unknown_stage_names_the_stage_argument(tiny_run):
    _expect_exit_2(finloom_cli("stage", "bogus", "--run-dir", str(tiny_run)), "stage bogus: no such stage")


# -- records ------------------------------------------------------------------------------------
def test_malformed_records_become_rejects_and_the_counts_add_up(tiny_data, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "empty.txt").write_text("")
    records = [
        '{"id": "blank", "text": "   \\n  "}',
        '{"id": "", "text": "An empty id: bank loan interest deposit bond equity dividend capital."}',
        '{"id": "meta", "text": "bank loan interest deposit text", "note": "\\ud800"}',
        '{"id": "\\udc80", "text": "bank loan interest deposit text with a broken id"}',
        '{"id": "wide", "text": "bank loan interest deposit with a wide number", "n": 123456789012345678901234567890}',
    ]
    (folder / "records.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    with gzip.open(folder / "misnamed.jsonl", "wt") as handle:
        handle.write(json.dumps({"text": "bank loan compressed"}) + "\n")
    with gzip.open(folder / "packed.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"id": "gz", "text": "Compressed bank loan interest deposit bond text."}) + "\n")
    (folder / os.fsdecode(b"bad-name-\xff.txt")).write_text("Bank loan interest deposit bond equity dividend.")
    recipe = tiny_recipe(**{"data.finance": [{"path": "finance.jsonl"}, {"path": str(folder)}]})
    run_dir = tmp_path / "run"
    done = finloom_cli("run", str(write_recipe(tiny_data, recipe, "records.yaml")), "--run-dir", str(run_dir),
                       "--only", "data")
    assert done.returncode == 0, done.stderr[-3000:]
    funnel = read_manifest(run_dir, "data")["metrics"]["funnel"]
    assert funnel["input_records"] == funnel["read"] + funnel["rejected"]
    rejects = {(r["file"].rsplit("/", 1)[-1], r["line"]): r["reason"]
               for r in map(json.loads, (run_dir / "data" / "rejects.jsonl").read_text().splitlines())}
    assert rejects[("empty.txt", 0)] == "empty text"
    assert rejects[("records.jsonl", 1)] == "missing or empty field(s): text"
    assert rejects[("records.jsonl", 3)] == "invalid Unicode (a lone surrogate) in field note"
    assert rejects[("records.jsonl", 4)] == "invalid Unicode (a lone surrogate) in field id"
    assert rejects[("misnamed.jsonl", 0)] == "looks gzip-compressed: name it misnamed.jsonl.gz to have it read"
    seen = {}  # every document read, kept (clean/) or removed by a filter (removed/)
    for path in [*(run_dir / "data" / "clean").glob("*.jsonl"), *(run_dir / "data" / "removed").glob("*.jsonl")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            document = json.loads(line)
            seen[document["id"]] = document
    assert "records.jsonl:2" in seen  # an empty id falls back to file:line (relative to the source folder)
    assert "wide" in seen and "gz" in seen and "bad-name-\\xff.txt" in seen
    assert seen["wide"]["metadata"]["n"] == "123456789012345678901234567890"  # kept as text, not lost
    inspected = finloom_cli("data", "inspect", str(run_dir), env={"COLUMNS": "200"})
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    # every removal reason and every kept domain of this run has its section, odd documents and all
    sections = {f"removed: {path.stem}" for path in (run_dir / "data" / "removed").glob("*.jsonl")}
    sections |= {f"kept: {path.stem}" for path in (run_dir / "data" / "clean").glob("*.jsonl")}
    shown = inspected.stdout + inspected.stderr
    assert len(sections) > 2 and all(section in shown for section in sections), shown[-3000:]


def test_data_inspect_shows_a_document_a_step_emptied(tmp_path):
    """datatrove's writer leaves out empty fields: a removed document whose text a step emptied has no "text"."""
    data = tmp_path / "run" / "data"
    (data / "removed").mkdir(parents=True)
    (data / "manifest.json").write_text("{}")
    (data / "removed" / "lang_und.jsonl").write_text(json.dumps({"id": "emptied", "metadata": {}}) + "\n")
    (data / "rejects.jsonl").write_text(json.dumps({"file": "x", "line": 1, "reason": "bad JSON"}) + "\n")
    done = finloom_cli("data", "inspect", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "emptied" in done.stderr and "1 × bad JSON" in done.stderr


# -- training -----------------------------------------------------------------------------------
def test_a_loss_that_becomes_nan_stops_the_stage_naming_it(tiny_data, tmp_path):
    recipe = tiny_recipe(**{"base.train.learning_rate": 1e12, "base.train.logging_steps": 1})
    run_dir = tmp_path / "run"
    done = finloom_cli("run", str(write_recipe(tiny_data, recipe, "nan.yaml")), "--run-dir", str(run_dir))
    _expect_exit_2(done, "base: the training loss became nan by step")
    assert "the logged steps before it: base/log_history.json" in done.stderr
    history = json.loads((run_dir / "base" / "log_history.json").read_text())
    assert history and not math.isfinite(history[-1]["loss"])  # the curve up to the step that diverged
    assert read_manifest(run_dir, "base")["status"] == "failed"
    assert read_manifest(run_dir, "pretrain") is None  # nothing downstream ran on the ruined model
