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

from finloom.data.filters import build_quality_filters
from finloom.data.funnel import source_rows, step_rows
from finloom.data.documents import input_records
from finloom.data.langid import LanguageTagger
from finloom.data.pii import PIIDesensitizer
from finloom.data.steps import ExactDedup, HeldoutSplit, MinLength, Normalize, SourceReader
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


def _language_steps(section: DataSection, removed_writer) -> list:
    if not section.language.enabled:
        return []
    return [LanguageTagger(section.language.keep, section.language.min_score, exclusion_writer=removed_writer)]


def _quality_steps(section: DataSection, removed_writer) -> list:
    settings = section.quality
    if not settings.enabled:
        return []
    config = {"exempt_tables": settings.exempt_tables, "languages": settings.languages}
    if not settings.spam:
        config["spam"] = False
    try:
        return build_quality_filters(config, exclusion_writer=removed_writer)
    except ValueError as error:
        raise BadInput(f"data.{error}") from None


def _pii_steps(section: DataSection) -> list:
    if not section.pii.enabled:
        return []
    try:
        return [PIIDesensitizer(section.pii.types, section.pii.placeholder)]
    except ValueError as error:
        raise BadInput(f"data.pii: {error}") from None


def run(section: DataSection, ctx: RunContext) -> StageResult:
    out = ctx.stage_dir
    removed_writer = JsonlWriter(str(out / "removed"), output_filename="${filter_reason}.jsonl", compression=None)
    split_domains = [d for d in ("general", "finance") if not getattr(section, f"{d}_heldout")]
    sources = _sources(section, ctx)
    pipeline = [
        SourceReader(sources, str(out / "rejects.jsonl")),
        Normalize(section.normalize),
        *_language_steps(section, removed_writer),
        MinLength(section.min_chars, exclusion_writer=removed_writer),
        *_quality_steps(section, removed_writer),
        ExactDedup(exclusion_writer=removed_writer),
        *_pii_steps(section),
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
    funnel = {"input_records": sum(input_records(Path(s["path"]), s["format"]) for s in sources), "read": read, "rejected": rejected,
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


def _char_count(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(len(json.loads(line)["text"]) for line in handle)
