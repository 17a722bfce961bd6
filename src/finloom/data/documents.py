"""Turn source files (JSONL, Parquet, text, HTML, PDF, or a folder mixing them) into documents.

Every input unit (a JSONL line, a Parquet row, a whole text/HTML/PDF file) comes out either as a
document or as a ``Reject`` with its reason, never silently dropped: a folder of 10 files with one
JSONL of 5 lines gives 9 + 5 = documents + rejects, which ``input_records`` counts up front so the
data funnel stays a check. HTML keeps the main content (trafilatura, tables as ``a | b | c`` rows);
PDFs give their page text (pypdf).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from datatrove.data import Document

from finloom.files import display_name, looks_compressed, open_binary, read_records

FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".txt": "text", ".md": "text",
    ".html": "html", ".htm": "html", ".pdf": "pdf",
}
RECORD_FORMATS = ("jsonl", "parquet")


@dataclass(frozen=True)
class Reject:
    """An input unit that produced no document: ``line`` is the line, row or page (1-based), 0 for the whole file."""

    file: str
    line: int
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def file_format(path: Path, fmt: str = "auto") -> str | None:
    """The format a file is read as: ``fmt`` unless "auto", else by extension (``.jsonl.gz``: jsonl; None when
    unknown)."""
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".gz":
        suffix = Path(path.stem).suffix.lower()
    return FORMAT_BY_SUFFIX.get(suffix)


def _misnamed_gzip(file: Path, file_fmt: str | None) -> bool:
    return file_fmt in (*RECORD_FORMATS, "text") and not _is_parquet(file) and looks_compressed(file)


def source_files(path: Path) -> list[Path]:
    """A file itself, or every file under a folder, recursively, in sorted order (hidden ones too)."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(child for child in path.rglob("*") if child.is_file())


def iter_documents(
    path: Path,
    text_field: str = "text",
    fmt: str = "auto",
    domain_hint: str | None = None,
    lang: str | None = None,
    tag: str | None = None,
) -> Iterator[Document | Reject]:
    """Documents and rejects from a file or a folder of mixed files, in walk order."""
    path = Path(path)
    root = path.parent if path.is_file() else path
    for file in source_files(path):
        yield from iter_file_documents(file, root, text_field, fmt, domain_hint, lang, tag)


def iter_file_documents(
    file: Path,
    root: Path,
    text_field: str = "text",
    fmt: str = "auto",
    domain_hint: str | None = None,
    lang: str | None = None,
    tag: str | None = None,
) -> Iterator[Document | Reject]:
    """Documents and rejects of one file; the unit the data stage deals out to its tasks.

    Metadata: ``source`` (``tag`` if given, else a record's own ``source`` field, else the path
    relative to ``root``), ``file`` (that relative path), ``format``, ``domain_hint`` and ``lang``
    as given (a record's own ``lang`` wins), ``pages`` for PDFs, and every other field of a record.
    Ids are a record's own ``id``, else the relative path (plus ``:line`` for record formats).
    """
    relative = display_name(file.relative_to(root).as_posix())
    file_fmt = file_format(file, fmt)
    base = {"source": tag or relative, "file": relative, "format": file_fmt, "domain_hint": domain_hint,
            "lang": lang}
    if _misnamed_gzip(file, file_fmt):
        yield Reject(display_name(file), 0, f"looks gzip-compressed: name it {file.name}.gz to have it read")
    elif file_fmt in RECORD_FORMATS:
        yield from _records(file, text_field, base, tag is None)
    elif file_fmt in _FILE_READERS:
        text, extra, reject = _FILE_READERS[file_fmt](file)
        yield reject if reject is not None else Document(text=text, id=relative, metadata={**base, **extra})
    else:
        yield Reject(display_name(file), 0, f"unsupported_format: {file.suffix.lower() or '(no extension)'}")


def input_records(path: Path, fmt: str = "auto") -> int:
    """Input units ``iter_documents`` will account for: non-blank lines, Parquet rows, 1 per other file."""
    total = 0
    for file in source_files(Path(path)):
        file_fmt = file_format(file, fmt)
        if _misnamed_gzip(file, file_fmt):
            total += 1
        elif file_fmt in RECORD_FORMATS and _is_parquet(file):
            import pyarrow.parquet as pq

            try:
                total += pq.ParquetFile(file).metadata.num_rows
            except (OSError, ValueError):  # unreadable Parquet: _records gives it one reject
                total += 1
        elif file_fmt in RECORD_FORMATS:
            total += len(_counted_lines(file))
        else:
            total += 1
    return total


def _records(file: Path, text_field: str, base: dict, record_source_wins: bool) -> Iterator[Document | Reject]:
    rejects: list[dict] = []
    try:
        records = read_records(file, (text_field,), rejects)
    except (OSError, ValueError) as error:  # a corrupt Parquet file (ArrowInvalid): one reject, not a crash
        yield Reject(display_name(file), 0, f"{base['format']}_unreadable: {type(error).__name__}: {error}")
        return
    # read_records keeps rejects apart from records; merge them back in line order.
    numbered: list[tuple[int, dict | Reject]] = [(r["line"], Reject(**r)) for r in rejects]
    good_lines = _good_line_numbers(file, {r["line"] for r in rejects})
    numbered += list(zip(good_lines, records, strict=True))
    for number, item in sorted(numbered, key=lambda pair: pair[0]):
        if isinstance(item, Reject):
            yield item
            continue
        text = item[text_field]
        if not isinstance(text, str):
            yield Reject(display_name(file), number, "text is not a string")
            continue
        metadata = {**{k: v for k, v in item.items() if k not in (text_field, "id")}, **base,
                    "lang": item.get("lang") or base["lang"]}
        if record_source_wins and isinstance(item.get("source"), str):
            metadata["source"] = item["source"]
        own_id = item.get("id")
        yield Document(text=text, id=str(own_id) if own_id not in (None, "") else f"{base['file']}:{number}",
                       metadata=metadata)


def _is_parquet(file: Path) -> bool:
    return file.suffix == ".parquet"  # read_records' own rule for a record file


def _good_line_numbers(file: Path, rejected: set[int]) -> list[int]:
    if _is_parquet(file):
        import pyarrow.parquet as pq

        numbers = range(1, pq.ParquetFile(file).metadata.num_rows + 1)
    else:
        numbers = _counted_lines(file)
    return [n for n in numbers if n not in rejected]


def _counted_lines(file: Path) -> list[int]:
    """Line numbers ``read_records`` accounts for: every line but blank ones (undecodable lines count)."""
    numbers = []
    with open_binary(file) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                blank = not line.decode("utf-8").strip()
            except UnicodeDecodeError:
                blank = False
            if not blank:
                numbers.append(number)
    return numbers


def _plain_text(file: Path) -> tuple[str, dict, Reject | None]:
    with open_binary(file) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return "", {}, Reject(display_name(file), 0, f"not UTF-8: {error.reason}")
    if not text.strip():
        return "", {}, Reject(display_name(file), 0, "empty text")
    return text, {}, None


# trafilatura writes tables as Markdown: "| a | b | " rows and a "|---|---|" rule under the header.
_TABLE_ROW = re.compile(r"^\|(.*)\|\s*$")
_TABLE_RULE = re.compile(r"^\|(-+\|)+\s*$")


def html_text(html: bytes | str) -> str | None:
    """Main content of a page (no nav, header, footer, scripts, cookie banners, link lists).

    Table rows become ``Revenue | 1,234 | 1,100`` lines. None when nothing is left. Bytes let
    trafilatura detect the page's encoding (a GBK filing stays readable).
    """
    import trafilatura

    extracted = trafilatura.extract(
        html, favor_precision=True, include_comments=False, include_tables=True, include_images=False,
        deduplicate=False,  # trafilatura's dedup cache spans calls: results would depend on file order
    )
    if not extracted:
        return None
    lines = []
    for line in extracted.splitlines():
        if _TABLE_RULE.match(line):
            continue
        row = _TABLE_ROW.match(line)
        if row:
            cells = [cell.strip() for cell in row.group(1).split("|")]
            while cells and not cells[-1]:
                cells.pop()
            line = " | ".join(cells)
        lines.append(line)
    text = "\n".join(lines).strip()
    return text or None


def _html_file(file: Path) -> tuple[str, dict, Reject | None]:
    text = html_text(file.read_bytes())
    if text is None:
        return "", {}, Reject(display_name(file), 0, "html_no_text")
    return text, {}, None


class UnreadablePdf(ValueError):
    """A PDF pypdf cannot open, decrypt or decode; ``page`` is the failing page (0: the whole file)."""

    def __init__(self, detail: str, page: int = 0):
        super().__init__(f"pdf_unreadable: {f'page {page}: ' if page else ''}{detail}")
        self.page = page


def pdf_text(file: Path) -> tuple[str, int]:
    """Text of every page joined by newlines (form feeds removed) and the page count.

    An encrypted PDF is tried with the empty password (owner-restricted PDFs open that way);
    anything else that fails raises ``UnreadablePdf``.
    """
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns on every repaired xref
    try:
        reader = PdfReader(file)
        locked = reader.is_encrypted and not reader.decrypt("")
    except Exception as error:
        raise UnreadablePdf(f"{type(error).__name__}: {error}") from error
    if locked:
        raise UnreadablePdf("encrypted")
    pages = []
    try:
        for pdf_page in reader.pages:
            pages.append((pdf_page.extract_text() or "").replace("\f", "\n").strip())
    except Exception as error:
        raise UnreadablePdf(f"{type(error).__name__}: {error}", page=len(pages) + 1) from error
    return "\n".join(text for text in pages if text), len(pages)


def _pdf_file(file: Path) -> tuple[str, dict, Reject | None]:
    try:
        text, pages = pdf_text(file)
    except UnreadablePdf as error:
        return "", {}, Reject(display_name(file), error.page, str(error))
    if not text:
        return "", {}, Reject(display_name(file), 0, "pdf_no_text")
    return text, {"pages": pages}, None


_FILE_READERS = {"text": _plain_text, "html": _html_file, "pdf": _pdf_file}
