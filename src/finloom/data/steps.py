"""finloom's own datatrove ``PipelineStep``s: tolerant reading, normalisation, held-out routing and split.

Each step streams documents and records its counts with ``stat_update``, so the data funnel is a
by-product of running; a malformed input record goes to the rejects file with its reason instead
of stopping the run.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from finloom.data.documents import Reject, iter_file_documents, source_files


def source_units(sources: list[dict]) -> list[tuple[dict, Path, Path]]:
    """(source, file, root) for every file of every source, in a fixed order: the units dealt to tasks."""
    units = []
    for source in sources:
        path = Path(source["path"])
        root = path.parent if path.is_file() else path
        units += [(source, file, root) for file in source_files(path)]
    return units


class SourceReader(PipelineStep):
    """Read every source (JSONL, Parquet, text, HTML, PDF, or a folder mixing them) into documents.

    ``sources`` is a list of dicts: path, format, text_field, domain, tag, lang. Files are dealt to
    tasks round-robin (task ``rank`` reads units ``rank, rank + world_size, ...``). Each document is
    tagged with its domain; every input unit that yields no document is written to
    ``rejects_folder/<rank>.jsonl`` with file, line and reason, and counted, so input = read + rejected.
    """

    name = "📖 finloom sources"
    type = "📖 - READER"

    def __init__(self, sources: list[dict], rejects_folder: str):
        super().__init__()
        self.sources = sources
        self.rejects_folder = rejects_folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        Path(self.rejects_folder).mkdir(parents=True, exist_ok=True)
        with open(Path(self.rejects_folder) / f"{rank:05d}.jsonl", "w", encoding="utf-8") as rejects_file:
            for number, (source, file, root) in enumerate(source_units(self.sources)):
                if number % world_size != rank:
                    continue
                for item in iter_file_documents(file, root, source["text_field"], source["format"],
                                                domain_hint=source["domain"].removesuffix("_heldout"),
                                                lang=source.get("lang"), tag=source.get("tag")):
                    if isinstance(item, Reject):
                        self.stat_update("rejected", f"rejected_{item.reason.split(':')[0].replace(' ', '_')}")
                        rejects_file.write(json.dumps(item.as_dict(), ensure_ascii=False) + "\n")
                        continue
                    item.metadata["domain"] = source["domain"]
                    self.stat_update("read", f"read_{source['domain']}")
                    self.update_doc_stats(item)
                    yield item


class RankFileReader(PipelineStep):
    """Read back ``folder/<rank>.jsonl`` as written by datatrove's JsonlWriter (a missing file is an empty task).

    Phases after a dedup barrier read the very documents an earlier phase's task ``rank`` wrote,
    in the same order, which datatrove's dedup filters rely on (they drop by document index).
    """

    name = "📖 task output"
    type = "📖 - READER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.folder) / f"{rank:05d}.jsonl"
        if not path.exists():
            return
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                self.stat_update("read")
                # datatrove's writer leaves out empty fields: a document emptied by a step has no "text"
                yield Document(text=record.get("text", ""), id=record.get("id", ""),
                               metadata=record.get("metadata") or {})


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]{2,}|[\t\u00a0\u3000]")
_SPACE_AROUND_NEWLINE = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n{3,}")


class Normalize(PipelineStep):
    """Unicode normalisation (NFKC folds full-width letters and digits), optional Traditional -> Simplified
    Chinese, collapsed spaces and blank lines. Mojibake repair is datatrove's FTFY step, run before this."""

    name = "🔤 normalize"
    type = "🔻 - FORMAT"

    def __init__(self, form: str = "nfkc", traditional_to_simplified: bool = False):
        super().__init__()
        self.form = None if form == "none" else form.upper()
        self.traditional_to_simplified = traditional_to_simplified
        self._converter = None

    def _to_simplified(self, text: str) -> str:
        if self._converter is None:
            from opencc import OpenCC

            self._converter = OpenCC("t2s")
        return self._converter.convert(text) if _HAN.search(text) else text

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                text = doc.text.replace("\r\n", "\n")
                if self.form:
                    text = unicodedata.normalize(self.form, text)
                if self.traditional_to_simplified:
                    text = self._to_simplified(text)
                text = _SPACE_AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", text))
                text = _BLANK_LINES.sub("\n\n", text).strip()
            self.stat_update("changed" if text != doc.text else "unchanged")
            doc.text = text
            yield doc

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_converter": None}


class MinLength(BaseFilter):
    name = "📏 min length"

    def __init__(self, min_chars: int, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars = min_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return len(doc.text) >= self.min_chars or (False, "too_short")


class HeldoutRouter(PipelineStep):
    """Write held-out documents (domain ``*_heldout``) straight to ``writer`` and forward the rest.

    Held-out text measures perplexity; it is cleaned like training text but must not take part in
    deduplication against it (a near-copy would remove the held-out document, not the training one).
    Training copies of held-out text are what decontamination removes.
    """

    name = "🧪 held-out router"
    type = "🔀 - SPLIT"

    def __init__(self, writer: DiskWriter):
        super().__init__()
        self.writer = writer

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.writer as writer:
            for doc in data:
                self.stat_update("total")
                if doc.metadata["domain"].endswith("_heldout"):
                    writer.write(doc, rank)
                    self.stat_update(f"out_{doc.metadata['domain']}")
                    continue
                self.stat_update("forwarded")
                yield doc


class HeldoutSplit(PipelineStep):
    """Route every ``every``-th document (by id hash) of a domain without held-out sources to ``<domain>_heldout``."""

    name = "✂️ held-out split"
    type = "🔀 - SPLIT"

    def __init__(self, domains_to_split: list[str], every: int = 20):
        super().__init__()
        self.domains_to_split = set(domains_to_split)
        self.every = every

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            domain = doc.metadata["domain"]
            if domain in self.domains_to_split:
                bucket = int(hashlib.sha256(doc.id.encode()).hexdigest(), 16) % self.every
                if bucket == 0:
                    doc.metadata["domain"] = f"{domain}_heldout"
            self.stat_update(f"out_{doc.metadata['domain']}")
            yield doc
