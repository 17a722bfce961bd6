"""File primitives every stage shares: atomic writes, content hashes, tolerant JSONL reading.

Outputs are written to a temporary sibling and renamed into place, so an interrupted stage never
leaves a half-written artifact that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_path(path: Path) -> str:
    """Content hash of a file, or of a directory tree (relative names + contents)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode())
        digest.update(sha256_file(child).encode())
    return digest.hexdigest()


def hash_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def iter_texts(path: Path) -> Iterator[str]:
    """The ``text`` of every document in a JSONL file the data stage wrote (one document per line)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)["text"]


def read_records(
    path: Path, required: tuple[str, ...], rejects: list[dict] | None = None
) -> list[dict]:
    """Read JSONL or Parquet records; a malformed record is appended to ``rejects`` with its reason.

    Nothing is dropped silently: every line is either returned or rejected, so
    ``len(returned) + len(rejects) == lines read``.
    """
    path = Path(path)
    rejects = rejects if rejects is not None else []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        raw = [(i + 1, row, None) for i, row in enumerate(rows)]
    else:
        raw = []
        with open(path, "rb") as handle:
            for number, line_bytes in enumerate(handle, start=1):
                try:
                    line = line_bytes.decode("utf-8")
                except UnicodeDecodeError as error:
                    raw.append((number, None, f"not UTF-8: {error.reason}"))
                    continue
                if not line.strip():
                    continue
                try:
                    raw.append((number, json.loads(line), None))
                except json.JSONDecodeError as error:
                    raw.append((number, None, f"bad JSON: {error.msg}"))
    records = []
    for number, record, problem in raw:
        if problem is None and not isinstance(record, dict):
            problem = "record is not an object"
        if problem is None:
            missing = [field for field in required if record.get(field) in (None, "", [])]
            if missing:
                problem = f"missing or empty field(s): {', '.join(missing)}"
        if problem:
            rejects.append({"file": str(path), "line": number, "reason": problem})
        else:
            records.append(record)
    return records
