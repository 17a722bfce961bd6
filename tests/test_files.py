"""File primitives: tolerant reading with rejects, atomic writes."""

from __future__ import annotations

import json

import pytest

from finloom.files import atomic_dir, atomic_write_json, read_records


def test_read_records_rejects_with_reasons_and_counts_add_up(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"text": "ok one"}), "{broken", json.dumps([1, 2]), json.dumps({"text": ""}),
             json.dumps({"text": "ok two"})]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n")
    rejects: list[dict] = []
    records = read_records(path, ("text",), rejects)
    assert [r["text"] for r in records] == ["ok one", "ok two"]
    reasons = [r["reason"] for r in rejects]
    assert reasons[0].startswith("bad JSON")
    assert reasons[1] == "record is not an object"
    assert reasons[2] == "missing or empty field(s): text"
    assert reasons[3].startswith("not UTF-8")
    assert [r["line"] for r in rejects] == [2, 3, 4, 6]
    assert len(records) + len(rejects) == 6


@pytest.mark.parametrize("name", ["records.jsonl", "records.json"])
def test_a_byte_order_mark_starts_no_record(tmp_path, name):
    """As Windows tools save UTF-8: a BOM before JSON lines or before a JSON array."""
    path = tmp_path / name
    rows = [{"text": "一"}, {"text": "two"}]
    body = "\n".join(map(json.dumps, rows)) if name.endswith("l") else json.dumps(rows)
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    rejects: list[dict] = []
    assert read_records(path, ("text",), rejects) == rows and rejects == []


def test_a_json_array_file_holds_one_record_per_element(tmp_path):
    path = tmp_path / "knowledge.json"
    path.write_text(json.dumps([{"text": "ok"}, "not a record", {"text": ""}]), encoding="utf-8")
    rejects: list[dict] = []
    assert read_records(path, ("text",), rejects) == [{"text": "ok"}]
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "record is not an object"),
                                                           (3, "missing or empty field(s): text")]


def test_atomic_dir_keeps_old_content_when_interrupted(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half-written")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_write_json_round_trips(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"b": 1, "a": [1, 2]}
