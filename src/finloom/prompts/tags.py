"""Six-dimension tags: ability, attributes, domain, language, difficulty, constraint level.

Language (language id) and constraint level (a count of the kinds of explicit constraint a prompt
states) are computed. The other four come from hashed n-gram classifiers trained on labelled prompts
(offline, seconds; ``finloom.data.classifier``) or from the teacher, asked for a JSON object whose
values must come from the lists below; a reply that does not parse is asked again, then counted.
The classifiers can also train on teacher labels; their agreement with the held-out labels is
reported per dimension.

The lists are finance-aware: ``domain`` holds the ten scenario families of the evaluation suite
(FLAME-Sce) and ``general``; ``attributes`` the subject, a finance domain or a general category.
"""

from __future__ import annotations

import re
from pathlib import Path

from finloom.data.classifier import TextClassifier, train_classifier
from finloom.data.langid import identify_language
from finloom.llm.judge import ask_judge, reply_json
from finloom.recipe import CLASSIFIED_DIMENSIONS
from finloom.starter.kb_schema import FINANCE_DOMAINS, GENERAL_CATEGORIES, SCENARIO_FAMILIES

VALUES = {
    "ability": ("knowledge_qa", "comparison", "writing", "summarisation", "translation", "calculation", "advice",
                "reasoning", "coding", "role_play"),
    "attributes": FINANCE_DOMAINS + GENERAL_CATEGORIES,
    "domain": SCENARIO_FAMILIES + ("general",),
    "difficulty": ("easy", "medium", "hard"),
}
CONSTRAINT_PATTERNS = {
    "length": re.compile(r"\b(?:in|within|under|at most|no more than|fewer than|less than)\s+\d+\s+(?:words|characters|"
                         r"sentences)|\d+\s*字以内|不超过\s*\d+\s*字|\d+\s*字左右|控制在\s*\d+", re.IGNORECASE),
    "format": re.compile(r"numbered list|bullet|\btable\b|\bin one sentence\b|\bJSON\b|markdown|分点|表格|一句话|编号|"
                         r"列表形式", re.IGNORECASE),
    "language": re.compile(r"\b(?:answer|reply|respond|write)\s+in\s+(?:English|Chinese)\b|用(?:英文|中文|英语)(?:回答|作答|回复)",
                           re.IGNORECASE),
    "prohibition": re.compile(r"\bdo not\b|\bdon't\b|\bnever\b|\bavoid\b|不要|不得|避免|切勿", re.IGNORECASE),
    "inclusion": re.compile(r"\bmust (?:include|mention)\b|\binclude\b|\bmention\b|\bclose by\b|\bend with\b|"
                            r"必须包含|需包含|注明|结尾|并提及|提醒", re.IGNORECASE),
}
TAG_PROMPT = """You label prompts for a finance assistant's training data.
Label the prompt below on four dimensions, each with exactly one value from its list:
{lists}

Reply with only a JSON object, for example:
{example}

Prompt:
<<<
{prompt}
>>>"""


def constraint_kinds(text: str) -> list[str]:
    """The kinds of explicit constraint a prompt states (length, format, language, prohibition, inclusion)."""
    return [kind for kind, pattern in CONSTRAINT_PATTERNS.items() if pattern.search(text)]


def constraint_level(text: str) -> str:
    count = len(constraint_kinds(text))
    return "none" if count == 0 else "simple" if count == 1 else "strong"


def computed_tags(text: str) -> dict[str, str]:
    return {"language": identify_language(text)[0], "constraint": constraint_level(text)}


def tag_prompt(text: str, max_chars: int = 2000) -> str:
    lists = "\n".join(f"- {dimension}: {', '.join(VALUES[dimension])}" for dimension in CLASSIFIED_DIMENSIONS)
    example = "{" + ", ".join(f'"{d}": "{VALUES[d][0]}"' for d in CLASSIFIED_DIMENSIONS) + "}"
    return TAG_PROMPT.format(lists=lists, example=example, prompt=text[:max_chars])


def parse_tags(reply: str) -> dict[str, str] | None:
    """The four dimensions' values, or None if any is missing or not in its list (case and spaces forgiven)."""
    payload = reply_json(reply)
    if payload is None:
        return None
    tags = {}
    for dimension in CLASSIFIED_DIMENSIONS:
        value = payload.get(dimension)
        value = value.strip().lower().replace(" ", "_") if isinstance(value, str) else None
        if value not in VALUES[dimension]:
            return None
        tags[dimension] = value
    return tags


def teacher_tags(client, texts: list[str], retries: int) -> list[dict[str, str] | None]:
    """The teacher's tags per text (None where every reply failed to parse)."""
    verdicts = ask_judge(client, [tag_prompt(text) for text in texts], lambda _, reply: parse_tags(reply), retries,
                         max_tokens=128)
    return [verdict.parsed for verdict in verdicts]


def train_taggers(records: list[dict], out_dir: Path, holdout: float, seed: int) -> dict[str, dict]:
    """One classifier per classified dimension in ``out_dir/DIMENSION``; returns each one's metrics, whose
    ``heldout.accuracy`` is its agreement with the held-out labels."""
    return {dimension: train_classifier(records, dimension, out_dir / dimension, seed=seed, holdout=holdout)
            for dimension in CLASSIFIED_DIMENSIONS}


def classify(model_dir: Path, texts: list[str]) -> list[dict[str, str]]:
    """Tags from the classifiers in ``model_dir`` (one directory per dimension)."""
    predicted = {dimension: TextClassifier.load(model_dir / dimension).predict(texts) for dimension in CLASSIFIED_DIMENSIONS}
    return [{dimension: predicted[dimension][i] for dimension in CLASSIFIED_DIMENSIONS} for i in range(len(texts))]
