"""MinHash near-duplicate removal against exact Jaccard ground truth, in English and Chinese, at several sizes.

A seeded generator writes base documents (Zipf-distributed pseudo-words for English, characters
for Chinese) and, for half of them, 1-3 edited copies (token substitutions, sentences inserted
or deleted) aimed at controlled similarity levels: light edits (0.97, 0.92, 0.87) that should be
removed and heavy rewrites (0.65, 0.5) that should be kept. Ground truth is the exact Jaccard
similarity, with plain Python sets on the very shingles the signature step hashes, of every pair
inside a family (base + copies); pairs at >= 0.8 are duplicates and join one component. Unrelated
families are checked on a random sample of cross-family pairs (their largest Jaccard is printed).

Scoring is per component C (order-free, since which copy survives is the clusterer's choice):
correct removals = sum over C of min(removed in C, |C| - 1); precision = correct / removed,
recall = correct / sum(|C| - 1). The ``curve`` gives, per Jaccard band, the share of base+one-copy
families MinHash put in one cluster: the measured removal probability at that similarity.

Each size's dedup runs in a fresh subprocess, so its peak RSS is its own (VmHWM). The corpus is written
in files of at most ``--shard-mb``, one signature / filter task each (run one after another), as a large
corpus would be; the pair check runs under ``--verify-memory-mb``, small by default so that it binds at
1 GB and the split into units is measured.

    python benchmarks/data_dedup.py [--sizes-mb 10 100] [--num-buckets 25 --hashes-per-bucket 8] [--no-verify]
                                    [--verify-memory-mb 4] [--shard-mb 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from finloom.data.dedup import MinhashSettings, run_minhash_dedup, shingle_set, stage_stats
from finloom.data.minhash_pairs import MinhashComponents, MinhashVerifyPairs
from finloom.runner import PeakMemory, process_peak_rss_mb

LEVELS = (0.97, 0.92, 0.87, 0.65, 0.5)
THRESHOLD = 0.8
BANDS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)


class Language:
    """Token vocabulary with Zipf frequencies, and how sentences of token ids become text."""

    def __init__(self, code: str, rng: np.random.Generator):
        self.code = code
        if code == "en":
            syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
            words = {"".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(30000)}
            self.vocab = sorted(words)[:20000]
        else:
            chars = rng.choice(np.arange(0x4E00, 0x9FA6), size=3000, replace=False)
            self.vocab = [chr(c) for c in chars]
        weights = 1 / np.arange(1, len(self.vocab) + 1)
        self.cumulative = np.cumsum(weights / weights.sum())
        self.sentence_len = (6, 24) if code == "en" else (10, 40)
        self.doc_sentences = (15, 60) if code == "en" else (10, 45)

    def tokens(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cumulative, rng.random(count)), len(self.vocab) - 1)

    def sentence(self, rng: np.random.Generator) -> np.ndarray:
        return self.tokens(rng, int(rng.integers(*self.sentence_len)))

    def render(self, sentences: list[np.ndarray]) -> str:
        if self.code == "en":
            texts = [" ".join(self.vocab[t] for t in s).capitalize() + "." for s in sentences]
            return "\n\n".join(" ".join(texts[i:i + 5]) for i in range(0, len(texts), 5))
        texts = []
        for s in sentences:
            chars = [self.vocab[t] for t in s]
            clauses = ["".join(chars[i:i + 8]) for i in range(0, len(chars), 8)]
            texts.append("，".join(clauses) + "。")
        return "\n\n".join("".join(texts[i:i + 4]) for i in range(0, len(texts), 4))


def edited_copy(lang: Language, base: list[np.ndarray], target: float, n_grams: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    """A copy whose shingle Jaccard with ``base`` is near ``target``: sentence edits, then substitutions.

    Shingles kept by substituting a share p of tokens: x = (1 - p) ** n; Jaccard x / (2 - x).
    """
    sentences = [s.copy() for s in base]
    if rng.random() < 0.5:
        for _ in range(rng.integers(1, 3)):
            sentences.insert(int(rng.integers(0, len(sentences) + 1)), lang.sentence(rng))
    if rng.random() < 0.3 and len(sentences) > 2:
        del sentences[int(rng.integers(0, len(sentences)))]
    base_tokens = sum(len(s) for s in base)
    copy_tokens = sum(len(s) for s in sentences)
    sentence_share = min(base_tokens, copy_tokens) / max(base_tokens, copy_tokens)
    remaining = min(1.0, target / sentence_share)
    kept = 2 * remaining / (1 + remaining)
    rate = 1 - kept ** (1 / n_grams)
    for s in sentences:
        mask = rng.random(len(s)) < rate
        s[mask] = lang.tokens(rng, int(mask.sum()))
    return sentences


def write_corpus(folder: Path, megabytes: float, settings: MinhashSettings, seed: int,
                 shard_mb: float) -> dict[str, list[list[str]]]:
    """Write ``<lang>-<shard>.jsonl`` files (half the bytes per language, ``shard_mb`` at most per file);
    return the families (document ids) per language."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    families: dict[str, list[list[str]]] = {}
    for code in ("en", "zh"):
        lang = Language(code, rng)
        records, written, family_ids = [], 0, []
        while written < megabytes * 2**20 / 2:
            base = [lang.sentence(rng) for _ in range(rng.integers(*lang.doc_sentences))]
            family = [(f"{code}-{len(family_ids)}-base", base)]
            if rng.random() < 0.5:
                for copy in range(rng.integers(1, 4)):
                    target = LEVELS[rng.integers(len(LEVELS))]
                    family.append((f"{code}-{len(family_ids)}-copy{copy}",
                                   edited_copy(lang, base, target, settings.n_grams, rng)))
            family_ids.append([doc_id for doc_id, _ in family])
            for doc_id, sentences in family:
                line = json.dumps({"id": doc_id, "text": lang.render(sentences)}, ensure_ascii=False) + "\n"
                records.append(line)
                written += len(line.encode())
        order = rng.permutation(len(records))
        shards = int(np.ceil(written / (shard_mb * 2**20)))
        for shard, part in enumerate(np.array_split(order, shards)):
            with open(folder / f"{code}-{shard:03d}.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(records[i] for i in part)
        families[code] = family_ids
    return families


def read_jsonl(folder: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                docs[record["id"]] = record
    return docs


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def components(ids: list[str], edges: list[tuple[str, str]]) -> list[set[str]]:
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups = defaultdict(set)
    for i in ids:
        groups[find(i)].add(i)
    return list(groups.values())


def score(texts: dict[str, str], families: list[list[str]], removed: set[str], cluster_of: dict[str, int],
          settings: MinhashSettings, seed: int) -> dict:
    """Precision/recall of removals against exact-Jaccard components, and the per-band linking curve."""
    correct = expected = 0
    band_pairs = [[0, 0] for _ in BANDS[:-1]]
    for family in families:
        shingles = {doc_id: shingle_set(texts[doc_id], settings) for doc_id in family}
        edges = []
        for a, b in itertools.combinations(family, 2):
            similarity = jaccard(shingles[a], shingles[b])
            if similarity >= THRESHOLD:
                edges.append((a, b))
            if len(family) == 2:
                band = next(i for i in range(len(BANDS) - 1) if similarity < BANDS[i + 1])
                band_pairs[band][0] += 1
                band_pairs[band][1] += cluster_of[a] != -1 and cluster_of[a] == cluster_of[b]
        for component in components(family, edges):
            expected += len(component) - 1
            correct += min(len(component & removed), len(component) - 1)
    rng = random.Random(seed)
    bases = [family[0] for family in families]
    cross = [jaccard(shingle_set(texts[a], settings), shingle_set(texts[b], settings))
             for a, b in (rng.sample(bases, 2) for _ in range(min(2000, len(bases))))]
    return {
        "documents": len(texts), "removed": len(removed), "expected_removals": expected,
        "precision": round(correct / len(removed), 4) if removed else 1.0,
        "recall": round(correct / expected, 4) if expected else 1.0,
        "curve": {f"{BANDS[i]:.2f}-{min(BANDS[i + 1], 1.0):.2f}": {"pairs": n, "linked": round(linked / n, 3)}
                  for i, (n, linked) in enumerate(band_pairs) if n},
        "max_cross_family_jaccard": round(max(cross), 4),
    }


def run_child(work: Path, settings: MinhashSettings) -> None:
    """Subprocess entry: run the dedup (one task per input file, run one after another) and print its counts,
    wall time, peak RSS and the pair check's stats."""
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    phases = PhasePeaks()
    began = time.perf_counter()
    tasks = len(list((work / "input").glob("*.jsonl")))
    counts = run_minhash_dedup(work / "input", work / "kept", work / "dedup", settings, tasks=tasks,
                               exclusion_folder=work / "removed", cluster_ids=True, on_phase=phases.enter)
    seconds = time.perf_counter() - began
    phases.close()
    steps = {"verify": stage_stats(work / "dedup" / "logs" / "minhash_verify", MinhashVerifyPairs),
             "components": stage_stats(work / "dedup" / "logs" / "minhash_clusters", MinhashComponents)}
    print(json.dumps({"counts": counts, "seconds": seconds, "tasks": tasks, "peak_rss_mb": process_peak_rss_mb(),
                      "phase_peak_rss_mb": phases.peaks, "steps": steps}))


class PhasePeaks:
    """Peak RSS per phase: one of the runner's ``PeakMemory`` samplers (every 5 ms) per phase.

    The process's own peak (VmHWM) only gives the whole run's."""

    def __init__(self):
        self.peaks: dict[str, int] = {}
        self._current: tuple[str, PeakMemory] | None = None

    def enter(self, index: int, phase) -> None:
        self.close()
        self._current = (phase.name, PeakMemory(interval_s=0.005).__enter__())

    def close(self) -> None:
        if self._current:
            name, memory = self._current
            memory.__exit__(None, None, None)
            self.peaks[name] = round(memory.peak_bytes / 2**20)
            self._current = None


def bench_size(megabytes: float, settings: MinhashSettings, seed: int, shard_mb: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        families = write_corpus(work / "input", megabytes, settings, seed, shard_mb)
        input_mb = sum(p.stat().st_size for p in (work / "input").iterdir()) / 2**20
        child = subprocess.run([sys.executable, __file__, "--child", str(work), "--settings",
                                json.dumps(dataclasses.asdict(settings))], capture_output=True, text=True, check=False)
        if child.returncode:
            raise RuntimeError(child.stderr[-3000:])
        run = json.loads(child.stdout.strip().splitlines()[-1])
        kept, removed = read_jsonl(work / "kept"), read_jsonl(work / "removed")
        cluster_of = {i: d["metadata"].get("minhash_cluster_id", -1) for i, d in (kept | removed).items()}
        texts = {i: d["text"] for i, d in (kept | removed).items()}
        per_language = {code: score({i: t for i, t in texts.items() if i.startswith(code)}, families[code],
                                    {i for i in removed if i.startswith(code)}, cluster_of, settings, seed)
                        for code in families}
    return {"input_mb": round(input_mb, 1), "documents": run["counts"]["documents"], "tasks": run["tasks"],
            "dedup_seconds": round(run["seconds"], 1), "mb_per_s": round(input_mb / run["seconds"], 2),
            "peak_rss_mb": round(run["peak_rss_mb"]), "phase_peak_rss_mb": run["phase_peak_rss_mb"],
            "counts": run["counts"], "steps": run["steps"], "languages": per_language}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 100], help="Corpus sizes (both languages).")
    parser.add_argument("--num-buckets", type=int, default=MinhashSettings.num_buckets)
    parser.add_argument("--hashes-per-bucket", type=int, default=MinhashSettings.hashes_per_bucket)
    parser.add_argument("--n-grams", type=int, default=MinhashSettings.n_grams)
    parser.add_argument("--no-verify", action="store_true",
                        help="Plain datatrove: every bucket collision is a duplicate.")
    parser.add_argument("--verify-memory-mb", type=float, default=4,
                        help="The pair check's memory budget (the recipe's default is 1024; small here so that it "
                             "binds at 1 GB).")
    parser.add_argument("--shard-mb", type=float, default=64,
                        help="Largest input file; one signature / filter task per file (datatrove sorts a task's "
                             "signatures in memory).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        run_child(options.child, MinhashSettings(**json.loads(options.settings)))
        return 0
    settings = MinhashSettings(num_buckets=options.num_buckets, hashes_per_bucket=options.hashes_per_bucket,
                               n_grams=options.n_grams, jaccard_threshold=None if options.no_verify else THRESHOLD,
                               verify_memory_mb=options.verify_memory_mb)
    result = {"settings": dataclasses.asdict(settings) | {"lsh_threshold": round(settings.lsh_threshold, 3)},
              "ground_truth_threshold": THRESHOLD, "levels": LEVELS,
              "shard_mb": options.shard_mb,
              "sizes": [bench_size(mb, settings, options.seed, options.shard_mb) for mb in options.sizes_mb]}
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
