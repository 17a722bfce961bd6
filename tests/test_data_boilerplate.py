"""Boilerplate line removal: lines in many documents go from every document; counts add up."""

from __future__ import annotations

import json

from datatrove.pipeline.writers import JsonlWriter

from conftest import tiny_recipe, write_recipe, write_tiny_data
from finloom.data.boilerplate import BoilerplateSettings, boilerplate_phases, line_hash
from finloom.data.executors import run_phases
from finloom.data.steps import RankFileReader
from finloom.recipe import ExecutorSettings, load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest

FOOTER = "Copyright 2024 Example Bank. All rights reserved."
SHARE = "Share this article on social media"


def test_line_hash_folds_case_spacing_and_digits():
    assert line_hash("Copyright 2024  Example Bank ") == line_hash("copyright 2023 example bank")
    assert line_hash("Copyright Example Bank") != line_hash("Copyright 2024 Example Bank")


def _write_rank_file(folder, docs):
    folder.mkdir(parents=True)
    with open(folder / "00000.jsonl", "w", encoding="utf-8") as handle:
        for number, text in enumerate(docs):
            handle.write(json.dumps({"text": text, "id": f"d{number}", "metadata": {}}) + "\n")


def test_frequent_lines_are_removed_from_every_document(tmp_path):
    topics = ["loan loss provisions", "deposit insurance", "bond duration", "equity dividends", "futures margin",
              "insurance reserves"]
    docs = [f"This report discusses {topic} in detail.\n{FOOTER}\n{SHARE}" for topic in topics]
    docs.append(f"{FOOTER}\n{SHARE}")  # nothing but boilerplate
    docs.append("A document with no footer at all, only its own content here.")
    _write_rank_file(tmp_path / "in", docs)
    writer = JsonlWriter(str(tmp_path / "out"), output_filename="${rank}.jsonl", compression=None)
    removed = JsonlWriter(str(tmp_path / "removed"), output_filename="${filter_reason}.jsonl", compression=None)
    phases = boilerplate_phases(lambda: RankFileReader(str(tmp_path / "in")), tmp_path / "work", 1, [writer],
                                BoilerplateSettings(min_documents=5, buckets=2), exclusion_writer=removed)
    run_phases(phases, ExecutorSettings(), tmp_path / "logs")
    kept = [json.loads(line) for line in (tmp_path / "out" / "00000.jsonl").read_text().splitlines()]
    assert len(kept) == 7
    assert all(FOOTER not in doc["text"] and SHARE not in doc["text"] for doc in kept)
    assert kept[0]["text"] == "This report discusses loan loss provisions in detail."
    assert kept[-1]["text"] == docs[-1]
    dropped = [json.loads(line) for line in (tmp_path / "removed" / "boilerplate_only.jsonl").read_text().splitlines()]
    assert [doc["id"] for doc in dropped] == ["d6"]


def test_boilerplate_step_in_the_data_stage(tmp_path):
    write_tiny_data(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "finance.jsonl").read_text().splitlines()[:40]]
    with open(tmp_path / "finance.jsonl", "a", encoding="utf-8") as handle:
        for number, row in enumerate(rows[:8]):
            handle.write(json.dumps({"id": f"fb{number}", "text": row["text"][::-1] + "\n" + FOOTER}) + "\n")
    recipe = tiny_recipe(**{"data.dedup": {"lines": {"enabled": True, "min_documents": 5}}})
    run_dir = tmp_path / "run"
    Runner(load_recipe(write_recipe(tmp_path, recipe, "lines.yaml")), run_dir).run(only="data")
    metrics = read_manifest(run_dir, "data")["metrics"]
    step = next(row for row in metrics["steps"] if row["step"] == "boilerplate lines")
    # 80 documents reach it in the plain tiny run (after dedup), plus the 8 footed ones; a footer line is cut
    # from a document, the document itself stays: no document is removed
    assert (step["in"], step["kept"], step["removed"]) == (88, 88, {})
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for name in ("finance", "finance_heldout")
             for line in (run_dir / "data" / "clean" / f"{name}.jsonl").read_text().splitlines()}
    assert sum(1 for text in texts.values() if FOOTER in text) == 0
    assert {f"fb{number}": texts.get(f"fb{number}") for number in range(8)} == {
        f"fb{number}": row["text"][::-1] for number, row in enumerate(rows[:8])}  # the text, less its footer
    assert "boilerplate_phases" not in metrics["phases"] and "boilerplate_filter" in metrics["phases"]
