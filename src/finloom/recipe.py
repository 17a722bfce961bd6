"""The recipe: one YAML file, one pydantic model per section, defaults visible in the schema.

Unknown keys are rejected and every error names its field path (``align.dpo.beta``) and the
reason, so a typo never silently falls back to a default. ``finloom recipe show`` prints the
fully resolved recipe. Data paths are relative to the recipe file; ``starter:NAME`` names a
file bundled with finloom (``src/finloom/starter/data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finloom.errors import BadInput

STARTER_DATA_DIR = Path(__file__).parent / "starter" / "data"
DEFAULT_EVAL_RECIPE = Path(__file__).parent / "eval" / "suites" / "starter.yaml"
STARTER_PREFIX = "starter:"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ScratchModel(Section):
    """A small Llama-architecture model and byte-level BPE tokenizer built from the recipe's corpus."""

    vocab_size: int = Field(4096, ge=300, description="BPE vocabulary size, special tokens included.")
    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(352, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1, description="Grouped-query attention: key/value heads.")
    max_position_embeddings: int = Field(512, ge=16)
    tokenizer_max_chars: int = Field(
        3_000_000, ge=1000, description="At most this many corpus characters train the tokenizer."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> "ScratchModel":
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        return self


class ModelSection(Section):
    """Exactly one of ``hf`` (an existing model) or ``scratch`` (build a tiny one)."""

    hf: str | None = Field(None, description="Local directory or Hub id of a causal LM.")
    scratch: ScratchModel | None = None
    allow_pickle: bool = Field(False, description="Allow loading non-safetensors weights.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSection":
        if (self.hf is None) == (self.scratch is None):
            raise ValueError("set exactly one of model.hf or model.scratch")
        return self


class Source(Section):
    """One input: a file (JSONL, Parquet, text, HTML, PDF) or a folder of them (format from each suffix)."""

    path: str
    format: Literal["auto", "jsonl", "parquet", "text", "html", "pdf"] = "auto"
    text_field: str = "text"
    tag: str | None = Field(None, description="Source tag kept in each document's metadata (default: the file name).")
    lang: str | None = Field(None, description="Declared language, kept as metadata; language id still runs.")


class TrainArgs(Section):
    """Optimisation settings shared by every training stage (mapped onto HF TrainingArguments)."""

    max_steps: int = Field(100, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(256, ge=8, description="Tokens per training sequence.")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "warmup_stable_decay"] = "cosine"
    decay_steps: int | None = Field(None, ge=1, description="warmup_stable_decay: steps of the final decay "
                                                             "(default: 10% of max_steps).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (resume point).")
    logging_steps: int = Field(5, ge=1)
    bf16: bool = False
    gradient_checkpointing: bool = False


class StageSection(Section):
    enabled: bool = True


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
    general: list[Source] = Field(min_length=1)
    finance: list[Source] = Field(min_length=1)
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


class BaseSection(StageSection):
    """Pretrain a from-scratch model on the general corpus to obtain a 'general base'."""

    mix: str = Field("base", description="The data.mix.mixes entry this stage trains on.")
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=200, learning_rate=1e-3))


class ObjectiveSettings(Section):
    """The CPT loss. ``self_constraint``: CE on finance tokens, lambda * KL to the frozen start model on general
    tokens (Baichuan4-Finance's domain self-constraint). ``ce``: plain next-token CE on every token (replay)."""

    type: Literal["self_constraint", "ce"] = "self_constraint"
    kl_lambda: float = Field(1.0, ge=0, description="Weight of the per-token KL on general text.")
    kl_direction: Literal["reverse", "forward"] = Field(
        "reverse", description="reverse: KL(p_theta || p_ref), as Baichuan-M2 writes it; forward: KL(p_ref || p_theta).")
    kl_top_k: int | None = Field(
        None, ge=1, description="KL over the reference's top-k tokens, renormalised (Baichuan Alignment uses 500); "
                                "null: the full vocabulary.")
    kl_warmup_steps: int = Field(0, ge=0, description="Lambda rises linearly from 0 over these steps.")
    general_ce_weight: float = Field(0.0, ge=0, description="Optional plain CE on general tokens, added to the KL.")
    reference: Literal["online", "precomputed"] = Field(
        "online", description="online: a frozen copy of the start model; precomputed: top-k log-probs written once by "
                              "`finloom pretrain precompute-ref` (needs kl_top_k), so training holds one model.")
    reference_device: Literal["same", "cpu"] = Field("same", description="online: where the frozen copy lives.")
    reference_dtype: Literal["float16", "float32"] = Field("float16", description="precomputed: stored log-prob type.")

    @model_validator(mode="after")
    def _precomputed_needs_top_k(self) -> "ObjectiveSettings":
        if self.type == "self_constraint" and self.reference == "precomputed" and self.kl_top_k is None:
            raise ValueError("reference: precomputed stores the reference's top-k log-probs; set kl_top_k")
        return self


class LoraSettings(Section):
    """LoRA continual pre-training (PEFT); the adapters are merged into the saved model."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class PretrainSection(StageSection):
    """Continual pre-training on the general + finance mix."""

    mix: str = Field("pretrain", description="The data.mix.mixes entry this stage trains on.")
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    eval_every: int | None = Field(
        50, ge=1, description="Held-out finance and general loss every N steps (TensorBoard), so forgetting is visible "
                              "while it happens; null: off.")
    eval_max_tokens: int = Field(8192, ge=64, description="Held-out tokens per domain at each of those evaluations.")
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=100, learning_rate=5e-4))


class ChatDataSection(StageSection):
    datasets: list[Source] = Field(default_factory=list)

    @model_validator(mode="after")
    def _datasets_when_enabled(self) -> "ChatDataSection":
        if self.enabled and not self.datasets:
            raise ValueError("datasets: at least one source is required while the stage is enabled")
        return self


class SFTSection(ChatDataSection):
    """Supervised fine-tuning on conversations; loss on assistant tokens only."""

    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=100, learning_rate=1e-5))


class RewardSection(ChatDataSection):
    """Scalar reward model on chosen/rejected pairs, initialised from the SFT model."""

    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=50, learning_rate=1e-5))


class DPOArgs(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference (SFT) model.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"


class AlignSection(ChatDataSection):
    """Preference alignment of the SFT model."""

    method: Literal["dpo"] = "dpo"
    dpo: DPOArgs = Field(default_factory=DPOArgs)
    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=50, learning_rate=5e-6))


BENCHMARK_LAYOUTS = ("flame", "columns", "cflue", "mmlu", "arc", "hellaswag", "calc", "scenario")
DEFAULT_LAYOUT = {"mcq": "flame", "calc": "calc", "scenario": "scenario"}


class HubSource(Section):
    """A dataset on the Hugging Face Hub, read only when the machine is online (the user's choice)."""

    path: str = Field(description="e.g. cais/mmlu")
    name: str | None = Field(None, description="Dataset configuration, e.g. all.")
    split: str = "test"


class BenchmarkSpec(Section):
    """One benchmark: its files (a file or a folder, one sub-task per file) in a public layout, and how to score it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    kind: Literal["mcq", "calc", "scenario"] = "mcq"
    layout: Literal[BENCHMARK_LAYOUTS] | None = Field(  # type: ignore[valid-type]
        None, description="flame (FLAME-Cer), columns (FinanceIQ, FinEval, C-Eval, CMMLU), cflue, mmlu, arc, "
                          "hellaswag, calc, scenario; default by kind.")
    files: list[Source] = Field(default_factory=list)
    hub: HubSource | None = None
    domain: Literal["finance", "general"] = "finance"
    scoring: Literal["auto", "cloze", "letters", "generate"] = Field(
        "auto", description="auto: log-likelihood (cloze) for every local model, plus generation for chat models "
                            "and endpoints; cloze / letters: log-likelihood only; generate: generation only.")
    num_fewshot: int = Field(0, ge=0)
    max_items: int | None = Field(None, ge=1, description="At most this many items (default: eval.max_items).")

    @model_validator(mode="after")
    def _one_source(self) -> "BenchmarkSpec":
        if bool(self.files) == (self.hub is not None):
            raise ValueError("set exactly one of files or hub")
        if self.layout is None:
            self.layout = DEFAULT_LAYOUT[self.kind]
        return self


class EndpointSpec(Section):
    """A model behind an OpenAI-compatible API (vLLM, finloom serve, a hosted model) to put in the same table."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str = "default"
    api_key_env: str | None = None
    chat: bool = Field(True, description="Chat completions (generation); false: text completions.")
    logprobs: bool = Field(False, description="The server returns prompt log-probs (echo): MCQ by log-likelihood too.")
    tokenizer: str | None = Field(None, description="Local tokenizer directory, needed with logprobs.")
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(120.0, gt=0)


class ScenarioSettings(Section):
    """FLAME-Sce scoring: the teacher judges each dimension -1..5; final = weighted mean of the task's weights."""

    usable_basic: float = Field(3.0, description="Usable when the final score reaches this (basic tasks) ...")
    usable_high_stakes: float = Field(4.0, description="... or this (high-stakes tasks), with no dimension at -1.")
    judge_retries: int = Field(2, ge=0, description="Re-asks when a judge reply cannot be parsed; then it is counted.")
    judge_max_tokens: int = Field(256, ge=16)
    max_gen_tokens: int = Field(512, ge=8, description="Tokens a model may write per scenario answer.")


class EvalSection(StageSection):
    """Benchmarks run through lm-evaluation-harness, and held-out perplexity, for every stage's model."""

    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    endpoints: list[EndpointSpec] = Field(default_factory=list, description="API models evaluated beside the stages.")
    scenarios: ScenarioSettings = Field(default_factory=ScenarioSettings)
    max_items: int | None = Field(None, ge=1, description="Evaluate at most this many items per benchmark.")
    perplexity_max_tokens: int = Field(20000, ge=64, description="Held-out tokens scored per domain.")
    batch_size: int = Field(8, ge=1)
    max_gen_tokens: int = Field(128, ge=8, description="Tokens per generated MCQ / calculation answer.")

    @model_validator(mode="after")
    def _unique_names(self) -> "EvalSection":
        names = [b.name for b in self.benchmarks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"benchmarks: names must be unique, repeated: {duplicated}")
        return self


class ForgettingVariant(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    mix: Literal["pretrain", "finance_only"] = Field(
        "pretrain", description="pretrain: the pretrain stage's mix; finance_only: every token from finance text.")


def _default_variants() -> list[ForgettingVariant]:
    return [
        ForgettingVariant(name="finance_only_ce", objective=ObjectiveSettings(type="ce"), mix="finance_only"),
        ForgettingVariant(name="replay_ce", objective=ObjectiveSettings(type="ce")),
        ForgettingVariant(name="self_constraint_full", objective=ObjectiveSettings()),
        ForgettingVariant(name="self_constraint_top500", objective=ObjectiveSettings(kl_top_k=500)),
    ]


class ForgettingSection(StageSection):
    """The forgetting experiment: CPT variants from the same start model at an equal token budget, each
    evaluated on finance and general held-out perplexity and MCQ. Off by default (it trains every variant)."""

    enabled: bool = False
    variants: list[ForgettingVariant] = Field(default_factory=_default_variants, min_length=2)
    train: TrainArgs | None = Field(None, description="Budget and optimiser of every variant; default: pretrain.train.")
    reuse_pretrain: bool = Field(
        True, description="A variant identical to the pretrain stage (objective, mix, budget) reuses its model.")
    general_ppl_tolerance: float = Field(
        0.02, ge=0, description="Target: general PPL at most this much above the start model's (a fall is no forgetting).")
    finance_gain_share: float = Field(
        0.9, ge=0, le=1, description="Target: this share of finance-only CE's finance-PPL reduction.")


class ReportSection(StageSection):
    title: str | None = None


class ClientSection(Section):
    """The teacher / judge LLM: an OpenAI-compatible endpoint or a local HF model directory."""

    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    local_model: str | None = Field(
        None, description="Local HF model directory, run in-process; 'stage:NAME' is that stage's model of the run "
                          "(a self-judging demo: the quickstart's scenarios are judged by its own align model).")
    model: str = "default"
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _one_backend(self) -> "ClientSection":
        if (self.base_url is None) == (self.local_model is None):
            raise ValueError("set exactly one of base_url or local_model")
        return self


STAGE_NAMES = ("data", "base", "pretrain", "sft", "reward", "align", "eval", "forgetting", "report")


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 1234
    run_dir: str | None = Field(None, description="Default: runs/<name> next to the working directory.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores).")
    model: ModelSection
    teacher: ClientSection | None = None
    data: DataSection
    base: BaseSection = Field(default_factory=BaseSection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    sft: SFTSection
    reward: RewardSection
    align: AlignSection
    eval: EvalSection = Field(default_factory=EvalSection)
    forgetting: ForgettingSection = Field(default_factory=ForgettingSection)
    report: ReportSection = Field(default_factory=ReportSection)

    source_dir: Path = Field(Path("."), exclude=True, description="Directory of the recipe file.")

    @model_validator(mode="after")
    def _stages_fit_together(self) -> "Recipe":
        problems = []
        if self.data.enabled and self.data.judge.enabled and self.teacher is None:
            problems.append("data.judge.enabled: the judge needs a teacher section (its LLM endpoint)")
        if (self.data.enabled and self.data.judge.enabled and self.teacher is not None
                and (self.teacher.local_model or "").startswith("stage:")):
            problems.append("teacher.local_model: the data stage runs before any stage has a model; "
                            "judge the data with an endpoint or a model directory")
        for stage in ("base", "pretrain"):
            section = self.section(stage)
            if not section.enabled or (stage == "base" and self.model.scratch is None) or not self.data.enabled:
                continue
            if not self.data.mix.enabled:
                problems.append(f"data.mix.enabled: stage {stage} trains on token shards; enable the mix")
            elif section.mix not in self.data.mix.mixes:
                problems.append(f"{stage}.mix: no mix {section.mix!r} in data.mix.mixes "
                                f"(has: {', '.join(sorted(self.data.mix.mixes))})")
            if section.train.seq_len != self.data.mix.seq_len:
                problems.append(f"{stage}.train.seq_len: {section.train.seq_len} differs from data.mix.seq_len "
                                f"{self.data.mix.seq_len} (the shards are packed at that length)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def resolve(self, path: str) -> Path:
        """Absolute path of a data path written in the recipe."""
        if path.startswith(STARTER_PREFIX):
            return STARTER_DATA_DIR / path[len(STARTER_PREFIX):]
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.source_dir / candidate).resolve()

    def start_model(self) -> str:
        """``model.hf`` as a local directory (relative to the recipe) if one exists, else a Hub id."""
        local = self.resolve(self.model.hf)
        return str(local) if local.exists() else self.model.hf

    def section(self, stage: str) -> StageSection:
        return getattr(self, stage)

    def enabled_stages(self) -> list[str]:
        stages = [s for s in STAGE_NAMES if self.section(s).enabled]
        if self.model.scratch is None and "base" in stages:
            stages.remove("base")
        return stages


def _field_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts) or "(recipe)"


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        reason = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            reason = "unknown key (not part of the recipe schema)"
        elif problem["type"] == "literal_error":
            reason = f"{reason} (got {problem['input']!r})"
        if not problem["loc"]:  # a whole-recipe check: its message names the fields itself
            lines.extend(reason.split("\n"))
            continue
        lines.append(f"{_field_path(problem['loc'])}: {reason}")
    return "\n".join(lines)


def _walk_sources(value, path: str):
    """(field path, Source) for every Source inside ``value``: nested sections, lists and dicts."""
    if isinstance(value, Source):
        yield path, value
    elif isinstance(value, Section):
        for name, child in value:
            if not (isinstance(child, Section) and getattr(child, "enabled", True) is False):
                yield from _walk_sources(child, f"{path}.{name}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk_sources(child, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _walk_sources(child, f"{path}.{key}")


def stage_sources(recipe: "Recipe", stage: str) -> list[tuple[str, Source]]:
    """Every external file a stage reads, with its field path; the data stage also reads the eval sets it
    decontaminates against."""
    section = recipe.section(stage)
    if not section.enabled:
        return []
    sources = list(_walk_sources(section, stage))
    if stage == "data":
        sources += [item for item in decontam_sources(recipe) if item[0].startswith("eval.")]
    return sources


def decontam_sources(recipe: "Recipe") -> list[tuple[str, Source]]:
    """The eval files the data stage decontaminates against: its own list, plus the eval section's."""
    settings = recipe.data.decontam
    if not (recipe.data.enabled and settings.enabled):
        return []
    sources = list(_walk_sources(settings, "data.decontam"))
    if settings.include_recipe_evals and recipe.eval.enabled:
        sources += list(_walk_sources(recipe.eval, "eval"))
    return sources


def _check_files(recipe: Recipe) -> None:
    """Every data path the recipe names must exist before any stage starts."""
    problems = []
    seen = set()
    for stage in STAGE_NAMES:
        for field_path, source in stage_sources(recipe, stage):
            path = recipe.resolve(source.path)
            if field_path not in seen and not path.exists():
                problems.append(f"{field_path}.path: file not found: {path}")
            seen.add(field_path)
    if problems:
        raise BadInput("\n".join(problems))


def parse_recipe(data: dict, source_dir: Path = Path("."), check_files: bool = True) -> Recipe:
    if not isinstance(data, dict):
        raise BadInput("(recipe): the recipe must be a YAML mapping of sections")
    try:
        recipe = Recipe.model_validate({**data, "source_dir": source_dir})
    except ValidationError as error:
        raise BadInput(format_validation_error(error)) from None
    if check_files:
        _check_files(recipe)
    return recipe


def load_recipe(path: str | Path, check_files: bool = True) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: not valid YAML: {error}") from None
    if isinstance(data, dict) and "source_dir" in data:
        raise BadInput("source_dir: unknown key (not part of the recipe schema)")
    return parse_recipe(data, path.parent.resolve(), check_files)


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe (defaults filled) as plain data."""
    return recipe.model_dump(mode="json")
