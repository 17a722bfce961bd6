"""The data funnel: documents and characters in and out of every step, and per source.

Built from what the run already recorded — datatrove's per-step stats and the kept / removed
files — so the counts are a by-product of running, and the stage can check they add up.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path


def step_rows(stats: list[dict]) -> list[dict]:
    """One row per filtering step: documents in, kept, removed by reason, characters kept."""
    rows = []
    for step in stats:
        values = step["stats"]
        if "total" not in values or "forwarded" not in values:
            continue
        doc_len = values.get("doc_len", {})
        rows.append({
            # datatrove names start with emoji, which plot fonts lack: keep the words.
            "step": re.sub(r"^\W+", "", step["name"].split(": ", 1)[-1]).strip(),
            "in": int(values["total"]),
            "kept": int(values["forwarded"]),
            "removed": {key.removeprefix("dropped_"): int(value) for key, value in values.items()
                        if key.startswith("dropped_")},
            "chars_kept": int(doc_len.get("total", 0)) if isinstance(doc_len, dict) else 0,
        })
    return rows


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
