"""Eval-set decontamination: drop (or flag) training documents that share a long n-gram with an eval item.

Each eval item contributes the n-grams of its text fields (``question``, ``prompt``, and
``answer`` when it is text: MCQ, FLAME-style QA, calculation and scenario files alike). Text is
normalised the same way on both sides (NFKC, lowercase, every run of punctuation and whitespace
becomes one space), then cut two ways:

- word n-grams (default 13 words, the GPT-3 convention) over whitespace-separated words;
- character n-grams (default 20 characters) over the text with spaces removed, for windows
  holding at least one CJK character, because Chinese has no spaces to count words by.

A text shorter than n units yields no n-gram and cannot match: a shared short phrase is not
contamination.

MCQ questions are indexed by their stem only (the text before the first option line, ``A.`` or
``A．``) unless ``include_options``: in finloom's bundled data, and in any benchmark built from a
knowledge base, the options are reference definitions that legitimately appear verbatim in
training corpora, while the stem (the question as posed) does not. Indexing options would throw
away exactly the knowledge the eval is meant to test.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from finloom.data.dedup import CJK_CHARS
from finloom.errors import BadInput
from finloom.files import read_records

EVAL_TEXT_FIELDS = ("question", "prompt", "answer")
DECONTAM_ACTIONS = ("drop", "flag")

_OPTION_LINE = re.compile(r"^[ \t]*[A-H][ \t]*[.．、)）]", re.MULTILINE)
_NOT_WORD = re.compile(r"[\W_]+")
_CJK = re.compile(f"[{CJK_CHARS}]")


def normalize_for_ngrams(text: str) -> str:
    """NFKC, lowercase, punctuation and whitespace collapsed to single spaces."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def question_stem(question: str) -> str:
    """The part of an MCQ question before its first option line (the whole text if it has none)."""
    match = _OPTION_LINE.search(question)
    return question[: match.start()] if match else question


def word_ngrams(normalized: str, n: int) -> set[str]:
    words = normalized.split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def char_ngrams(normalized: str, n: int) -> set[str]:
    """Windows of ``n`` non-space characters that contain a CJK character."""
    chars = normalized.replace(" ", "")
    return {chars[i : i + n] for i in range(len(chars) - n + 1) if _CJK.search(chars, i, i + n)}


def text_ngrams(texts: Iterable[str], word_n: int, char_n: int) -> set[str]:
    """Word and (for CJK text) character n-grams of ``texts``, after normalisation."""
    grams: set[str] = set()
    for text in texts:
        normalized = normalize_for_ngrams(text)
        grams |= word_ngrams(normalized, word_n)
        if _CJK.search(normalized):
            grams |= char_ngrams(normalized, char_n)
    return grams


class Decontaminate(BaseFilter):
    """Drop (``action="drop"``, reason ``contaminated``) or flag (``"flag"``) documents sharing an eval n-gram.

    Either way the document's ``metadata["decontam_hits"]`` maps each eval set it hit (the file's
    stem) to the sorted ids of the items it overlaps, and the step counts ``hits_<eval set>``
    per document. ``index_summary`` says, per eval set, how many items could be indexed at all
    (items shorter than n units cannot be checked).
    """

    type = "🦠 - DECONT"
    name = "🧪 decontaminate"

    def __init__(
        self,
        eval_files: Sequence[str | Path],
        word_ngram: int = 13,
        char_ngram: int = 20,
        include_options: bool = False,
        action: str = "drop",
        text_fields: Sequence[str] = EVAL_TEXT_FIELDS,
        exclusion_writer: DiskWriter | None = None,
    ):
        super().__init__(exclusion_writer)
        if action not in DECONTAM_ACTIONS:
            raise ValueError(f"action {action!r} is not one of {DECONTAM_ACTIONS}")
        self.word_ngram = word_ngram
        self.char_ngram = char_ngram
        self.include_options = include_options
        self.action = action
        self.text_fields = tuple(text_fields)
        self.index: dict[str, list[tuple[str, str]]] = {}
        self.index_summary: dict[str, dict[str, int]] = {}
        for path in map(Path, eval_files):
            self._index_eval_file(path)

    def _index_eval_file(self, path: Path) -> None:
        rejects: list[dict] = []
        records = read_records(path, (), rejects)
        if rejects:
            raise BadInput(f"eval file {path}: line {rejects[0]['line']}: {rejects[0]['reason']}")
        eval_set = path.stem
        indexed_items = 0
        ngram_count = 0
        for number, record in enumerate(records):
            item = (eval_set, str(record.get("id", number)))
            grams = self.ngrams(self._item_texts(record))
            indexed_items += bool(grams)
            ngram_count += len(grams)
            for gram in grams:
                self.index.setdefault(gram, []).append(item)
        self.index_summary[eval_set] = {"items": len(records), "indexed_items": indexed_items, "ngrams": ngram_count}

    def _item_texts(self, record: dict) -> list[str]:
        texts = []
        for field in self.text_fields:
            value = record.get(field)
            if isinstance(value, str):
                texts.append(value if field != "question" or self.include_options else question_stem(value))
        return texts

    def ngrams(self, texts: Iterable[str]) -> set[str]:
        return text_ngrams(texts, self.word_ngram, self.char_ngram)

    def hits(self, text: str) -> dict[str, list[str]]:
        """Eval set -> sorted ids of the items whose n-grams occur in ``text``."""
        found: dict[str, set[str]] = {}
        for gram in self.ngrams([text]):
            for eval_set, item_id in self.index.get(gram, ()):
                found.setdefault(eval_set, set()).add(item_id)
        return {eval_set: sorted(ids) for eval_set, ids in sorted(found.items())}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        hits = self.hits(doc.text)
        if not hits:
            return True
        doc.metadata["decontam_hits"] = hits
        for eval_set in hits:
            self.stat_update(f"hits_{eval_set}")
        if self.action == "flag":
            self.stat_update("flagged")
            return True
        return False, "contaminated"
