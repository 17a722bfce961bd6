"""The data stage's settings: sources, normalisation, filters, PII, dedup, classifiers, judge, decontamination, mixes, executors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import Section, Source, StageSection


class NormalizeSettings(Section):
    """Text normalisation applied to every document before any filter sees it."""

    unicode: Literal["nfkc", "nfc", "none"] = Field(
        "nfkc", description="NFKC folds full-width letters and digits to half-width (Ａ１ -> A1)."
    )
    ftfy: bool = Field(True, description="Repair mojibake and broken encodings (datatrove's FTFY step).")
    traditional_to_simplified: bool = Field(False, description="Convert Traditional Chinese to Simplified (OpenCC t2s).")


class LanguageSettings(Section):
    """Offline language id (py3langid, model in the wheel); tags ``lang`` and keeps listed languages."""

    enabled: bool = True
    keep: list[str] | None = Field(["en", "zh"], description="Languages kept; null tags without filtering.")
    min_score: float = Field(0.5, ge=0, le=1, description="Documents below this confidence are removed.")


class QualitySettings(Section):
    """Heuristic quality filters (Gopher, C4, FineWeb; character-level for Chinese) and the spam filter."""

    enabled: bool = True
    exempt_tables: bool = Field(True, description="Judge prose only: numeric table rows of filings never drop a document.")
    spam: bool = Field(True, description="Ads / spam / keyword-stuffing word lists (zh + en).")
    languages: dict[str, dict] = Field(
        default_factory=dict,
        description="Per-language rule overrides merged onto the defaults, e.g. {zh: {gopher_quality: {min_doc_words: 50}}}; "
                    "false turns a rule off.",
    )


PII_TYPE_NAMES = ("CN_ID", "IBAN", "BANK_CARD", "US_SSN", "SWIFT_BIC", "IP", "EMAIL", "PHONE")


class PIISettings(Section):
    """Desensitisation: identifiers (checksum-validated where they have one) become typed placeholders."""

    enabled: bool = True
    types: list[Literal[PII_TYPE_NAMES]] | None = Field(None, description="Default: all types.")  # type: ignore[valid-type]
    placeholder: str = Field("<{type}>", description="Replacement; {type} is the identifier type.")
    require_label: bool = Field(
        False, description="Flag cards, resident IDs, phones and SSNs only where the text labels them ('card number', "
                           "'身份证号', 'call', 'SSN'). Off (default): unlabelled ones too, at the price of the "
                           "checksum's chance rate on random digit strings (benchmarks/RESULTS.md gives both rates).")


class FuzzyDedupSettings(Section):
    """MinHash LSH near-duplicate removal (datatrove's stages; CJK-aware shingles and pair verification are ours)."""

    enabled: bool = True
    threshold: float | None = Field(
        0.8, gt=0, le=1,
        description="Estimated Jaccard similarity a candidate pair needs to count as duplicate; null: every LSH candidate.",
    )
    n_grams: int = Field(5, ge=1, description="Tokens per shingle (words; single characters for Chinese).")
    num_buckets: int = Field(25, ge=1, description="LSH bands.")
    hashes_per_bucket: int = Field(8, ge=1, description="Rows per band.")
    shingle: Literal["cjk_chars", "words"] = Field("cjk_chars", description="words: datatrove's whitespace tokens.")
    seed: int = 1
    verify_memory_mb: float = Field(
        1024, gt=0, description="Memory the pair check may hold; past it, it checks the pairs in parts "
                                "(one more read of the signature files each).",
    )


class BoilerplateLineSettings(Section):
    """Remove lines that recur in many documents (footers, share buttons, legal notices); runs after both dedups."""

    enabled: bool = False
    min_documents: int = Field(5, ge=2, description="A line in at least this many documents is boilerplate.")
    min_line_chars: int = Field(10, ge=1, description="Shorter lines (bullets, table cells) are never judged.")
    buckets: int = Field(4, ge=1, description="Hash buckets, one counting task each.")


class DedupSettings(Section):
    exact: bool = Field(True, description="Drop documents whose normalised text repeats (datatrove's exact dedup).")
    fuzzy: FuzzyDedupSettings = Field(default_factory=FuzzyDedupSettings)
    lines: BoilerplateLineSettings = Field(default_factory=BoilerplateLineSettings)


class ClassifierSettings(Section):
    """A fast text classifier: an existing model directory, or one trained in the stage from labelled records."""

    enabled: bool = True
    model: str | None = Field(None, description="Directory written by `finloom data train-classifier`.")
    labels: Source | None = Field(None, description="Labelled JSONL (text + label fields) to train the model from.")
    label_field: str = "label"

    @model_validator(mode="after")
    def _one_origin(self) -> "ClassifierSettings":
        if self.enabled and (self.model is None) == (self.labels is None):
            raise ValueError("set exactly one of model or labels while enabled")
        return self


class QualityClassifierSettings(ClassifierSettings):
    drop_below: float | None = Field(
        0.5, ge=0, le=1, description="Documents whose quality score (P(good)) is below are removed; null: score only."
    )
    good_label: str = "good"


class DomainClassifierSettings(ClassifierSettings):
    subdomain_field: str | None = Field(
        "subdomain", description="With labels: label field of the finance sub-domain model trained from the same "
                                 "records; null: none."
    )
    subdomain_model: str | None = Field(None, description="With model: the sub-domain model directory, if any.")
    finance_min_prob: float | None = Field(
        None, ge=0, le=1,
        description="Documents of the finance sources below this P(finance) are removed (off_domain); null: tag only.",
    )


JUDGE_DIMENSIONS = ("readability", "coherence", "informativeness", "safety")


class JudgeSettings(Section):
    """LLM-judge quality scores through the recipe's ``teacher`` client (off by default: it costs one call a document)."""

    enabled: bool = False
    dimensions: list[str] = Field(list(JUDGE_DIMENSIONS), min_length=1)
    min_score: float | None = Field(3.0, ge=1, le=5, description="Mean score (1-5) below which a document is removed.")
    max_chars: int = Field(3000, ge=100, description="Characters of the document shown to the judge.")
    retries: int = Field(2, ge=0, description="Re-asks when a reply cannot be parsed.")
    unparsed: Literal["keep", "drop"] = Field("keep", description="What happens to a document whose every reply failed to parse.")
    max_tokens: int = Field(128, ge=16)


class DecontamSettings(Section):
    """Drop (or flag) training documents sharing a long n-gram with an eval item."""

    enabled: bool = True
    eval_sets: list[Source] = Field(default_factory=list, description="Eval files besides the recipe's eval section.")
    include_recipe_evals: bool = Field(True, description="Also every file the eval section names.")
    word_ngram: int = Field(13, ge=3, description="Words per n-gram (the GPT-3 convention).")
    char_ngram: int = Field(20, ge=5, description="Characters per n-gram for Chinese text.")
    include_options: bool = Field(False, description="Index MCQ options too, not just the question stem.")
    action: Literal["drop", "flag"] = "drop"
    heldout_max_overlap: float | None = Field(
        0.2, ge=0, le=1, description="Held-out documents with more than this share of their n-grams in the kept "
                                     "training text are removed (heldout_overlap; an exact copy has all of them); "
                                     "null: no check.")


class MixSpec(Section):
    shares: dict[str, float] = Field(description="Domain (general, finance) -> share of tokens; sums to 1.")
    total_tokens: int | None = Field(None, ge=1, description="Default: as many tokens as the corpus holds.")

    @model_validator(mode="after")
    def _shares_valid(self) -> "MixSpec":
        unknown = sorted(set(self.shares) - {"general", "finance"})
        if unknown:
            raise ValueError(f"shares: unknown domain(s) {unknown}; domains: ['finance', 'general']")
        if any(share < 0 for share in self.shares.values()) or abs(sum(self.shares.values()) - 1) > 1e-6:
            raise ValueError(f"shares must be >= 0 and sum to 1, got {self.shares}")
        return self


def _default_mixes() -> dict[str, MixSpec]:
    return {"base": MixSpec(shares={"general": 1.0}), "pretrain": MixSpec(shares={"general": 0.8, "finance": 0.2})}


class MixSettings(Section):
    """Token mixes written as packed token shards; training stages read the mix named after them."""

    enabled: bool = True
    seq_len: int = Field(256, ge=8, description="Tokens per packed block; base/pretrain train at this length.")
    mixes: dict[str, MixSpec] = Field(
        default_factory=_default_mixes,
        description="Mix name -> shares by tokens. Default: base = general only; pretrain = general 80 / finance 20 "
                    "(Baichuan4-Finance's CPT mix).",
    )
    shard_tokens: int = Field(1 << 25, ge=1024, description="Tokens per shard file.")


class RaySettings(Section):
    address: str | None = Field(None, description="Ray cluster address; null starts a local Ray instance.")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)


class SlurmSettings(Section):
    partition: str | None = None
    time: str = Field("04:00:00", description="Time limit per task.")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: int = Field(2, ge=1)
    qos: str = "normal"
    env_command: str | None = Field(None, description="Shell line run before each task, e.g. activating a venv.")
    sbatch_args: dict[str, str] = Field(default_factory=dict)
    poll_s: float = Field(30.0, gt=0, description="How often finloom checks that the jobs have finished.")


class ExecutorSettings(Section):
    """Where the data pipeline runs: datatrove's local, Ray or Slurm executor, the same steps for each."""

    type: Literal["local", "ray", "slurm"] = "local"
    tasks: int = Field(1, ge=1, description="Shards of the input (files are dealt to tasks round-robin).")
    workers: int = Field(1, ge=-1, description="Tasks run at once (local); -1: all.")
    ray: RaySettings = Field(default_factory=RaySettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @model_validator(mode="after")
    def _slurm_needs_partition(self) -> "ExecutorSettings":
        if self.type == "slurm" and not self.slurm.partition:
            raise ValueError("slurm.partition is required with type: slurm")
        return self


class DataSection(StageSection):
    """The data quality pipeline over the general and finance corpora, then the tokenizer and token mixes."""

    general: list[Source] = Field(default_factory=list, description="General-domain corpora (at least one).")
    finance: list[Source] = Field(default_factory=list, description="Finance corpora (at least one).")
    general_heldout: list[Source] = Field(default_factory=list, description="Text for general perplexity.")
    finance_heldout: list[Source] = Field(default_factory=list, description="Text for finance perplexity.")
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    normalize: NormalizeSettings = Field(default_factory=NormalizeSettings)
    min_chars: int = Field(20, ge=0, description="Shorter documents are removed (reason: too_short).")
    language: LanguageSettings = Field(default_factory=LanguageSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    pii: PIISettings = Field(default_factory=PIISettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    quality_classifier: QualityClassifierSettings = Field(
        default_factory=lambda: QualityClassifierSettings(enabled=False))
    domain_classifier: DomainClassifierSettings = Field(
        default_factory=lambda: DomainClassifierSettings(enabled=False))
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    decontam: DecontamSettings = Field(default_factory=DecontamSettings)
    mix: MixSettings = Field(default_factory=MixSettings)

    @model_validator(mode="after")
    def _corpora_when_enabled(self) -> "DataSection":
        missing = [name for name in ("general", "finance") if self.enabled and not getattr(self, name)]
        if missing:
            raise ValueError(f"{missing[0]}: at least one source is required while the stage is enabled")
        return self

    def needs_model(self) -> bool:
        return self.mix.enabled  # the mixes are tokenised with the model's tokenizer

    def settings_read(self) -> tuple[str, ...]:
        """Cleaning does not depend on the model; tokenising depends on its tokenizer; the judge on the teacher."""
        tokenizer = ("model.hf", "model.trust_remote_code", "model.scratch.vocab_size",
                     "model.scratch.tokenizer_max_chars")
        return tokenizer + (("teacher",) if self.judge.enabled else ())
