"""Schema of the hand-written knowledge base that the bundled starter data is generated from.

The knowledge base is written by the finloom authors (not copied from anywhere). Every file under
``starter/kb/`` is validated against these models before generation, so a typo in a hand-written
entry fails loudly instead of silently producing a broken corpus.

Run ``python -m finloom.starter.kb_schema`` to validate all knowledge-base files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KB_DIR = Path(__file__).parent / "kb"

FINANCE_DOMAINS = (
    "banking", "insurance", "securities", "funds", "futures",
    "accounting", "tax", "risk", "regulation",
)
# The 14 certifications of FLAME-Cer.
CERTIFICATIONS = (
    "CPA", "Banking", "Insurance", "CFA", "Securities", "Fund", "Futures",
    "Economist", "FRM", "AFP", "CMA", "CIA", "CISA", "Actuary",
)
GENERAL_CATEGORIES = (
    "science", "history", "geography", "nature", "health", "technology", "culture",
    "arts", "sports", "food", "daily_life", "mathematics", "language", "society",
)
# The ten FLAME-Sce scenario families.
SCENARIO_FAMILIES = (
    "knowledge_theory", "compliance", "document_generation", "customer_service",
    "risk_control", "text_processing", "analysis_research", "investment_wealth",
    "marketing", "data_calculation",
)
RUBRIC_DIMENSIONS = (
    "accuracy", "completeness", "compliance", "relevance", "professionalism",
    "clarity", "practicality", "instruction_following",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LangBlock(_Strict):
    """One entry in one language."""

    term: str = Field(min_length=1, description="The term or topic name.")
    subject: str = Field(min_length=1, description="Second-level subject, e.g. 'Corporate finance'.")
    definition: str = Field(min_length=10, description="One sentence defining the term, not starting with it.")
    facts: list[str] = Field(min_length=2, max_length=4, description="True, self-contained sentences.")
    false: list[str] = Field(min_length=2, max_length=3, description="Plausible but false statements.")

    @field_validator("facts", "false")
    @classmethod
    def _non_empty_sentences(cls, sentences: list[str]) -> list[str]:
        for sentence in sentences:
            if len(sentence.strip()) < 8:
                raise ValueError(f"sentence too short: {sentence!r}")
        if len(set(sentences)) != len(sentences):
            raise ValueError("sentences repeat")
        return sentences


class FinanceEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    domain: Literal[FINANCE_DOMAINS]  # type: ignore[valid-type]
    certification: Literal[CERTIFICATIONS]  # type: ignore[valid-type]
    en: LangBlock
    zh: LangBlock


class GeneralEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    category: Literal[GENERAL_CATEGORIES]  # type: ignore[valid-type]
    en: LangBlock
    zh: LangBlock


class ScenarioText(_Strict):
    prompt: str = Field(min_length=20)
    checklist: list[str] = Field(min_length=3, max_length=6)


class ScenarioEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    family: Literal[SCENARIO_FAMILIES]  # type: ignore[valid-type]
    secondary: str = Field(min_length=2)
    task: str = Field(min_length=2)
    high_stakes: bool
    weights: dict[Literal[RUBRIC_DIMENSIONS], int]  # type: ignore[valid-type]
    en: ScenarioText
    zh: ScenarioText

    @model_validator(mode="after")
    def _weights_sum_to_100(self) -> "ScenarioEntry":
        total = sum(self.weights.values())
        if total != 100 or any(w <= 0 for w in self.weights.values()):
            raise ValueError(f"weights must be positive and sum to 100, got {total}")
        return self


_MODELS = {"finance": FinanceEntry, "general": GeneralEntry, "scenarios": ScenarioEntry}


def load_kb_file(path: Path) -> list:
    """Validate one knowledge-base file; its kind is the prefix of its name."""
    kind = next(k for k in _MODELS if path.name.startswith(k))
    raw = json.loads(path.read_text(encoding="utf-8"))
    entries = []
    for index, item in enumerate(raw):
        try:
            entries.append(_MODELS[kind].model_validate(item))
        except ValueError as error:
            raise ValueError(f"{path.name}[{index}] ({item.get('id', '?')}): {error}") from error
    return entries


def load_kb(kind: Literal["finance", "general", "scenarios"], kb_dir: Path = KB_DIR) -> list:
    """Load and validate every ``<kind>*.json`` file in ``kb_dir``; ids must be unique across files."""
    entries = []
    for path in sorted(kb_dir.glob(f"{kind}*.json")):
        entries.extend(load_kb_file(path))
    ids = [entry.id for entry in entries]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"duplicate {kind} ids in {kb_dir}: {duplicated}")
    return entries


def main() -> int:
    if len(sys.argv) > 1:
        for name in sys.argv[1:]:
            print(f"{name}: {len(load_kb_file(Path(name)))} entries OK")
        return 0
    for kind in ("finance", "general", "scenarios"):
        entries = load_kb(kind)
        print(f"{kind}: {len(entries)} entries OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
