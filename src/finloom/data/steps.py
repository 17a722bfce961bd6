"""finloom's own datatrove ``PipelineStep``s: tolerant reading, normalisation, exact dedup, held-out split.

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

from finloom.data.documents import Reject, iter_documents


class SourceReader(PipelineStep):
    """Read every source (JSONL, Parquet, text, HTML, PDF, or a folder mixing them) into documents.

    ``sources`` is a list of dicts: path, format, text_field, domain. Each document is tagged with
    its domain; every input unit that yields no document is appended to ``rejects_path`` as a
    JSON line with file, line and reason, and counted, so input = read + rejected.
    """

    name = "📖 finloom sources"
    type = "📖 - READER"

    def __init__(self, sources: list[dict], rejects_path: str):
        super().__init__()
        self.sources = sources
        self.rejects_path = rejects_path

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with open(self.rejects_path, "w", encoding="utf-8") as rejects_file:
            for source_index, source in enumerate(self.sources):
                if source_index % world_size != rank:
                    continue
                for item in iter_documents(Path(source["path"]), source["text_field"], source["format"]):
                    if isinstance(item, Reject):
                        self.stat_update("rejected", f"rejected_{item.reason.split(':')[0].replace(' ', '_')}")
                        rejects_file.write(json.dumps(item.as_dict(), ensure_ascii=False) + "\n")
                        continue
                    item.metadata["domain"] = source["domain"]
                    self.stat_update("read", f"read_{source['domain']}")
                    yield item


_SPACES = re.compile(r"[ \t\u00a0\u3000]{2,}|[\t\u00a0\u3000]")
_SPACE_AROUND_NEWLINE = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n{3,}")


class Normalize(PipelineStep):
    """Unicode NFKC (full-width -> half-width letters and digits), collapsed spaces and blank lines."""

    name = "🔤 normalize"
    type = "🔻 - FORMAT"

    def __init__(self, form: str = "nfkc"):
        super().__init__()
        self.form = form

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                text = doc.text.replace("\r\n", "\n")
                if self.form == "nfkc":
                    text = unicodedata.normalize("NFKC", text)
                text = _SPACE_AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", text))
                text = _BLANK_LINES.sub("\n\n", text).strip()
            self.stat_update("changed" if text != doc.text else "unchanged")
            doc.text = text
            yield doc


class MinLength(BaseFilter):
    name = "📏 min length"

    def __init__(self, min_chars: int, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars = min_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return len(doc.text) >= self.min_chars or (False, "too_short")


class ExactDedup(BaseFilter):
    """Drop documents whose normalised text was already seen (first occurrence wins).

    Single-task and in memory (16 bytes per document): enough for the quickstart and one-box
    corpora of a few hundred million documents.
    """

    name = "🫂 exact dedup"

    def __init__(self, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.seen: set[bytes] = set()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        digest = hashlib.blake2b(doc.text.encode("utf-8"), digest_size=16).digest()
        if digest in self.seen:
            return False, "exact_duplicate"
        self.seen.add(digest)
        return True


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
