"""Do two runs record the same results? Compares every stage's manifest metrics, leaving out timings.

Used to check that a refactoring changed no behaviour: run the same recipe with the old and the new
code (same seed, same machine kind) into two run directories, then

    python benchmarks/same_metrics.py RUN_OLD RUN_NEW

prints, per stage present in both, "identical" or each differing metric, and exits 1 if any differ.
Wall times, step times and memory differ between any two runs and are not compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TIMING_KEYS = {"train_seconds", "step_time_s", "wall_time_s", "peak_rss_mb"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def differences(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += differences(old.get(key, "<missing>"), new.get(key, "<missing>"), f"{path}.{key}" if path else key)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    differing = 0
    for manifest in sorted(args.old.glob("*/manifest.json")):
        other = args.new / manifest.parent.name / "manifest.json"
        if not other.exists():
            print(f"{manifest.parent.name}: only in {args.old}")
            continue
        found = differences(without_timings(json.loads(manifest.read_text())["metrics"]),
                            without_timings(json.loads(other.read_text())["metrics"]))
        differing += bool(found)
        print(f"{manifest.parent.name}: " + ("identical" if not found else f"{len(found)} differ"))
        for line in found[:20]:
            print(f"  {line}")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
