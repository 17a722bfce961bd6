"""The recipe: one YAML file, one pydantic model per section, defaults visible in the schema.

Unknown keys are rejected and every error names its field path (``align.dpo.beta``) and the
reason, so a typo never silently falls back to a default. ``finloom recipe show`` prints the
fully resolved recipe. Data paths are relative to the recipe file; ``starter:NAME`` names a
file bundled with finloom (``src/finloom/starter/data``).

One module per stage's settings (``data``, ``pretrain``, ``prompts``, ``chat``, ``align``, ``eval``, ``forgetting``,
``report``), the shared pieces in ``base`` and ``model``, the whole recipe in ``schema``, reading it
in ``loader``. Everything is importable from ``finloom.recipe``.
"""

from finloom.recipe.base import (
    HUB_PREFIX,
    STARTER_DATA_DIR,
    STARTER_PREFIX,
    ChatDataSection,
    ChatSource,
    DataPath,
    GradientCheckpointing,
    LoraSettings,
    Section,
    Source,
    StageSection,
    TrainArgs,
)
from finloom.recipe.align import (
    REWARD_COMPONENTS,
    AlignSection,
    DPOArgs,
    GRPOArgs,
    KTOArgs,
    PPOArgs,
    RewardWeights,
    Reweighting,
)
from finloom.recipe.chat import RewardSection, SFTSection
from finloom.recipe.data import (
    JUDGE_DIMENSIONS,
    PII_TYPE_NAMES,
    BoilerplateLineSettings,
    ClassifierSettings,
    DataSection,
    DecontamSettings,
    DedupSettings,
    DomainClassifierSettings,
    ExecutorSettings,
    FuzzyDedupSettings,
    JudgeSettings,
    LanguageSettings,
    MixSettings,
    MixSpec,
    NormalizeSettings,
    PIISettings,
    QualityClassifierSettings,
    QualitySettings,
    RaySettings,
    SlurmSettings,
)
from finloom.recipe.errors import format_validation_error
from finloom.recipe.eval import (
    BENCHMARK_LAYOUTS,
    DEFAULT_EVAL_RECIPE,
    DEFAULT_LAYOUT,
    BenchmarkSpec,
    EndpointSpec,
    EvalSection,
    HubSource,
    ScenarioSettings,
)
from finloom.recipe.forgetting import ForgettingSection, ForgettingVariant
from finloom.recipe.merge import MERGE_METHODS, MergeSection
from finloom.recipe.prefs import PrefsSection
from finloom.recipe.loader import load_recipe, model_dir_problems, parse_recipe, recipe_to_dict
from finloom.recipe.mix_search import MixSearchSection
from finloom.recipe.model import ClientSection, ModelLoading, ModelSection, ScratchModel
from finloom.recipe.pretrain import BaseSection, ObjectiveSettings, PretrainSection
from finloom.recipe.pas import PASCritique, PASEval, PASGeneration, PASSection
from finloom.recipe.prompts import (
    CLASSIFIED_DIMENSIONS,
    COMPUTED_DIMENSIONS,
    TAG_DIMENSIONS,
    NearDuplicateSettings,
    PromptSelection,
    PromptsSection,
    Quota,
    ResponseSettings,
    SelectionSettings,
    TaggingSettings,
    TaskAwareSettings,
    TemplateSettings,
)
from finloom.recipe.report import ReportSection
from finloom.recipe.schema import Recipe
from finloom.recipe.sources import decontam_sources, stage_sources
