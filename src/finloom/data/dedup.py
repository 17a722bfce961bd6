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
with the default 25x8 bands). One step of finloom's own, ``MinhashVerifyPairs``, sits between
datatrove's bucket and cluster steps and keeps a candidate pair only if its full signatures
estimate a Jaccard similarity at or above ``jaccard_threshold``; on the benchmark this lifts
precision at 0.8 from about 0.77 to 0.98-0.99 at no loss of recall worth naming.

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

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import (
    SENTINEL,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import ngrams, simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer

from finloom.data.executors import Phase, run_phases
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
    """

    num_buckets: int = 25
    hashes_per_bucket: int = 8
    n_grams: int = 5
    seed: int = 1
    shingle: str = "cjk_chars"
    jaccard_threshold: float | None = 0.8

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


class MinhashVerifyPairs(PipelineStep):
    """Keep only the candidate pairs whose full signatures agree on at least ``threshold`` of their minhashes.

    Runs between datatrove's bucket and cluster steps, as one task (like clustering). It never
    holds whole signatures, so its memory stays small whatever share of the corpus is duplicated:

    1. the ``.dups`` files are read ``chunk_pairs`` rows at a time into one sorted array of unique
       pairs of global document rows (a pair colliding in several buckets is checked once);
    2. bucket by bucket, that bucket's hashes of every document in a pair (its signature files,
       read in chunks) fill one (documents x hashes_per_bucket) array, and each pair's count of
       equal hashes grows by that bucket's matches;
    3. the pairs whose share of equal hashes reaches the threshold are written back, spread over
       the ``.dups`` file names the cluster step expects.

    Peak memory: 40 bytes per document in a candidate pair (its row and 8 hashes of 4 bytes) plus
    about 10 per unique candidate pair (the pair and its count) and one chunk's lookups; documents
    without a candidate cost nothing. Holding full signatures took 800 bytes per document in a
    pair. Measured in benchmarks/data_dedup.py. Pairs against an index (``SENTINEL``) have no
    signature here and pass unchanged.
    """

    type = "🫂 - DEDUP"
    name = "🎯 MinHash verify pairs"

    def __init__(self, signatures_folder: DataFolderLike, input_folder: DataFolderLike,
                 output_folder: DataFolderLike, config: MinhashConfig, threshold: float, chunk_pairs: int = 1 << 18):
        super().__init__()
        self.signatures_folder = get_datafolder(signatures_folder)
        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)
        self.config = config
        self.threshold = threshold
        self.chunk_pairs = chunk_pairs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ValueError("MinhashVerifyPairs runs as a single task")
        with self.track_time():
            names = self.input_folder.list_files(glob_pattern="*.dups")
            offsets = self._file_offsets()
            pairs, index_pairs = self._unique_pairs(names, offsets)
            agree = self._equal_hashes(pairs, offsets)
            total = self.config.num_buckets * self.config.hashes_per_bucket
            verified = pairs[agree / total >= self.threshold]
            self.stat_update("unique_candidate_pairs", value=len(pairs))
            self.stat_update("verified_pairs", value=len(verified))
            self._write(names, verified, offsets, index_pairs)

    def _record_dtype(self) -> np.dtype:
        return np.dtype([("sig", self.config.hash_config.np_dtype, (self.config.hashes_per_bucket,)), ("doc", "<u4")])

    def _chunks(self, folder, name: str, dtype: np.dtype):
        """The records of one file, ``chunk_pairs`` at a time (never the whole file in memory)."""
        with folder.open(name, "rb") as handle:
            while chunk := handle.read(self.chunk_pairs * dtype.itemsize):
                yield np.frombuffer(chunk, dtype=dtype)

    def _signature_file(self, bucket: int, file_id: int) -> str:
        return f"bucket_{bucket:03d}/{file_id:05d}.minhash.sig"

    def _file_offsets(self) -> dict[int, int]:
        """Signature file id -> the global row of its document 0 (files in id order)."""
        counts = {}
        for name in self.signatures_folder.list_files(subdirectory="bucket_000", glob_pattern="*.minhash.sig"):
            file_id = int(Path(name).name.removesuffix(".minhash.sig"))
            counts[file_id] = 1 + max((int(records["doc"].max()) for records in
                                       self._chunks(self.signatures_folder, self._signature_file(0, file_id),
                                                    self._record_dtype())), default=-1)
        offsets, rows = {}, 0
        for file_id in sorted(counts):
            offsets[file_id], rows = rows, rows + counts[file_id]
        return offsets

    def _unique_pairs(self, names: list[str], offsets: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique ``low_row << 32 | high_row`` of the candidate pairs; the pairs against an index as read."""
        first_row = np.zeros(max(offsets, default=0) + 1, np.uint64)
        for file_id, offset in offsets.items():
            first_row[file_id] = offset
        unique, pending, index_pairs = np.zeros(0, np.uint64), [], [np.zeros((0, 4), "<u4")]
        for name in names:
            for chunk in self._chunks(self.input_folder, name, np.dtype(("<u4", 4))):
                self.stat_update("candidate_pairs", value=len(chunk))
                from_index = chunk[:, 0] == SENTINEL
                index_pairs.append(chunk[from_index])
                own = chunk[~from_index]
                left, right = first_row[own[:, 0]] + own[:, 1], first_row[own[:, 2]] + own[:, 3]
                pending.append(np.unique((np.minimum(left, right) << np.uint64(32)) | np.maximum(left, right)))
                # merge once the pending pairs outgrow the merged ones: amortised, and never all rows at once
                if sum(map(len, pending)) >= max(len(unique), self.chunk_pairs):
                    unique, pending = np.unique(np.concatenate([unique, *pending])), []
        return np.unique(np.concatenate([unique, *pending])), np.concatenate(index_pairs)

    def _pair_chunks(self, pairs: np.ndarray):
        """(low rows, high rows) of ``pairs``, ``chunk_pairs`` at a time."""
        for start in range(0, len(pairs), self.chunk_pairs):
            yield _pair_ends(pairs[start:start + self.chunk_pairs])

    def _equal_hashes(self, pairs: np.ndarray, offsets: dict[int, int]) -> np.ndarray:
        """Per pair, how many minhashes of its two documents are equal, accumulated one bucket at a time.

        Only documents that are in a candidate pair get a row, so memory follows the duplicated part
        of the corpus, not its size.
        """
        agree = np.zeros(len(pairs), np.uint16)
        if not len(pairs):
            return agree
        documents = np.unique(np.concatenate([np.unique(np.concatenate(ends)) for ends in self._pair_chunks(pairs)]))
        # The low 32 bits of each minhash are enough to tell equal from different (a false match
        # costs 2**-32), at half the memory.
        hashes = np.zeros((len(documents), self.config.hashes_per_bucket), np.uint32)
        for bucket in range(self.config.num_buckets):
            for file_id, offset in offsets.items():
                for records in self._chunks(self.signatures_folder, self._signature_file(bucket, file_id),
                                            self._record_dtype()):
                    rows = np.uint64(offset) + records["doc"].astype(np.uint64)
                    at = np.minimum(np.searchsorted(documents, rows), len(documents) - 1)
                    wanted = documents[at] == rows
                    hashes[at[wanted]] = records["sig"][wanted] & 0xFFFFFFFF
            start = 0
            for low, high in self._pair_chunks(pairs):
                equal = hashes[np.searchsorted(documents, low)] == hashes[np.searchsorted(documents, high)]
                agree[start:start + len(low)] += equal.sum(axis=1, dtype=np.uint16)
                start += len(low)
        return agree

    def _write(self, names: list[str], verified: np.ndarray, offsets: dict[int, int], index_pairs: np.ndarray) -> None:
        """Verified pairs as datatrove's (file, doc, file, doc) rows, spread over the input's ``.dups`` names."""
        file_ids = np.array(sorted(offsets), np.int64)
        starts = np.array([offsets[f] for f in file_ids], np.int64)

        def file_and_doc(rows: np.ndarray) -> list[np.ndarray]:
            position = np.searchsorted(starts, rows, side="right") - 1
            return [file_ids[position], rows - starts[position]]

        for number, (name, part) in enumerate(zip(names, np.array_split(verified, max(len(names), 1)))):
            low, high = (ends.astype(np.int64) for ends in _pair_ends(part))
            rows = np.stack(file_and_doc(low) + file_and_doc(high), axis=1).astype("<u4").reshape(-1, 4)
            if number == 0:
                rows = np.concatenate([index_pairs, rows])
            with self.output_folder.open(name, "wb") as handle:
                handle.write(rows.tobytes())


def _pair_ends(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two global document rows packed in ``low << 32 | high`` pair keys."""
    return pairs >> np.uint64(32), pairs & np.uint64(0xFFFFFFFF)


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
    ``settings.jaccard_threshold`` is set] -> clusters (one task) -> filter + ``then`` (``tasks``
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
                                    settings.jaccard_threshold)
        phases.append(Phase("minhash_verify", [verify], 1))
    return phases + [
        Phase("minhash_clusters", [MinhashDedupCluster(str(pairs_folder), str(work / "remove_ids"), config=config,
                                                       save_cluster_id=cluster_ids)], 1),
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
    filter_stats = _stage_stats(logs_dir / "minhash_filter", MinhashDedupFilter)
    candidate_pairs = _stage_stats(logs_dir / "minhash_buckets", MinhashDedupBuckets)["total_matches"]
    verify_stats = _stage_stats(logs_dir / "minhash_verify", MinhashVerifyPairs)
    verified_pairs = verify_stats["verified_pairs"] if settings.jaccard_threshold is not None else candidate_pairs
    return {"documents": filter_stats["total"], "kept": filter_stats["forwarded"], "removed": filter_stats["dropped"],
            "candidate_pairs": candidate_pairs, "duplicate_pairs": verified_pairs}


def _stage_stats(logging_dir: Path, step: type[PipelineStep]) -> Counter:
    """One step's counters summed over every task's stats file, including tasks a resumed run skipped."""
    totals: Counter = Counter()
    for path in sorted((logging_dir / "stats").glob("*.json")):
        for step_stats in json.loads(path.read_text()):
            if step_stats["name"] == f"{step.type}: {step.name}":
                for key, value in step_stats["stats"].items():
                    totals[key] += value if isinstance(value, int) else value["total"]
    return totals
