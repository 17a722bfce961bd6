"""Fuzzy deduplication: datatrove's MinHash LSH stages, with shingles that work for Chinese.

datatrove shingles a document into n-grams of the words its word tokenizer returns. Its default
(English, NLTK) and fallback (whitespace) tokenizers leave an unspaced Chinese clause as a single
"word", so one changed character changes every shingle of that clause and near-duplicate Chinese
documents look unrelated. Its own ``zh`` tokenizer needs spaCy and jieba, is slow, and applies one
language to a whole step, while finloom's corpora mix languages inside documents.

finloom therefore passes a ``ShingleTokenizer`` through the signature step's ``language`` hook
(``load_word_tokenizer`` accepts a ``WordTokenizer`` instance): in its default ``cjk_chars`` mode
every Han/kana character is one token and every other run of letters or digits stays a word, so
English keeps word n-grams and Chinese gets character n-grams, in the same document, with no
segmenter and no model. ``words`` mode splits on whitespace only, which is what datatrove's
word tokenizers give for unsegmented text; it exists to compare against.

datatrove removes a document as soon as it shares one LSH bucket with another, so pairs well
below the target similarity go too (the S-curve is gradual: 0.68 of pairs at Jaccard 0.65 collide
with the default 25x8 bands). finloom's ``MinhashVerifyPairs`` (finloom.data.minhash_pairs) sits
after datatrove's bucket step and keeps a candidate pair only if its full signatures estimate a
Jaccard similarity at or above ``jaccard_threshold``; on the benchmark this lifts precision at 0.8
from about 0.77 to 0.98-0.99 at no loss of recall worth naming; ``verify_memory_mb`` caps its
memory. Clustering is finloom's ``MinhashComponents`` rather than datatrove's dict-based union-find:
a 4-byte label per document (8 at peak) instead of about 200 bytes per document in a pair.

Exact dedup is datatrove's own three phases (signatures -> find -> filter). Both dedups are built
as ``Phase`` lists (``exact_dedup_phases``, ``minhash_phases``: signatures -> buckets -> verify ->
clusters -> filter) whose filter phase continues with the steps the caller gives, so the data
stage chains them with the rest of its pipeline and runs them on any executor. Each phase keeps
its completion markers under the logs folder, so a relaunch skips finished tasks (use a fresh
work folder for new input). ``run_minhash_dedup`` runs MinHash alone over a folder of JSONL.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import ngrams, simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer

from finloom.data.executors import Phase, run_phases
from finloom.data.minhash_pairs import MinhashComponents, MinhashVerifyPairs
from finloom.recipe import ExecutorSettings

SHINGLE_MODES = ("cjk_chars", "words")
NEAR_DUPLICATE = "near_duplicate"
EXACT_DUPLICATE = "exact_duplicate"
ReaderFactory = Callable[[], PipelineStep]
"""Makes the step that yields a task's documents; called once per phase that reads them."""

# Hiragana, katakana, CJK extension A, unified ideographs, compatibility ideographs.
CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR_OR_WORD = re.compile(rf"[{CJK_CHARS}]|[^\s{CJK_CHARS}]+")
_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")


class ShingleTokenizer(WordTokenizer):
    """Tokens for MinHash shingles: one per CJK character (``cjk_chars``) or per whitespace word (``words``).

    It receives text already simplified by datatrove (lowercase, punctuation turned into spaces,
    digits folded to 0), so a regex is all it needs.
    """

    def __init__(self, mode: str = "cjk_chars"):
        super().__init__()
        if mode not in SHINGLE_MODES:
            raise ValueError(f"shingle mode {mode!r} is not one of {SHINGLE_MODES}")
        self.mode = mode

    def word_tokenize(self, text: str) -> list[str]:
        return _CJK_CHAR_OR_WORD.findall(text) if self.mode == "cjk_chars" else text.split()

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _SENTENCE.finditer(text) if match.group().strip()]

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[start:end].strip() for start, end in self.span_tokenize(text)]


@dataclass(frozen=True)
class MinhashSettings:
    """MinHash LSH settings; the defaults target Jaccard similarity 0.8 on 5-gram shingles.

    Two documents with Jaccard similarity ``s`` share a bucket (become candidates) with
    probability ``1 - (1 - s**hashes_per_bucket) ** num_buckets``: with 25 buckets of 8 hashes,
    0.99 at s=0.8, 0.94 at 0.75 and 0.68 at 0.65. datatrove treats every candidate as a
    duplicate, so on its own it removes many pairs well below the threshold; with
    ``jaccard_threshold`` set, a candidate is kept only if the share of equal values across all
    ``num_buckets * hashes_per_bucket`` minhashes (an unbiased Jaccard estimate) reaches it.
    Measured precision/recall: benchmarks/data_dedup.py.

    num_buckets: LSH bands; more raise candidate recall at every similarity (one bucket task each).
    hashes_per_bucket: rows per band; more make the candidate cut steeper and move it up.
    n_grams: tokens per shingle: words for spaced scripts, characters for Chinese/Japanese.
    seed: seed of the hash permutations; the same everywhere for a given index.
    shingle: ``cjk_chars`` (default) or ``words`` (datatrove's behaviour on unsegmented text).
    jaccard_threshold: estimated similarity a candidate pair needs; None keeps every candidate.
    verify_memory_mb: memory the pair check may hold; past it, it works on the pairs in parts (one
        more read of the signature files per part).
    """

    num_buckets: int = 25
    hashes_per_bucket: int = 8
    n_grams: int = 5
    seed: int = 1
    shingle: str = "cjk_chars"
    jaccard_threshold: float | None = 0.8
    verify_memory_mb: float = 1024

    def __post_init__(self):
        if self.shingle not in SHINGLE_MODES:
            raise ValueError(f"shingle {self.shingle!r} is not one of {SHINGLE_MODES}")

    @property
    def lsh_threshold(self) -> float:
        """Similarity where the candidate S-curve is steepest: (1/num_buckets) ** (1/hashes_per_bucket)."""
        return (1 / self.num_buckets) ** (1 / self.hashes_per_bucket)

    def minhash_config(self) -> MinhashConfig:
        # sha1 (stdlib) rather than datatrove's default xxhash: not a declared dependency, and
        # xxhash 4 rejects the str shingles datatrove 0.10 passes it.
        return MinhashConfig(n_grams=self.n_grams, num_buckets=self.num_buckets,
                             hashes_per_bucket=self.hashes_per_bucket, seed=self.seed,
                             hash_config=HashConfig(precision=64, hash_fc="sha1"))


def shingle_set(text: str, settings: MinhashSettings) -> set[str]:
    """The shingles the signature step hashes for ``text``, unhashed: for exact Jaccard checks."""
    simplified = simplify_text(text, settings.minhash_config().norm_config)
    tokens = ShingleTokenizer(settings.shingle).word_tokenize(simplified)
    return {" ".join(gram) for gram in ngrams(tokens, settings.n_grams)}


class ReasonJsonlWriter(JsonlWriter):
    """A JsonlWriter that stamps ``metadata.filter_reason`` like BaseFilter does for its exclusions.

    datatrove's MinhashDedupFilter writes removed documents as they are; this keeps them in the same
    shape as every other removed document of the data stage.
    """

    def __init__(self, output_folder: str, reason: str, output_filename: str):
        super().__init__(output_folder, output_filename=output_filename, compression=None)
        self.reason = reason

    def write(self, document: Document, rank: int = 0, **kwargs) -> None:
        document.metadata["filter_reason"] = self.reason
        super().write(document, rank, **kwargs)


def exact_dedup_config() -> ExactDedupConfig:
    """Exact dedup on the (already normalised) text; sha1 for the reason given in ``minhash_config``."""
    return ExactDedupConfig(content_getter=_document_text, hash_config=HashConfig(precision=64, hash_fc="sha1"))


def _document_text(doc: Document) -> str:
    return doc.text


def exact_dedup_phases(reader: ReaderFactory, work_folder: str | Path, tasks: int,
                       then: list[PipelineStep], exclusion_folder: str | Path | None = None,
                       exclusion_filename: str = "${filter_reason}/${rank}.jsonl") -> list[Phase]:
    """datatrove's exact dedup over what ``reader(rank)`` yields: signatures -> find -> filter + ``then``.

    Of each group of identical texts the first in task order is kept; ``then`` continues the
    filter phase (a writer, or the next dedup's signature step).
    """
    work = Path(work_folder)
    config = exact_dedup_config()
    exclusion_writer = (ReasonJsonlWriter(str(exclusion_folder), EXACT_DUPLICATE, exclusion_filename)
                        if exclusion_folder is not None else None)
    return [
        Phase("exact_signatures", [reader(), ExactDedupSignature(str(work / "exact" / "signatures"), config=config)],
              tasks),
        Phase("exact_find", [ExactFindDedups(str(work / "exact" / "signatures"), str(work / "exact" / "dups"),
                                             config=config)], 1),
        Phase("exact_filter", [reader(), ExactDedupFilter(str(work / "exact" / "dups"), config=config,
                                                           exclusion_writer=exclusion_writer), *then], tasks),
    ]


def minhash_phases(
    reader: ReaderFactory,
    work_folder: str | Path,
    tasks: int,
    then: list[PipelineStep],
    settings: MinhashSettings = MinhashSettings(),
    exclusion_folder: str | Path | None = None,
    exclusion_filename: str = "${filter_reason}/${rank}.jsonl",
    cluster_ids: bool = False,
) -> list[Phase]:
    """The MinHash phases over what ``reader()`` yields per task, in launch order.

    signatures (``tasks`` tasks) -> buckets (one task per bucket) -> [verify (one task), when
    ``settings.jaccard_threshold`` is set] -> components (one task) -> filter + ``then`` (``tasks``
    tasks, reading the same documents in the same order, which the document indices rely on).
    Removed documents, tagged ``near_duplicate``, go to ``exclusion_folder`` when given.
    ``cluster_ids`` adds ``metadata.minhash_cluster_id`` to every document (-1 when it has no
    near-duplicate), for inspecting what was grouped.
    """
    work = Path(work_folder) / "minhash"
    config = settings.minhash_config()
    exclusion_writer = (ReasonJsonlWriter(str(exclusion_folder), NEAR_DUPLICATE, exclusion_filename)
                        if exclusion_folder is not None else None)
    pairs_folder = work / "buckets"
    phases = [
        Phase("minhash_signatures", [reader(), MinhashDedupSignature(str(work / "signatures"), config=config,
                                                                     language=ShingleTokenizer(settings.shingle))],
              tasks),
        Phase("minhash_buckets", [MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=config)],
              settings.num_buckets),
    ]
    if settings.jaccard_threshold is not None:
        pairs_folder = work / "verified"
        verify = MinhashVerifyPairs(str(work / "signatures"), str(work / "buckets"), str(pairs_folder), config,
                                    settings.jaccard_threshold, settings.verify_memory_mb)
        phases.append(Phase("minhash_verify", [verify], 1))
    components = MinhashComponents(str(work / "signatures"), str(pairs_folder), str(work / "remove_ids"), config,
                                   save_cluster_id=cluster_ids)
    return phases + [
        Phase("minhash_clusters", [components], 1),
        Phase("minhash_filter", [reader(), MinhashDedupFilter(str(work / "remove_ids"), exclusion_writer=exclusion_writer,
                                                              load_cluster_ids=cluster_ids), *then], tasks),
    ]


def run_minhash_dedup(
    input_folder: str | Path,
    output_folder: str | Path,
    work_folder: str | Path,
    settings: MinhashSettings = MinhashSettings(),
    exclusion_folder: str | Path | None = None,
    tasks: int = 1,
    workers: int = 1,
    glob_pattern: str = "*.jsonl",
    output_filename: str = "${rank}.jsonl",
    exclusion_filename: str = "${filter_reason}_${rank}.jsonl",
    cluster_ids: bool = False,
    on_phase: Callable[[int, Phase], None] | None = None,
) -> dict:
    """MinHash dedup of the JSONL files in ``input_folder`` on the local executor; returns its counts.

    ``on_phase(index, phase)`` is called before each phase (a benchmark measures memory per phase).

    Returns ``documents``, ``kept``, ``removed`` (documents = kept + removed, checked),
    ``candidate_pairs`` (bucket collisions, one per shared bucket) and ``duplicate_pairs`` (those
    that passed verification, or all of them without it).
    """
    work = Path(work_folder)

    def reader() -> JsonlReader:
        return JsonlReader(str(input_folder), glob_pattern=glob_pattern, compression=None, add_file_path=False)

    writer = JsonlWriter(str(output_folder), output_filename=output_filename, compression=None)
    phases = minhash_phases(reader, work, tasks, [writer], settings, exclusion_folder, exclusion_filename, cluster_ids)
    run_phases(phases, ExecutorSettings(workers=workers), work / "logs", on_phase)
    counts = minhash_counts(work / "logs", settings)
    if counts["documents"] != counts["kept"] + counts["removed"]:
        raise RuntimeError(f"MinHash dedup counts do not add up: {counts}")
    return counts


def minhash_counts(logs_dir: Path, settings: MinhashSettings) -> dict:
    """Documents in/kept/removed by the filter phase and the candidate / verified pair counts."""
    filter_stats = stage_stats(logs_dir / "minhash_filter", MinhashDedupFilter)
    candidate_pairs = stage_stats(logs_dir / "minhash_buckets", MinhashDedupBuckets)["total_matches"]
    verify_stats = stage_stats(logs_dir / "minhash_verify", MinhashVerifyPairs)
    verified_pairs = verify_stats["verified_pairs"] if settings.jaccard_threshold is not None else candidate_pairs
    return {"documents": filter_stats["total"], "kept": filter_stats["forwarded"], "removed": filter_stats["dropped"],
            "candidate_pairs": candidate_pairs, "duplicate_pairs": verified_pairs}


def stage_stats(logging_dir: Path, step: type[PipelineStep]) -> Counter:
    """One step's counters summed over every task's stats file, including tasks a resumed run skipped."""
    totals: Counter = Counter()
    for path in sorted((logging_dir / "stats").glob("*.json")):
        for step_stats in json.loads(path.read_text()):
            if step_stats["name"] == f"{step.type}: {step.name}":
                for key, value in step_stats["stats"].items():
                    totals[key] += value if isinstance(value, int) else value["total"]
    return totals
