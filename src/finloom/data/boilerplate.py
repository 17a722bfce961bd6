"""Boilerplate line removal: lines that recur across many documents (footers, share buttons, legal notices).

A line is boilerplate when at least ``min_documents`` documents contain it (compared after
stripping, lower-casing and folding digits, so "© 2023 Foo Bank" and "© 2024 Foo Bank" are one
line). Unlike exact or near dedup this edits documents rather than dropping them, and it removes
the line from *every* document, the first one included: a footer teaches nothing wherever it is.

Three phases, like datatrove's dedups, so it scales the same way: each task hashes the distinct
lines of its documents into ``buckets`` files by hash; one task per bucket counts document
frequencies and keeps the frequent hashes; each task then removes those lines from its documents.
A document left shorter than ``min_chars`` is removed (reason ``boilerplate_only``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from finloom.data.executors import Phase

_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class BoilerplateSettings:
    min_documents: int = 5
    """A line in at least this many documents is boilerplate."""
    min_line_chars: int = 10
    """Shorter lines are never judged (list bullets, table cells, headings like "Summary")."""
    min_chars: int = 20
    """A document shorter than this once its boilerplate is gone is removed."""
    buckets: int = 4


def line_hash(line: str) -> int:
    """64-bit hash of a line, stripped, lower-cased, whitespace collapsed and digits folded."""
    key = _SPACES.sub(" ", _DIGITS.sub("0", line.strip().lower()))
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def line_hashes(text: str, min_line_chars: int) -> np.ndarray:
    """Sorted distinct hashes of a document's judged lines (at least ``min_line_chars`` characters)."""
    hashes = {line_hash(line) for line in text.split("\n") if len(line.strip()) >= min_line_chars}
    return np.array(sorted(hashes), dtype=np.uint64)


class LineSignatures(PipelineStep):
    """Phase 1: every distinct judged line of every document, as hashes, split into bucket files by hash."""

    type = "🫂 - DEDUP"
    name = "📋 boilerplate signatures"

    def __init__(self, output_folder: str, settings: BoilerplateSettings):
        super().__init__()
        self.output_folder = output_folder
        self.settings = settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        per_doc = []
        for doc in data:
            with self.track_time():
                per_doc.append(line_hashes(doc.text, self.settings.min_line_chars))
            self.stat_update("documents")
        hashes = np.concatenate(per_doc) if per_doc else np.zeros(0, dtype=np.uint64)
        for bucket in range(self.settings.buckets):
            folder = Path(self.output_folder) / f"{bucket:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            hashes[hashes % np.uint64(self.settings.buckets) == bucket].tofile(folder / f"{rank:05d}.lines")


class FrequentLines(PipelineStep):
    """Phase 2 (one task per bucket): hashes found in at least ``min_documents`` documents."""

    type = "🫂 - DEDUP"
    name = "📋 boilerplate counts"

    def __init__(self, signatures_folder: str, output_folder: str, settings: BoilerplateSettings):
        super().__init__()
        self.signatures_folder = signatures_folder
        self.output_folder = output_folder
        self.settings = settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        files = sorted((Path(self.signatures_folder) / f"{rank:03d}").glob("*.lines"))
        hashes = np.concatenate([np.fromfile(f, dtype=np.uint64) for f in files]) if files else np.zeros(0, np.uint64)
        values, counts = np.unique(hashes, return_counts=True)
        frequent = values[counts >= self.settings.min_documents]
        self.stat_update("distinct_lines", value=len(values))
        self.stat_update("boilerplate_lines", value=len(frequent))
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        frequent.tofile(Path(self.output_folder) / f"{rank:03d}.frequent")


class BoilerplateFilter(BaseFilter):
    """Phase 3: remove boilerplate lines; drop documents left shorter than ``min_chars``."""

    name = "📋 boilerplate lines"

    def __init__(self, frequent_folder: str, settings: BoilerplateSettings, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.frequent_folder = frequent_folder
        self.settings = settings
        self._frequent = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_frequent": None}

    def _boilerplate(self) -> set[int]:
        if self._frequent is None:
            files = sorted(Path(self.frequent_folder).glob("*.frequent"))
            self._frequent = {int(h) for f in files for h in np.fromfile(f, dtype=np.uint64)}
        return self._frequent

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        frequent = self._boilerplate()
        if not frequent:
            return True
        kept, removed = [], 0
        for line in doc.text.split("\n"):
            if len(line.strip()) >= self.settings.min_line_chars and line_hash(line) in frequent:
                removed += 1
                continue
            kept.append(line)
        if removed:
            self.stat_update("lines_removed", value=removed)
            self.stat_update("documents_edited")
            doc.text = "\n".join(kept).strip()
        return len(doc.text) >= self.settings.min_chars or (False, "boilerplate_only")


def boilerplate_phases(reader, work_folder: str | Path, tasks: int, then: list[PipelineStep],
                       settings: BoilerplateSettings, exclusion_writer=None) -> list[Phase]:
    work = Path(work_folder) / "boilerplate"
    return [
        Phase("boilerplate_signatures", [reader(), LineSignatures(str(work / "signatures"), settings)], tasks),
        Phase("boilerplate_counts", [FrequentLines(str(work / "signatures"), str(work / "frequent"), settings)],
              settings.buckets),
        Phase("boilerplate_filter", [reader(), BoilerplateFilter(str(work / "frequent"), settings,
                                                                 exclusion_writer=exclusion_writer), *then], tasks),
    ]
