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


class TrainArgs(Section):
    """Optimisation settings shared by every training stage (mapped onto HF TrainingArguments)."""

    max_steps: int = Field(100, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(256, ge=8, description="Tokens per training sequence.")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (resume point).")
    logging_steps: int = Field(5, ge=1)
    bf16: bool = False
    gradient_checkpointing: bool = False


class StageSection(Section):
    enabled: bool = True


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


class DataSection(StageSection):
    general: list[Source] = Field(min_length=1)
    finance: list[Source] = Field(min_length=1)
    general_heldout: list[Source] = Field(default_factory=list, description="Text for general perplexity.")
    finance_heldout: list[Source] = Field(default_factory=list, description="Text for finance perplexity.")
    normalize: Literal["nfkc", "none"] = "nfkc"
    min_chars: int = Field(20, ge=0, description="Shorter documents are removed (reason: too_short).")
    language: LanguageSettings = Field(default_factory=LanguageSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    pii: PIISettings = Field(default_factory=PIISettings)


class BaseSection(StageSection):
    """Pretrain a from-scratch model on the general corpus to obtain a 'general base'."""

    train: TrainArgs = Field(default_factory=lambda: TrainArgs(max_steps=200, learning_rate=1e-3))


class PretrainSection(StageSection):
    """Continual pre-training on the general + finance mix."""

    finance_ratio: float = Field(0.5, ge=0, le=1, description="Share of finance tokens in the mix.")
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


class EvalSection(StageSection):
    """MCQ accuracy (log-likelihood) and held-out perplexity for every stage's model."""

    finance_mcq: list[Source] = Field(default_factory=list)
    general_mcq: list[Source] = Field(default_factory=list)
    max_items: int | None = Field(None, ge=1, description="Evaluate at most this many items per set.")
    perplexity_max_tokens: int = Field(20000, ge=64, description="Held-out tokens scored per domain.")
    batch_size: int = Field(8, ge=1)


class ReportSection(StageSection):
    title: str | None = None


class ClientSection(Section):
    """The teacher / judge LLM: an OpenAI-compatible endpoint or a local HF model directory."""

    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    local_model: str | None = Field(None, description="Local HF model directory, run in-process.")
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


STAGE_NAMES = ("data", "base", "pretrain", "sft", "reward", "align", "eval", "report")


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
    report: ReportSection = Field(default_factory=ReportSection)

    source_dir: Path = Field(Path("."), exclude=True, description="Directory of the recipe file.")

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
        lines.append(f"{_field_path(problem['loc'])}: {reason}")
    return "\n".join(lines)


def _check_files(recipe: Recipe) -> None:
    """Every data path the recipe names must exist before any stage starts."""
    problems = []
    for stage in ("data", "sft", "reward", "align", "eval"):
        section = recipe.section(stage)
        if not section.enabled:
            continue
        for field_name, value in section:
            if isinstance(value, list) and value and isinstance(value[0], Source):
                for index, source in enumerate(value):
                    if not recipe.resolve(source.path).exists():
                        problems.append(
                            f"{stage}.{field_name}[{index}].path: file not found: {recipe.resolve(source.path)}"
                        )
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
