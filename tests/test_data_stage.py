"""The data stage: counts add up, malformed records are rejected with reasons, duplicates removed."""

from __future__ import annotations

import json

from finloom.stages import read_manifest


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_funnel_adds_up_and_nothing_is_lost(tiny_run):
    funnel = read_manifest(tiny_run, "data")["metrics"]["funnel"]
    # 41 general + 4 heldout + 4 heldout + 41 finance + 2 malformed lines
    assert funnel["input_records"] == 92
    assert funnel["rejected"] == 2
    assert funnel["read"] == 90
    assert funnel["removed"] == {"exact_duplicate": 1, "too_short": 1}
    assert funnel["kept"] == {"general": 40, "finance": 40, "general_heldout": 4, "finance_heldout": 4}
    assert funnel["read"] == sum(funnel["kept"].values()) + sum(funnel["removed"].values())


def test_funnel_by_step_and_source(tiny_run):
    metrics = read_manifest(tiny_run, "data")["metrics"]
    steps = {row["step"]: row for row in metrics["steps"]}
    assert steps["min length"]["in"] == 90 and steps["min length"]["removed"] == {"too_short": 1}
    # Held-out text is cleaned like training text but set aside before dedup and decontamination.
    assert steps["held-out router"]["set_aside"] == {"general_heldout": 4, "finance_heldout": 4}
    assert steps["exact dedup"]["in"] == 81 and steps["exact dedup"]["removed"] == {"exact_duplicate": 1}
    assert steps["fuzzy dedup (MinHash)"]["in"] == 80 and steps["fuzzy dedup (MinHash)"]["removed"] == {}
    for row in metrics["steps"]:
        assert row["in"] == row["kept"] + sum(row["removed"].values()) + sum(row["set_aside"].values())
    for before, after in zip(metrics["steps"], metrics["steps"][1:]):
        assert after["in"] == before["kept"]
    sources = {row["source"]: row for row in metrics["sources"]}
    assert sources["finance.jsonl"] == {"source": "finance.jsonl", "kept": 40, "removed": {"exact_duplicate": 1}}
    assert sources["general.jsonl"]["removed"] == {"too_short": 1}


def test_rejects_and_removed_keep_reasons(tiny_run):
    rejects = _lines(tiny_run / "data" / "rejects.jsonl")
    assert [r["reason"].split(":")[0] for r in rejects] == ["bad JSON", "missing or empty field(s)"]
    assert all(r["file"].endswith("finance.jsonl") for r in rejects)
    removed = _lines(tiny_run / "data" / "removed" / "exact_duplicate.jsonl")
    assert [doc["id"] for doc in removed] == ["f0-copy"]
    assert removed[0]["metadata"]["filter_reason"] == "exact_duplicate"


def test_clean_documents_are_tagged_by_domain(tiny_run):
    """Each document lands in its own domain's file: a file is named by the domain tag, so the tag alone shows
    nothing; the ids show that no held-out text reaches training and no training text the held-out files."""
    clean = {name: _lines(tiny_run / "data" / "clean" / f"{name}.jsonl")
             for name in ("finance", "general", "finance_heldout", "general_heldout")}
    for name, docs in clean.items():
        assert {doc["metadata"]["domain"] for doc in docs} == {name}
    ids = {name: sorted(doc["id"] for doc in docs) for name, docs in clean.items()}
    assert ids["finance"] == sorted(f"f{i}" for i in range(40))  # less f0-copy (a duplicate) and 2 malformed lines
    assert ids["general"] == sorted(f"g{i}" for i in range(40))  # less "short" (too short)
    for name in ("finance_heldout", "general_heldout"):  # records with no id are named file:line
        assert ids[name] == [f"{name}.jsonl:{line}" for line in range(1, 5)]


def test_normalize_nfkc_and_whitespace():
    from datatrove.data import Document

    from finloom.data.steps import Normalize

    doc = Document(text="  Ｂａｎｋ\u3000 rate：５％ \r\n\n\n\n  next\tline  ", id="1")
    assert next(Normalize("nfkc").run([doc])).text == "Bank rate:5%\n\nnext line"
    raw = Document(text="Ｂａｎｋ  x", id="2")
    assert next(Normalize("none").run([raw])).text == "Ｂａｎｋ x"


def test_data_inspect_shows_samples_per_reason(tiny_run):
    from conftest import finloom_cli

    shown = finloom_cli("data", "inspect", str(tiny_run), "--samples", "1")
    assert shown.returncode == 0, shown.stderr
    output = shown.stdout + shown.stderr
    for group in ("removed: exact_duplicate", "removed: too_short", "kept: finance", "rejected"):
        assert group in output
    assert "Too short." in output and "f0-copy" in output
    unknown = finloom_cli("data", "inspect", str(tiny_run), "--reason", "nope")
    assert unknown.returncode == 2 and "reasons in this run: exact_duplicate, too_short" in unknown.stderr


def test_folder_source_with_html_and_unsupported_file(tiny_data, tmp_path):
    from conftest import tiny_recipe, write_recipe
    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "page.html").write_text(
        "<html><body><nav>Home | About</nav><article><h1>Deposit insurance</h1>"
        "<p>Deposit insurance protects depositors up to a limit when a bank fails, which reduces the risk of "
        "bank runs and keeps confidence in the banking system during a crisis.</p></article>"
        "<footer>Copyright</footer></body></html>", encoding="utf-8")
    (folder / "notes.docx").write_bytes(b"PK\x03\x04")
    (folder / "more.jsonl").write_text(json.dumps({"text": "Bond prices fall when market interest rates rise."}) + "\n")
    recipe = tiny_recipe(**{"data.finance": [{"path": str(folder)}]})
    run_dir = tmp_path / "run"
    Runner(load_recipe(write_recipe(tiny_data, recipe, "folder.yaml")), run_dir).run(only="data")
    funnel = read_manifest(run_dir, "data")["metrics"]["funnel"]
    assert funnel["input_records"] == funnel["read"] + funnel["rejected"]
    rejects = _lines(run_dir / "data" / "rejects.jsonl")
    assert [r["reason"] for r in rejects] == ["unsupported_format: .docx"]
    texts = " ".join(d["text"] for d in _lines(run_dir / "data" / "clean" / "finance.jsonl"))
    texts += " ".join(d["text"] for d in _lines(run_dir / "data" / "clean" / "finance_heldout.jsonl"))
    assert "protects depositors" in texts and "Bond prices fall" in texts
    assert "About" not in texts and "Copyright" not in texts


def test_a_funnel_that_does_not_add_up_stops_the_stage():
    import pytest

    from finloom.data.funnel import check_funnel

    good = {"input_records": 10, "read": 9, "rejected": 1, "kept": {"general": 5, "finance": 2}, "removed": {"x": 2}}
    check_funnel(good)
    for broken in ({**good, "rejected": 0}, {**good, "kept": {"general": 5, "finance": 3}},
                   {**good, "removed": {}}):
        with pytest.raises(RuntimeError, match="data funnel does not add up"):
            check_funnel(broken)
