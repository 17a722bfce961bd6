"""The data funnel: documents, characters and tokens in and out of every step, and per source.

Built from what the run already recorded — datatrove's per-task stats and the kept / removed
files — so the counts are a by-product of running, and the stage can check they add up. Tokens
are counted once the tokenizer exists (after cleaning, for a scratch model), on the kept and the
removed files: exact per removal reason, per kept domain and per source.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path


def stat_total(value) -> int:
    """A counter's total: datatrove stores a plain number, or a summary dict once tasks are summed."""
    return int(value["total"] if isinstance(value, dict) else value)


def merged_stats(logging_dir: Path) -> list[dict]:
    """A phase's step stats summed over its tasks (datatrove's per-task ``stats/<rank>.json``), on any executor."""
    from datatrove.utils.stats import PipelineStats

    total = PipelineStats()
    for path in sorted((Path(logging_dir) / "stats").glob("*.json")):
        total = total + PipelineStats.from_json(json.loads(path.read_text(encoding="utf-8")))
    return json.loads(total.to_json()) if total.stats else []


# datatrove's dedup filters count ``dropped`` without a reason; finloom's exclusion writers name it.
DEDUP_STEPS = {"exact-deduplication stage 3": ("exact dedup", "exact_duplicate"),
               "MinHash stage 4": ("fuzzy dedup (MinHash)", "near_duplicate")}


def step_rows(stats: list[dict]) -> list[dict]:
    """One row per filtering step: documents in, kept, removed by reason, set aside (held-out text), characters kept."""
    rows = []
    for step in stats:
        values = step["stats"]
        if "total" not in values or "forwarded" not in values:
            continue
        # datatrove names start with emoji, which plot fonts lack: keep the words.
        name = re.sub(r"^\W+", "", step["name"].split(": ", 1)[-1]).strip()
        removed = {key.removeprefix("dropped_"): stat_total(value) for key, value in values.items()
                   if key.startswith("dropped_")}
        if name in DEDUP_STEPS:
            name, reason = DEDUP_STEPS[name]
            removed = {reason: stat_total(values["dropped"])} if values.get("dropped") else {}
        doc_len = values.get("doc_len", {})  # datatrove writes 0, not a summary, for a step that kept nothing
        rows.append({
            "step": name,
            "in": stat_total(values["total"]),
            "kept": stat_total(values["forwarded"]),
            "removed": removed,
            "set_aside": {key.removeprefix("out_"): stat_total(value) for key, value in values.items()
                          if key.startswith("out_")},
            "chars_kept": stat_total(doc_len) if not isinstance(doc_len, dict) or "total" in doc_len else None,
        })
    return rows


def _records(path: Path):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _count_tokens(path: Path, tokenizer, batch_size: int = 512) -> tuple[int, Counter]:
    """Tokens in a JSONL file of documents, in total and per ``metadata.source``."""
    total, by_source = 0, Counter()
    batch: list[dict] = []

    def flush() -> None:
        nonlocal total
        encoded = tokenizer([r.get("text", "") for r in batch], add_special_tokens=False, return_attention_mask=False,
                            verbose=False)["input_ids"]
        for record, ids in zip(batch, encoded):
            total += len(ids)
            by_source[record.get("metadata", {}).get("source", "?")] += len(ids)
        batch.clear()

    for record in _records(path):
        batch.append(record)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return total, by_source


def token_counts(clean_dir: Path, removed_dir: Path, tokenizer) -> dict:
    """Tokens kept per domain, removed per reason, and kept / removed per source."""
    kept, removed, by_source = {}, {}, {}
    for folder, out, side in ((clean_dir, kept, "kept"), (removed_dir, removed, "removed")):
        for path in sorted(Path(folder).glob("*.jsonl")):
            out[path.stem], sources = _count_tokens(path, tokenizer)
            for source, count in sources.items():
                by_source.setdefault(source, {"kept": 0, "removed": 0})[side] += count
    return {"kept": kept, "removed": removed, "by_source": dict(sorted(by_source.items()))}


def _sources_in(path: Path) -> Counter:
    counts: Counter = Counter()
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    counts[json.loads(line)["metadata"].get("source", "?")] += 1
    return counts


def source_rows(clean_dir: Path, removed_dir: Path) -> list[dict]:
    """Per source: documents kept and removed (by reason)."""
    kept: Counter = Counter()
    for path in sorted(clean_dir.glob("*.jsonl")):
        kept.update(_sources_in(path))
    removed: dict[str, Counter] = {}
    for path in sorted(removed_dir.glob("*.jsonl")):
        for source, count in _sources_in(path).items():
            removed.setdefault(source, Counter())[path.stem] = count
    sources = sorted(set(kept) | set(removed))
    return [{"source": s, "kept": kept.get(s, 0), "removed": dict(removed.get(s, {}))} for s in sources]


def check_funnel(funnel: dict) -> None:
    """Every input record was read or rejected, every document read was kept or removed: else nothing is trusted.

    A mismatch means a step dropped or duplicated documents without saying so; the stage stops rather than hand
    on a corpus whose counts cannot be explained."""
    kept, removed = sum(funnel["kept"].values()), sum(funnel["removed"].values())
    if funnel["input_records"] != funnel["read"] + funnel["rejected"] or funnel["read"] != kept + removed:
        raise RuntimeError(f"data funnel does not add up: {funnel['input_records']} input records, {funnel['read']} "
                           f"read + {funnel['rejected']} rejected; {kept} kept + {removed} removed: {funnel}")
