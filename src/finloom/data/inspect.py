"""``finloom data inspect``: look at what the data stage kept and removed, per reason.

A person checks a filter by reading what it removed; this prints a few documents from each
removed-reason file and each kept domain, and the reject reasons of malformed input.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from finloom.errors import BadInput


def _first(path: Path, count: int) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) == count:
                break
    return rows


def samples(run_dir: Path, count: int = 3, reason: str | None = None) -> dict[str, list[dict]]:
    """Group name ("removed: REASON", "kept: DOMAIN", "rejected") -> up to ``count`` records."""
    data_dir = Path(run_dir) / "data"
    if not (data_dir / "manifest.json").exists():
        raise BadInput(f"{run_dir}: no data stage here; run `finloom run RECIPE --only data` first")
    groups: dict[str, list[dict]] = {}
    for path in sorted((data_dir / "removed").glob("*.jsonl")):
        if reason in (None, path.stem):
            groups[f"removed: {path.stem}"] = _first(path, count)
    if reason is None:
        for path in sorted((data_dir / "clean").glob("*.jsonl")):
            groups[f"kept: {path.stem}"] = _first(path, count)
        rejects = data_dir / "rejects.jsonl"
        if rejects.exists() and rejects.stat().st_size:
            reasons = Counter(r["reason"] for r in map(json.loads, rejects.read_text(encoding="utf-8").splitlines()))
            groups["rejected"] = [{"reason": r, "count": n} for r, n in reasons.most_common(count)]
    if reason is not None and not groups:
        known = sorted(p.stem for p in (data_dir / "removed").glob("*.jsonl"))
        raise BadInput(f"--reason {reason}: no documents removed for it (reasons in this run: {', '.join(known) or 'none'})")
    return groups
