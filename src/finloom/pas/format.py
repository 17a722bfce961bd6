"""What the PAS model reads and what the main model then reads: one definition for training, serving and eval.

The PAS model is asked with a fixed instruction around the user's prompt (and, in RAG mode, the retrieved
keywords it must stay within), so a chat model it is trained from can tell the task apart from answering.
The complement is appended to the prompt after a blank line.
"""

from __future__ import annotations

import re

from finloom.data.langid import identify_language
from finloom.starter.kb_schema import SCENARIO_FAMILIES

PAS_INSTRUCTION = "Complement this prompt with guidance for its answer; do not answer it."
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['.-][A-Za-z0-9]+)*")


def pas_input(prompt: str, keywords: list[str] | None = None) -> str:
    """The PAS model's user message for ``prompt``."""
    text = f"{PAS_INSTRUCTION}\n\n{prompt}"
    return f"{text}\n\nKeywords: {', '.join(keywords)}" if keywords else text


def augmented(prompt: str, complement: str) -> str:
    """The prompt the main model answers."""
    return f"{prompt}\n\n{complement}"


def category_of(tags: dict[str, str]) -> str:
    """A finance prompt's scenario family, else its ability (the report's categories: tasks and scenarios)."""
    return tags["domain"] if tags.get("domain") in SCENARIO_FAMILIES else tags["ability"]


def language(text: str) -> str:
    """``zh`` for text mostly in Chinese characters, else the language id's answer: what the critique compares."""
    cjk = len(_CJK.findall(text))
    if cjk and cjk >= 0.3 * (cjk + sum(len(w) for w in _WORD.findall(text))):
        return "zh"
    return identify_language(text)[0]


def word_count(text: str) -> float:
    """Words, with two Chinese characters counted as one word (about the same amount of content)."""
    return len(_WORD.findall(text)) + len(_CJK.findall(text)) / 2
