"""finloom's `data` stage against a plain datatrove pipeline doing the comparable work, in one run.

The baseline is datatrove's own JsonlReader -> JsonlWriter on the same local executor; finloom's
stage adds tolerant reading with a rejects file, NFKC normalisation, a length filter, exact dedup,
the held-out split and the funnel check. The starter corpora are replicated (with a copy number
appended to each document so dedup keeps them) to reach the requested size.

    python benchmarks/data_stage.py [--mb 50]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from finloom.logs import quiet_libraries
from finloom.recipe import STARTER_DATA_DIR, load_recipe
from finloom.runner import PeakMemory, Runner


def scaled_corpus(source: Path, target: Path, megabytes: float) -> int:
    lines = source.read_text(encoding="utf-8").splitlines()
    written, copy, count = 0, 0, 0
    with open(target, "w", encoding="utf-8") as handle:
        while written < megabytes * 2**20:
            for line in lines:
                record = json.loads(line)
                record["id"] = f"{record['id']}-{copy}"
                record["text"] += f"\n(copy {copy})"
                encoded = json.dumps(record, ensure_ascii=False) + "\n"
                handle.write(encoded)
                written += len(encoded.encode())
                count += 1
            copy += 1
    return count


def plain_datatrove(inputs: Path, out: Path) -> float:
    began = time.perf_counter()
    pipeline = [JsonlReader(str(inputs), glob_pattern="*.jsonl"),
                JsonlWriter(str(out / "plain"), output_filename="${rank}.jsonl", compression=None)]
    with contextlib.redirect_stderr(io.StringIO()):
        LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(out / "plain_logs")).run()
    return time.perf_counter() - began


def finloom_data(inputs: Path, out: Path) -> tuple[float, dict]:
    recipe = {"name": "bench", "model": {"hf": "unused"},
              "data": {"general": [{"path": str(inputs / "general.jsonl")}], "finance": [{"path": str(inputs / "finance.jsonl")}]},
              "sft": {"enabled": False}, "reward": {"enabled": False}, "align": {"enabled": False}, "eval": {"enabled": False}, "report": {"enabled": False},
              "pretrain": {"enabled": False}}
    path = out / "bench.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    began = time.perf_counter()
    Runner(load_recipe(path), out / "run").run(only="data")
    elapsed = time.perf_counter() - began
    manifest = json.loads((out / "run" / "data" / "manifest.json").read_text())
    return elapsed, manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50, help="Size of each of the two corpora.")
    options = parser.parse_args()
    quiet_libraries()
    import torch  # noqa: F401  (the runner seeds torch; import it before timing so neither side pays it)
    import transformers  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = work / "inputs"
        inputs.mkdir()
        docs = sum(scaled_corpus(STARTER_DATA_DIR / f"{d}_corpus.jsonl", inputs / f"{d}.jsonl", options.mb)
                   for d in ("general", "finance"))
        size_mb = sum(os.path.getsize(p) for p in inputs.iterdir()) / 2**20
        with PeakMemory() as plain_memory:
            plain_s = plain_datatrove(inputs, work)
        finloom_s, manifest = finloom_data(inputs, work)
    result = {
        "documents": docs, "input_mb": round(size_mb, 1),
        "datatrove_reader_writer_s": round(plain_s, 2), "finloom_data_stage_s": round(finloom_s, 2),
        "ratio_finloom_over_datatrove": round(finloom_s / plain_s, 3),
        "datatrove_mb_per_s": round(size_mb / plain_s, 2), "finloom_mb_per_s": round(size_mb / finloom_s, 2),
        "finloom_docs_per_s": round(docs / finloom_s),
        "datatrove_peak_rss_mb": round(plain_memory.peak_bytes / 2**20), "finloom_peak_rss_mb": manifest["peak_rss_mb"],
        "finloom_funnel": manifest["metrics"]["funnel"],
        "cores_used": 1,
        "process_rss_mb_after": round(psutil.Process().memory_info().rss / 2**20),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
