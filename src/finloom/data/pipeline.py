"""The data pipeline as datatrove phases, built from the recipe's ``data`` section.

    clean       read -> ftfy -> normalise -> language id -> min length -> quality + spam rules
                -> PII -> held-out text out (to clean/) -> rest to work/cleaned
    exact_*     datatrove's exact dedup (signatures -> find -> filter)
    minhash_*   MinHash LSH (signatures -> buckets -> verify -> clusters -> filter)
    boilerplate_*  optional: lines found in many documents (signatures -> counts -> filter)
    the last filter phase continues: quality classifier -> LLM judge -> domain classifier
                -> decontamination -> held-out split -> clean/<domain>/<rank>.jsonl

Every step that removes documents writes them to ``removed/<reason>/<rank>.jsonl``; malformed
input goes to ``rejects/<rank>.jsonl``. A step switched off in the recipe is simply absent, and
with both dedups off the whole pipeline is one phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datatrove.pipeline.formatters import FTFYFormatter
from datatrove.pipeline.writers import JsonlWriter

from finloom.data.boilerplate import BoilerplateSettings, boilerplate_phases
from finloom.data.classifier import DomainScorer, QualityScorer
from finloom.data.decontam import Decontaminate
from finloom.data.dedup import MinhashSettings, exact_dedup_phases, minhash_phases
from finloom.data.executors import Phase
from finloom.data.filters import build_quality_filters
from finloom.data.judge import LLMJudgeScorer
from finloom.data.langid import LanguageTagger
from finloom.data.pii import PIIDesensitizer
from finloom.data.steps import HeldoutRouter, HeldoutSplit, MinLength, Normalize, RankFileReader, SourceReader
from finloom.errors import BadInput
from finloom.recipe import ClientSection, DataSection

REMOVED_FILENAME = "${filter_reason}/${rank}.jsonl"
CLEAN_FILENAME = "${domain}/${rank}.jsonl"


@dataclass
class PipelinePaths:
    """Where a data stage run keeps its files (all under the stage directory)."""

    stage_dir: Path

    @property
    def clean(self) -> Path:
        return self.stage_dir / "clean"

    @property
    def removed(self) -> Path:
        return self.stage_dir / "removed"

    @property
    def rejects(self) -> Path:
        return self.stage_dir / "rejects"

    @property
    def logs(self) -> Path:
        return self.stage_dir / "logs"

    @property
    def work(self) -> Path:
        return self.stage_dir / "work"


@dataclass
class Classifiers:
    """Model directories the scoring steps load (None: that classifier is off)."""

    quality: Path | None = None
    domain: Path | None = None
    subdomain: Path | None = None


def _writer(folder: Path, filename: str) -> JsonlWriter:
    return JsonlWriter(str(folder), output_filename=filename, compression=None)


def clean_steps(section: DataSection, sources: list[dict], paths: PipelinePaths) -> list:
    """Reading through PII: steps that look at one document at a time."""

    def removed():
        return _writer(paths.removed, REMOVED_FILENAME)

    steps: list = [SourceReader(sources, str(paths.rejects))]
    if section.normalize.ftfy:
        steps.append(FTFYFormatter())
    steps.append(Normalize(section.normalize.unicode, section.normalize.traditional_to_simplified))
    if section.language.enabled:
        steps.append(LanguageTagger(section.language.keep, section.language.min_score, exclusion_writer=removed()))
    steps.append(MinLength(section.min_chars, exclusion_writer=removed()))
    if section.quality.enabled:
        config = {"exempt_tables": section.quality.exempt_tables, "languages": section.quality.languages}
        if not section.quality.spam:
            config["spam"] = False
        try:
            steps += build_quality_filters(config, exclusion_writer=removed)
        except ValueError as error:
            raise BadInput(f"data.{error}") from None
    if section.pii.enabled:
        try:
            steps.append(PIIDesensitizer(section.pii.types, section.pii.placeholder, section.pii.require_label))
        except ValueError as error:
            raise BadInput(f"data.pii: {error}") from None
    steps.append(HeldoutRouter(_writer(paths.clean, CLEAN_FILENAME)))
    return steps


def scoring_steps(section: DataSection, classifiers: Classifiers, teacher: ClientSection | None,
                  eval_files: list[Path], paths: PipelinePaths) -> list:
    """After dedup: the costlier per-document models, decontamination, the held-out split, the writer."""

    def removed():
        return _writer(paths.removed, REMOVED_FILENAME)

    steps: list = []
    if classifiers.quality:
        settings = section.quality_classifier
        steps.append(QualityScorer(classifiers.quality, settings.drop_below, settings.good_label,
                                   exclusion_writer=removed()))
    if section.judge.enabled:
        judge = section.judge
        steps.append(LLMJudgeScorer(teacher, judge.dimensions, judge.min_score, judge.max_chars, judge.retries,
                                    judge.unparsed, judge.max_tokens, batch_size=max(teacher.concurrency, 1) * 4,
                                    exclusion_writer=removed()))
    if classifiers.domain:
        steps.append(DomainScorer(classifiers.domain, classifiers.subdomain,
                                  finance_min_prob=section.domain_classifier.finance_min_prob,
                                  exclusion_writer=removed()))
    if section.decontam.enabled and eval_files:
        settings = section.decontam
        steps.append(Decontaminate(eval_files, settings.word_ngram, settings.char_ngram, settings.include_options,
                                   settings.action, exclusion_writer=removed()))
    split = [d for d in ("general", "finance") if not getattr(section, f"{d}_heldout")]
    return steps + [HeldoutSplit(split), _writer(paths.clean, CLEAN_FILENAME)]


def build_phases(section: DataSection, sources: list[dict], paths: PipelinePaths, classifiers: Classifiers,
                 teacher: ClientSection | None, eval_files: list[Path]) -> list[Phase]:
    """Every phase of the data stage, in launch order."""
    tasks = section.executor.tasks
    tail = scoring_steps(section, classifiers, teacher, eval_files, paths)
    dedups = []
    if section.dedup.exact:
        dedups.append("exact")
    if section.dedup.fuzzy.enabled:
        dedups.append("fuzzy")
    if section.dedup.lines.enabled:
        dedups.append("lines")
    if not dedups:
        return [Phase("clean", clean_steps(section, sources, paths) + tail, tasks)]

    cleaned = paths.work / "cleaned"
    phases = [Phase("clean", clean_steps(section, sources, paths) + [_writer(cleaned, "${rank}.jsonl")], tasks)]
    source_folder = cleaned
    for position, dedup in enumerate(dedups):
        last = position == len(dedups) - 1
        output = paths.work / f"after_{dedup}"
        then = tail if last else [_writer(output, "${rank}.jsonl")]
        folder = source_folder

        def reader(folder=folder) -> RankFileReader:
            return RankFileReader(str(folder))

        if dedup == "exact":
            phases += exact_dedup_phases(reader, paths.work, tasks, then, paths.removed, REMOVED_FILENAME)
        elif dedup == "lines":
            lines = section.dedup.lines
            settings = BoilerplateSettings(lines.min_documents, lines.min_line_chars, section.min_chars, lines.buckets)
            phases += boilerplate_phases(reader, paths.work, tasks, then, settings,
                                         _writer(paths.removed, REMOVED_FILENAME))
        else:
            fuzzy = section.dedup.fuzzy
            settings = MinhashSettings(num_buckets=fuzzy.num_buckets, hashes_per_bucket=fuzzy.hashes_per_bucket,
                                       n_grams=fuzzy.n_grams, seed=fuzzy.seed, shingle=fuzzy.shingle,
                                       jaccard_threshold=fuzzy.threshold, verify_memory_mb=fuzzy.verify_memory_mb)
            phases += minhash_phases(reader, paths.work, tasks, then, settings, paths.removed, REMOVED_FILENAME)
        source_folder = output
    return phases
