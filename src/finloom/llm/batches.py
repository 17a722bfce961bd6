"""Work on prompts in batches that survive an interruption: each finished batch is appended to a cache
file (one JSON line per prompt, flushed to disk) and a resumed stage reads it and asks only for the rest,
so no prompt is judged twice. A progress bar counts the prompts, the cached ones included."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from finloom.progress import progress_bar


def read_cache(path: Path) -> dict[str, object]:
    """id -> result of every complete line (a line cut short by a kill is ignored and redone)."""
    results = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            results[entry["id"]] = entry["result"]
    return results


def run_batches(label: str, ids: list[str], work: Callable[[list[str]], list], cache: Path, batch_size: int) -> tuple[dict, int]:
    """``work(batch_ids) -> results`` over every id not yet in ``cache``; returns (id -> result for all ids, the
    number of ids worked on now)."""
    results = read_cache(cache)
    todo = [i for i in ids if i not in results]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(label) as bar, open(cache, "a", encoding="utf-8") as out:
        task = bar.add_task(label, total=len(ids), completed=len(ids) - len(todo), status="")
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for item, result in zip(batch, work(batch)):
                results[item] = result
                out.write(json.dumps({"id": item, "result": result}, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.advance(task, len(batch))
    return {i: results[i] for i in ids}, len(todo)
