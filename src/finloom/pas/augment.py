"""A trained PAS model at work: the complement of a prompt, and the prompt the main model then answers.

The PAS model directory (``pas/model`` of a run) is a plain HF model; beside its weights the stage saves
``pas.json`` (the categories it was trained on) and, when the prompts were tagged by classifiers,
``pas_taggers/`` so that a server can augment only chosen categories.
"""

from __future__ import annotations

import json
from pathlib import Path

from finloom.data.classifier import TextClassifier
from finloom.errors import BadInput
from finloom.llm.generation import LocalGenerator
from finloom.pas.format import augmented, category_of, pas_input
from finloom.recipe import ModelLoading

PAS_CONFIG = "pas.json"
TAGGERS = "pas_taggers"


class Augmenter:
    """Greedy complements from a PAS model; ``categories`` limits which prompts get one."""

    def __init__(self, pas_dir: str | Path, categories: list[str] | None = None, max_tokens: int = 96,
                 loading: ModelLoading | None = None):
        self.pas_dir = Path(pas_dir)
        config = self.pas_dir / PAS_CONFIG
        if not config.exists():
            raise BadInput(f"--pas: {self.pas_dir} is not a PAS model (no {PAS_CONFIG}; the pas stage writes one "
                           "into pas/model)")
        self.config = json.loads(config.read_text(encoding="utf-8"))
        self.categories = categories if categories is not None else self.config.get("serve_categories")
        if self.categories and not (self.pas_dir / TAGGERS).is_dir():
            raise BadInput(f"--pas-category: {self.pas_dir} has no category classifier ({TAGGERS}/); it was trained "
                           "from teacher tags, so it augments every prompt")
        taggers = self.pas_dir / TAGGERS
        self.taggers = ({dimension: TextClassifier.load(taggers / dimension) for dimension in ("domain", "ability")}
                        if taggers.is_dir() else None)
        self.generator = LocalGenerator(self.pas_dir, loading or ModelLoading())
        self.max_tokens = max_tokens

    def category(self, prompt: str) -> str | None:
        """The prompt's category by the classifiers the PAS model was built with (None without them)."""
        if self.taggers is None:
            return None
        return category_of({dimension: tagger.predict([prompt])[0] for dimension, tagger in self.taggers.items()})

    def complement(self, prompt: str, keywords: list[str] | None = None) -> str:
        chat = self.generator.chat_prompt([{"role": "user", "content": pas_input(prompt, keywords)}])
        return " ".join(self.generator.generate(chat, max_tokens=self.max_tokens).text.split())

    def augment(self, prompt: str, keywords: list[str] | None = None) -> dict | None:
        """{complement, category, prompt: the augmented prompt}, or None where PAS does not apply (a category not
        chosen, or an empty complement)."""
        category = self.category(prompt)
        if self.categories and category not in self.categories:
            return None
        complement = self.complement(prompt, keywords)
        if not complement:
            return None
        return {"complement": complement, "category": category, "prompt": augmented(prompt, complement)}
