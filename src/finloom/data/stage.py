"""The ``data`` stage: the quality pipeline on datatrove, then the tokenizer and the mixed token shards.

1. Classifiers named by labelled files are trained first (seconds on CPU), so the run records
   exactly what scored its documents.
2. The phases of ``finloom.data.pipeline`` run on the configured executor (local, Ray, Slurm).
3. Per-task outputs are merged into one file per kept domain (``clean/<domain>.jsonl``), one per
   removal reason (``removed/<reason>.jsonl``) and ``rejects.jsonl``; the funnel is checked:
   every input unit is read or rejected, every read document is kept or removed with a reason.
4. The tokenizer: the start model's, or for ``model.scratch`` a byte-level BPE trained here on the
   cleaned corpus (``tokenizer/``), which the ``base`` stage builds its model around.
5. Each mix of ``data.mix.mixes`` is tokenised, packed and written as token shards
   (``shards/<mix>/``) with its realised shares; base and pretrain stream them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from finloom.data.classifier import train_classifier
from finloom.data.documents import input_records
from finloom.data.executors import Phase, run_phases
from finloom.data.funnel import check_funnel, merged_stats, source_rows, stat_total, step_rows, token_counts
from finloom.data.heldout import remove_heldout_overlap
from finloom.data.mixing import write_token_shards
from finloom.data.pipeline import Classifiers, PipelinePaths, build_phases
from finloom.errors import BadInput
from finloom.files import atomic_write_text, iter_texts, read_records
from finloom.interrupts import raise_if_interrupted
from finloom.progress import progress_bar
from finloom.recipe import DataSection, decontam_sources
from finloom.stages import RunContext, StageResult

DOMAINS = ("general", "finance", "general_heldout", "finance_heldout")


def _sources(section: DataSection, ctx: RunContext) -> list[dict]:
    sources = []
    for domain in ("general_heldout", "finance_heldout", "general", "finance"):
        for source in getattr(section, domain):
            sources.append({"path": str(ctx.recipe.resolve(source.path)), "format": source.format,
                            "text_field": source.text_field, "domain": domain, "tag": source.tag,
                            "lang": source.lang})
    return sources


def _classifiers(section: DataSection, ctx: RunContext) -> tuple[Classifiers, dict]:
    """Model directories for the scoring steps, training those given as labelled files; and their metrics."""
    recipe = ctx.recipe
    classifiers, metrics = Classifiers(), {}
    trained = [("quality", section.quality_classifier, section.quality_classifier.label_field),
               ("domain", section.domain_classifier, section.domain_classifier.label_field),
               ("subdomain", section.domain_classifier, section.domain_classifier.subdomain_field)]
    for name, settings, label_field in trained:
        if not settings.enabled or label_field is None:
            continue
        if settings.labels is None:
            model = settings.subdomain_model if name == "subdomain" else settings.model
            if model is not None:
                setattr(classifiers, name, _existing_classifier(recipe.resolve(model), name))
            continue
        rejects: list[dict] = []
        records = read_records(recipe.resolve(settings.labels.path), (settings.labels.text_field,), rejects)
        out = ctx.stage_dir / "classifiers" / name
        result = train_classifier(records, label_field, out, text_field=settings.labels.text_field, seed=recipe.seed)
        metrics[name] = {key: result[key] for key in ("labels", "heldout", "n_train", "n_skipped") if key in result}
        setattr(classifiers, name, out)
    return classifiers, metrics


def _existing_classifier(path: Path, name: str) -> Path:
    field = "subdomain_model" if name == "subdomain" else "model"
    section = "domain_classifier" if name == "subdomain" else f"{name}_classifier"
    if not path.is_dir():
        raise BadInput(f"data.{section}.{field}: no classifier directory at {path}")
    return path


def _eval_files(ctx: RunContext) -> list[Path]:
    return sorted({ctx.recipe.resolve(source.path) for _, source in decontam_sources(ctx.recipe)})


def _merge(folder: Path, target: Path) -> None:
    """Concatenate a folder of per-task JSONL files (in task order) into one file, then drop the folder."""
    if not folder.is_dir():
        return
    tmp = target.with_name(f".{target.name}.merging")
    with open(tmp, "wb") as out:
        for part in sorted(folder.glob("*.jsonl")):
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out)
    tmp.replace(target)
    shutil.rmtree(folder)


def _merge_outputs(paths: PipelinePaths) -> None:
    for root in (paths.clean, paths.removed):
        if root.exists():
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                _merge(folder, root / f"{folder.name}.jsonl")
    _merge(paths.rejects, paths.stage_dir / "rejects.jsonl")
    if not (paths.stage_dir / "rejects.jsonl").exists():
        atomic_write_text(paths.stage_dir / "rejects.jsonl", "")


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def _tokenizer(ctx: RunContext, paths: PipelinePaths):
    """The start model's tokenizer, or a scratch BPE trained on the cleaned corpus (saved in ``tokenizer/``)."""
    from finloom.llm.loading import load_tokenizer
    from finloom.llm.scratch import train_tokenizer

    recipe = ctx.recipe
    if recipe.model.scratch is None:
        return load_tokenizer(recipe.start_model(), recipe.model), None
    out = ctx.stage_dir / "tokenizer"
    if (out / "tokenizer.json").exists():
        return load_tokenizer(out), out
    spec = recipe.model.scratch

    def sample():
        budget = spec.tokenizer_max_chars
        for domain in ("general", "finance"):
            for text in iter_texts(paths.clean / f"{domain}.jsonl"):
                if budget <= 0:
                    return
                yield text[:budget]
                budget -= len(text)

    tokenizer = train_tokenizer(sample(), spec.vocab_size)
    tmp = out.with_name(".tokenizer.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    tmp.replace(out)
    return tokenizer, out


def _write_mixes(section: DataSection, ctx: RunContext, paths: PipelinePaths, tokenizer) -> dict:
    mixes = {}
    for name, mix in section.mix.mixes.items():
        index = write_token_shards(
            {domain: iter_texts(paths.clean / f"{domain}.jsonl") for domain in mix.shares},
            tokenizer, ctx.stage_dir / "shards" / name, mix.shares, section.mix.seq_len,
            shard_tokens=section.mix.shard_tokens, seed=ctx.recipe.seed, total_tokens=mix.total_tokens,
        )
        mixes[name] = {"tokens": index["tokens"], "blocks": index["blocks"],
                       "shares": {d: v["share"] for d, v in index["mix"]["domains"].items()},
                       "epochs": {d: v["epochs"] for d, v in index["mix"]["domains"].items()},
                       "max_share_error": index["mix"]["max_share_error"]}
    return mixes


def run(section: DataSection, ctx: RunContext) -> StageResult:
    paths = PipelinePaths(ctx.stage_dir)
    sources = _sources(section, ctx)
    classifiers, classifier_metrics = _classifiers(section, ctx)
    phases = build_phases(section, sources, paths, classifiers, ctx.recipe.teacher, _eval_files(ctx))
    paths.logs.mkdir(parents=True, exist_ok=True)
    _run_with_progress(phases, section, paths)
    _merge_outputs(paths)
    overlap = None
    if section.decontam.enabled and section.decontam.heldout_max_overlap is not None:
        settings = section.decontam
        overlap = remove_heldout_overlap(paths.clean, paths.removed, settings.word_ngram, settings.char_ngram,
                                         settings.heldout_max_overlap)

    kept = {domain: _count_lines(paths.clean / f"{domain}.jsonl") for domain in DOMAINS}
    removed = {p.stem: _count_lines(p) for p in sorted(paths.removed.glob("*.jsonl"))}
    stats = [step for phase in phases for step in merged_stats(paths.logs / phase.name)]
    reader = next(step["stats"] for step in stats if step["name"].endswith("finloom sources"))
    read, rejected = stat_total(reader.get("read", 0)), _count_lines(paths.stage_dir / "rejects.jsonl")
    funnel = {"input_records": sum(input_records(Path(s["path"]), s["format"]) for s in sources), "read": read,
              "rejected": rejected, "removed": removed, "kept": kept}
    check_funnel(funnel)
    for domain in ("general", "finance"):
        if kept[domain] == 0:
            raise BadInput(f"data.{domain}: no documents left after cleaning (funnel: {funnel})")

    outputs = {domain: ctx.relative(paths.clean / f"{domain}.jsonl") for domain in DOMAINS if kept[domain]}
    outputs["rejects"] = ctx.relative(paths.stage_dir / "rejects.jsonl")
    metrics = {"funnel": funnel, "steps": step_rows(stats), "sources": source_rows(paths.clean, paths.removed),
               "phases": [phase.name for phase in phases], "classifiers": classifier_metrics}
    if overlap is not None:
        metrics["heldout_overlap"] = overlap
    if section.mix.enabled:
        tokenizer, tokenizer_dir = _tokenizer(ctx, paths)
        if tokenizer_dir is not None:
            outputs["tokenizer"] = ctx.relative(tokenizer_dir)
        metrics["mixes"] = _write_mixes(section, ctx, paths, tokenizer)
        outputs.update({f"shards_{name}": ctx.relative(ctx.stage_dir / "shards" / name) for name in section.mix.mixes})
        metrics["tokens"] = token_counts(paths.clean, paths.removed, tokenizer)
    shutil.rmtree(paths.work, ignore_errors=True)
    return StageResult(outputs=outputs, metrics=metrics)


def _run_with_progress(phases: list[Phase], section: DataSection, paths: PipelinePaths) -> None:
    """datatrove logs every task at INFO: keep that in the stage's log; show one bar over the phases."""
    import contextlib

    with progress_bar("data") as bar, open(paths.logs / "console.log", "a", encoding="utf-8") as log:
        task = bar.add_task("data", total=len(phases), status="")

        def on_phase(index: int, phase: Phase) -> None:
            raise_if_interrupted()
            bar.update(task, completed=index, status=f"{phase.name} ({phase.tasks} task{'s' * (phase.tasks > 1)})")

        with contextlib.redirect_stderr(log):
            run_phases(phases, section.executor, paths.logs, on_phase)
        bar.update(task, completed=len(phases), status="done")
