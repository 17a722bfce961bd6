"""The ``data`` stage: read -> normalise -> min length -> exact dedup -> split -> write, on datatrove.

Outputs one JSONL file per domain (``general``, ``finance`` and their ``_heldout`` text for
perplexity), every removed document with its reason under ``removed/``, malformed input records
in ``rejects.jsonl``, and a funnel whose counts add up: read = kept + removed, and every input
line is either read or rejected.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.writers import JsonlWriter

from finloom.data.funnel import source_rows, step_rows
from finloom.data.steps import ExactDedup, HeldoutSplit, MinLength, Normalize, SourceReader, source_format
from finloom.errors import BadInput
from finloom.recipe import DataSection
from finloom.runner import RunContext, StageResult

DOMAINS = ("general", "finance", "general_heldout", "finance_heldout")


def _sources(section: DataSection, ctx: RunContext) -> list[dict]:
    """Held-out sources first, so a training copy of a held-out document is the one deduplicated away."""
    sources = []
    for domain in ("general_heldout", "finance_heldout", "general", "finance"):
        for source in getattr(section, domain):
            sources.append(
                {"path": str(ctx.recipe.resolve(source.path)), "format": source.format,
                 "text_field": source.text_field, "domain": domain}
            )
    return sources


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def run(section: DataSection, ctx: RunContext) -> StageResult:
    out = ctx.stage_dir
    removed_writer = JsonlWriter(str(out / "removed"), output_filename="${filter_reason}.jsonl", compression=None)
    split_domains = [d for d in ("general", "finance") if not getattr(section, f"{d}_heldout")]
    sources = _sources(section, ctx)
    pipeline = [
        SourceReader(sources, str(out / "rejects.jsonl")),
        Normalize(section.normalize),
        MinLength(section.min_chars, exclusion_writer=removed_writer),
        ExactDedup(exclusion_writer=removed_writer),
        HeldoutSplit(split_domains),
        JsonlWriter(str(out / "clean"), output_filename="${domain}.jsonl", compression=None),
    ]
    executor = LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(out / "logs"))
    # datatrove logs every task to stderr at INFO; keep that in the stage's log, not on the console.
    (out / "logs").mkdir(parents=True, exist_ok=True)
    with open(out / "logs" / "console.log", "a", encoding="utf-8") as log, contextlib.redirect_stderr(log):
        executor.run()

    kept = {domain: _count_lines(out / "clean" / f"{domain}.jsonl") for domain in DOMAINS}
    removed = {p.stem: _count_lines(p) for p in sorted((out / "removed").glob("*.jsonl"))}
    rejected = _count_lines(out / "rejects.jsonl")
    stats = json.loads((out / "logs" / "stats.json").read_text())
    reader_stats = stats[0]["stats"]
    read = int(reader_stats.get("read", 0))
    funnel = {"input_records": sum(_input_records(s) for s in sources), "read": read, "rejected": rejected,
              "removed": removed, "kept": kept}
    if funnel["input_records"] != read + rejected or read != sum(kept.values()) + sum(removed.values()):
        raise RuntimeError(f"data funnel does not add up: {funnel}")
    for domain in ("general", "finance"):
        if kept[domain] == 0:
            raise BadInput(f"data.{domain}: no documents left after cleaning (funnel: {funnel})")
    outputs = {domain: ctx.relative(out / "clean" / f"{domain}.jsonl") for domain in DOMAINS if kept[domain]}
    outputs["rejects"] = ctx.relative(out / "rejects.jsonl")
    chars = {domain: _char_count(out / "clean" / f"{domain}.jsonl") for domain in DOMAINS if kept[domain]}
    metrics = {"funnel": funnel, "chars": chars, "steps": step_rows(stats),
               "sources": source_rows(out / "clean", out / "removed")}
    return StageResult(outputs=outputs, metrics=metrics)


def _input_records(source: dict) -> int:
    """Records in a source as its format defines them: one per non-blank line, row or text file."""
    path = Path(source["path"])
    fmt = source_format(source)
    if fmt == "text":
        return 1
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return _count_lines(path)


def _char_count(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(len(json.loads(line)["text"]) for line in handle)
