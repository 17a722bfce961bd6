"""From datatrove's LSH bucket collisions to the documents to remove, in memory the recipe bounds.

datatrove's bucket step writes candidate pairs as ``(file, doc, file, doc)`` rows, one per shared
bucket. Two steps of finloom's own take it from there, both single tasks:

- ``MinhashVerifyPairs`` keeps a candidate only if the two documents' full signatures agree on at
  least ``threshold`` of their minhashes (an unbiased Jaccard estimate). It works on *units* of
  the pairs (those whose lower row is ``residue`` modulo ``modulus``); a unit that would not fit in
  ``memory_mb`` is split in two, so memory stays under the budget whatever the corpus size, at the
  price of one more read of the signature files per extra unit.
- ``MinhashComponents`` replaces datatrove's clustering (a Python dict over every document in a
  pair, about 200 bytes each) by min-label propagation over a ``uint32`` label per document (8
  bytes at peak, with one compressed copy), streaming the pairs from disk each round; the survivor
  of a component is its first document in task order, as in exact dedup.

Both address a document by its *row*: the signature file's offset (files in task order) plus its
index in the file, so pairs from any number of signature tasks live in one space.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import SENTINEL, MinhashConfig

PAIR_ROW = np.dtype(("<u4", 4))
"""datatrove's ``.dups`` record: file, doc, file, doc."""
BYTES_PER_PAIR = 24
"""Peak bytes per unique pair while a unit's pairs are merged (sorted copies) and counted."""


def records(folder: DataFolder, name: str, dtype: np.dtype, chunk: int) -> Iterator[np.ndarray]:
    """The records of one binary file, ``chunk`` at a time (never the whole file in memory)."""
    with folder.open(name, "rb") as handle:
        while block := handle.read(chunk * dtype.itemsize):
            yield np.frombuffer(block, dtype=dtype)


class SignatureRows:
    """Where each signature file's documents start in the global row space, read from bucket 0's files.

    ``file_ids`` and ``starts`` are sorted; ``rows`` is the total. A file's count is its largest
    document index plus one (documents without shingles have no signature and never pair).
    """

    def __init__(self, signatures_folder: DataFolder, config: MinhashConfig, chunk: int):
        self.dtype = np.dtype([("sig", config.hash_config.np_dtype, (config.hashes_per_bucket,)), ("doc", "<u4")])
        counts = {}
        for name in signatures_folder.list_files(subdirectory="bucket_000", glob_pattern="*.minhash.sig"):
            file_id = int(name.rsplit("/", 1)[-1].removesuffix(".minhash.sig"))
            counts[file_id] = 1 + max((int(block["doc"].max()) for block in
                                       records(signatures_folder, signature_file(0, file_id), self.dtype, chunk)),
                                      default=-1)
        self.file_ids = np.array(sorted(counts), np.int64)
        self.counts = np.array([counts[f] for f in self.file_ids], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])[:-1].astype(np.int64)
        self.rows = int(self.counts.sum())
        self._first_row = np.zeros(int(self.file_ids.max(initial=-1)) + 1, np.uint64)
        self._first_row[self.file_ids] = self.starts

    def of(self, file_ids: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """Global rows of ``(file, doc)``."""
        if (file_ids == SENTINEL).any():
            raise ValueError("pairs against a MinHash index are not supported by finloom's pair steps")
        return self._first_row[file_ids] + docs.astype(np.uint64)

    def file_and_doc(self, rows: np.ndarray) -> list[np.ndarray]:
        """Inverse of ``of``: [file ids, doc indices] of global rows."""
        rows = rows.astype(np.int64)
        position = np.searchsorted(self.starts, rows, side="right") - 1
        return [self.file_ids[position], rows - self.starts[position]]


def signature_file(bucket: int, file_id: int) -> str:
    return f"bucket_{bucket:03d}/{file_id:05d}.minhash.sig"


def pair_ends(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two global rows packed in ``low << 32 | high`` pair keys."""
    return pairs >> np.uint64(32), pairs & np.uint64(0xFFFFFFFF)


class _PairStep(PipelineStep):
    """What both pair steps share: the folders, one task, the row space and reading the input pairs."""

    type = "🫂 - DEDUP"

    def __init__(self, signatures_folder: DataFolderLike, input_folder: DataFolderLike,
                 output_folder: DataFolderLike, config: MinhashConfig, chunk_pairs: int):
        super().__init__()
        self.signatures_folder = get_datafolder(signatures_folder)
        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)
        self.config = config
        self.chunk_pairs = chunk_pairs

    def _signature_rows(self, world_size: int) -> SignatureRows:
        if world_size != 1:
            raise ValueError(f"{type(self).__name__} runs as a single task")
        return SignatureRows(self.signatures_folder, self.config, self.chunk_pairs)

    def _pair_rows(self, names: list[str], rows: SignatureRows) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(left rows, right rows) of the ``.dups`` files' pairs, ``chunk_pairs`` at a time."""
        for name in names:
            for chunk in records(self.input_folder, name, PAIR_ROW, self.chunk_pairs):
                yield rows.of(chunk[:, 0], chunk[:, 1]), rows.of(chunk[:, 2], chunk[:, 3])


class MinhashVerifyPairs(_PairStep):
    """Keep only the candidate pairs whose full signatures agree on at least ``threshold`` of their minhashes.

    Runs between datatrove's bucket step and ``MinhashComponents``, as one task. Per unit of pairs
    (see the module docstring), starting with all of them as one:

    1. the ``.dups`` files are read ``chunk_pairs`` rows at a time into one sorted array of the
       unit's unique pairs (a pair colliding in several buckets is checked once); if the pairs
       alone outgrow the budget, reading stops and the unit is split;
    2. the unit's documents are listed; if pairs and documents together outgrow it, it is split;
    3. bucket by bucket, that bucket's hashes of the unit's documents (read from the signature
       files in chunks) fill one (documents x hashes_per_bucket) array, and each pair's count of
       equal hashes grows by that bucket's matches;
    4. the pairs that reach the threshold are written as ``<unit>.dups``.

    Memory: about 24 bytes per unique pair and 40 per document of the unit, kept under
    ``memory_mb``, plus one chunk's temporaries (``chunk_pairs`` rows, by default about a tenth of
    the budget, at most 64 Ki rows); documents without a candidate cost nothing. Stats: ``units``,
    ``unit_splits`` (each costs one extra read of the ``.dups`` files, and each unit one read of the
    signatures). Measured in benchmarks/data_dedup.py.
    """

    name = "🎯 MinHash verify pairs"

    def __init__(self, signatures_folder: DataFolderLike, input_folder: DataFolderLike,
                 output_folder: DataFolderLike, config: MinhashConfig, threshold: float,
                 memory_mb: float = 1024, chunk_pairs: int | None = None):
        memory_bytes = int(memory_mb * 2**20)
        # a chunk's temporaries cost about 100-130 bytes per row: keep them near a tenth of the budget
        super().__init__(signatures_folder, input_folder, output_folder, config,
                         chunk_pairs or min(1 << 16, max(1 << 10, memory_bytes // 1024)))
        self.threshold = threshold
        self.memory_bytes = memory_bytes

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        with self.track_time():
            rows = self._signature_rows(world_size)
            names = self.input_folder.list_files(glob_pattern="*.dups")
            for stale in self.output_folder.list_files(glob_pattern="*.dups"):  # a relaunch after a crash
                self.output_folder.rm(stale)
            self.stat_update("candidate_pairs", value=sum(self.input_folder.size(n) for n in names) // PAIR_ROW.itemsize)
            units, written = [(1, 0)], 0
            while units:
                modulus, residue = units.pop(0)
                pairs = self._unique_pairs(names, rows, modulus, residue)
                documents = None if pairs is None else self._documents(pairs)
                if documents is None or self._footprint(pairs, documents) > self.memory_bytes:
                    if modulus >= rows.rows:
                        raise MemoryError(f"one document's candidate pairs need more than memory_mb="
                                          f"{self.memory_bytes / 2**20:g} (data.dedup.fuzzy.verify_memory_mb)")
                    units += [(2 * modulus, residue), (2 * modulus, residue + modulus)]
                    self.stat_update("unit_splits")
                    continue
                agree = self._equal_hashes(pairs, documents, rows)
                verified = pairs[agree / (self.config.num_buckets * self.config.hashes_per_bucket) >= self.threshold]
                self.stat_update("units")
                self.stat_update("unique_candidate_pairs", value=len(pairs))
                self.stat_update("verified_pairs", value=len(verified))
                self._write(f"{written:05d}.dups", verified, rows)
                written += 1

    def _footprint(self, pairs: np.ndarray, documents: np.ndarray) -> int:
        """Bytes the unit holds: its pairs, and per document its row and one bucket's hashes (low 32 bits)."""
        return BYTES_PER_PAIR * len(pairs) + (8 + 4 * self.config.hashes_per_bucket) * len(documents)

    def _unique_pairs(self, names: list[str], rows: SignatureRows, modulus: int, residue: int) -> np.ndarray | None:
        """Sorted unique ``low_row << 32 | high_row`` of the unit's candidates; None once they outgrow the budget."""
        unique, pending = np.zeros(0, np.uint64), []
        for left, right in self._pair_rows(names, rows):
            low, high = np.minimum(left, right), np.maximum(left, right)
            keep = low % np.uint64(modulus) == residue
            pending.append(np.unique((low[keep] << np.uint64(32)) | high[keep]))
            held = len(unique) + sum(map(len, pending))
            # merge once the pending pairs outgrow the merged ones (amortised, and never all rows at
            # once) or the budget: only then is a unit known to be too big
            if held - len(unique) >= max(len(unique), self.chunk_pairs) or BYTES_PER_PAIR * held > self.memory_bytes:
                unique, pending = np.unique(np.concatenate([unique, *pending])), []
                if BYTES_PER_PAIR * len(unique) > self.memory_bytes:
                    return None
        return np.unique(np.concatenate([unique, *pending]))

    def _pair_chunks(self, pairs: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(low rows, high rows) of ``pairs``, ``chunk_pairs`` at a time."""
        for start in range(0, len(pairs), self.chunk_pairs):
            yield pair_ends(pairs[start:start + self.chunk_pairs])

    def _documents(self, pairs: np.ndarray) -> np.ndarray:
        """Sorted rows of every document in ``pairs``."""
        return np.unique(np.concatenate([np.zeros(0, np.uint64)] +
                                        [np.unique(np.concatenate(ends)) for ends in self._pair_chunks(pairs)]))

    def _equal_hashes(self, pairs: np.ndarray, documents: np.ndarray, rows: SignatureRows) -> np.ndarray:
        """Per pair, how many minhashes of its two documents are equal, accumulated one bucket at a time."""
        agree = np.zeros(len(pairs), np.uint16)
        if not len(pairs):
            return agree
        # The low 32 bits of each minhash are enough to tell equal from different (a false match
        # costs 2**-32), at half the memory.
        hashes = np.zeros((len(documents), self.config.hashes_per_bucket), np.uint32)
        for bucket in range(self.config.num_buckets):
            for file_id, start in zip(rows.file_ids, rows.starts):
                for block in records(self.signatures_folder, signature_file(bucket, int(file_id)), rows.dtype,
                                     self.chunk_pairs):
                    found = np.uint64(start) + block["doc"].astype(np.uint64)
                    at = np.minimum(np.searchsorted(documents, found), len(documents) - 1)
                    wanted = documents[at] == found
                    hashes[at[wanted]] = block["sig"][wanted] & 0xFFFFFFFF
            start = 0
            for low, high in self._pair_chunks(pairs):
                equal = hashes[np.searchsorted(documents, low)] == hashes[np.searchsorted(documents, high)]
                agree[start:start + len(low)] += equal.sum(axis=1, dtype=np.uint16)
                start += len(low)
        return agree

    def _write(self, name: str, verified: np.ndarray, rows: SignatureRows) -> None:
        """Verified pairs as datatrove's (file, doc, file, doc) rows."""
        with self.output_folder.open(name, "wb") as handle:
            for start in range(0, len(verified), self.chunk_pairs):
                low, high = pair_ends(verified[start:start + self.chunk_pairs])
                handle.write(np.stack(rows.file_and_doc(low) + rows.file_and_doc(high), axis=1)
                             .astype("<u4").tobytes())


class MinhashComponents(_PairStep):
    """Connected components of the duplicate pairs; every document but the first of each is removed.

    Min-label propagation: every document starts labelled with its own row; each round streams the
    pairs from disk and lowers both ends' labels to the smaller one, then labels are compressed
    (``label = label[label]``) until stable; a round that changes nothing ends it. Each label then
    is its component's smallest row, the document kept. Rounds grow with the log of the longest
    chain of pairs (a handful in practice; counted in ``label_rounds``).

    Writes datatrove's ``{file:06d}.remove`` (sorted document indices to drop) for every signature
    file, and with ``save_cluster_id`` its ``{file:06d}.clusters`` (document, cluster id) for every
    document in a component, so datatrove's ``MinhashDedupFilter`` applies them. Memory: 8 bytes per
    document of the corpus (the labels and one compressed copy) plus one chunk of pairs.
    """

    name = "🎯 MinHash components"

    def __init__(self, signatures_folder: DataFolderLike, input_folder: DataFolderLike,
                 output_folder: DataFolderLike, config: MinhashConfig, save_cluster_id: bool = False,
                 chunk_pairs: int = 1 << 16):
        super().__init__(signatures_folder, input_folder, output_folder, config, chunk_pairs)
        self.save_cluster_id = save_cluster_id

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        with self.track_time():
            rows = self._signature_rows(world_size)
            labels = self._labels(rows)
            own = np.arange(rows.rows, dtype=np.uint32)
            removed = labels != own
            roots = np.unique(labels[removed])
            self.stat_update("to_remove", value=int(removed.sum()))
            self.stat_update("clusters", value=len(roots))
            for file_id, start, count in zip(rows.file_ids, rows.starts, rows.counts):
                part = slice(int(start), int(start + count))
                with self.output_folder.open(f"{file_id:06d}.remove", "wb") as handle:
                    handle.write(np.flatnonzero(removed[part]).astype("<u4").tobytes())
                if self.save_cluster_id:
                    members = np.flatnonzero(removed[part] | np.isin(own[part], roots))
                    cluster = np.searchsorted(roots, labels[part][members])
                    with self.output_folder.open(f"{file_id:06d}.clusters", "wb") as handle:
                        handle.write(np.stack([members, cluster], axis=1).astype("<u4").tobytes())

    def _labels(self, rows: SignatureRows) -> np.ndarray:
        labels = np.arange(rows.rows, dtype=np.uint32)
        names = self.input_folder.list_files(glob_pattern="*.dups")
        while True:
            self.stat_update("label_rounds")
            changed = False
            for left_rows, right_rows in self._pair_rows(names, rows):
                left, right = labels[left_rows], labels[right_rows]
                differ = left != right
                if differ.any():
                    changed = True
                    lower = np.minimum(left[differ], right[differ])
                    np.minimum.at(labels, left[differ], lower)
                    np.minimum.at(labels, right[differ], lower)
            if not changed:
                return labels
            while not np.array_equal(compressed := labels[labels], labels):
                labels = compressed
