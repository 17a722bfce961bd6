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
        digest.update(os.fsencode(child.relative_to(path)))  # file names need not be valid UTF-8
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


GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: Path):
    """A file for reading bytes; ``*.gz`` is decompressed on the fly."""
    import gzip

    return gzip.open(path, "rb") if Path(path).suffix == ".gz" else open(path, "rb")


def looks_compressed(path: Path) -> bool:
    """A gzip file under a plain name (``data.jsonl`` that is really ``data.jsonl.gz``)."""
    if Path(path).suffix == ".gz":
        return False
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def read_records(
    path: Path, required: tuple[str, ...], rejects: list[dict] | None = None
) -> list[dict]:
    """Read JSONL, Parquet or JSON-array records; a malformed record is appended to ``rejects`` with its reason.

    A ``.json`` file that starts with "[" is one JSON array (as CFLUE publishes its sets; ``line`` is then the
    record's position in it); any other is read as JSON lines. Nothing is dropped silently: every line is either
    returned or rejected, so ``len(returned) + len(rejects) == lines read``.
    """
    path = Path(path)
    rejects = rejects if rejects is not None else []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        raw = [(i + 1, row, None) for i, row in enumerate(rows)]
    elif path.suffix == ".json" and _starts_json_array(path):
        try:
            raw = [(i + 1, record, None) for i, record in enumerate(json.loads(path.read_text(encoding="utf-8-sig")))]
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raw = [(1, None, f"not a JSON array: {error}")]
    else:
        raw = []
        with open_binary(path) as handle:
            for number, line_bytes in enumerate(handle, start=1):
                try:  # a byte order mark (files saved by Windows tools) is not part of the first record
                    line = line_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
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
            problem = _invalid_text(record)
        if problem is None:
            missing = [field for field in required if _empty(record.get(field))]
            if missing:
                problem = f"missing or empty field(s): {', '.join(missing)}"
        if problem:
            rejects.append({"file": display_name(path), "line": number, "reason": problem})
        else:
            records.append(_wide_ints_as_text(record))
    return records


def _starts_json_array(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"[")


def display_name(path: Path | str) -> str:
    """A path as text that can be written anywhere: bytes of a non-UTF-8 file name become \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _empty(value) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _invalid_text(value, field: str = "") -> str | None:
    """A lone surrogate (JSON can spell one, UTF-8 cannot hold it): the field it is in, as a reject reason."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"invalid Unicode (a lone surrogate) in field {field or '(value)'}"
    elif isinstance(value, dict):
        for key, child in value.items():
            problem = _invalid_text(key, f"{field}.{key}".lstrip(".") + " (its name)") or _invalid_text(
                child, f"{field}.{key}".lstrip("."))
            if problem:
                return problem
    elif isinstance(value, list):
        for index, child in enumerate(value):
            if problem := _invalid_text(child, f"{field}[{index}]"):
                return problem
    return None


def _wide_ints_as_text(value):
    """Integers beyond 64 bits (which the JSONL writers refuse) kept as their decimal text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {key: _wide_ints_as_text(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_text(child) for child in value]
    return value
