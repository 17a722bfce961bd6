"""LLM-judge quality scoring of documents on four dimensions, through the one teacher/judge client.

The judge sees the start of a document and answers one line per dimension ("readability: 4"); a
reply is parsed leniently (JSON, "name: n", "name = n", full-width colons, "4/5") because judges
of every size phrase it differently. A reply missing a dimension is asked again, up to
``retries`` times; a document whose every reply failed is counted (``judge_unparsed``) and kept or
removed as the recipe says, never dropped silently. Every prompt's reply is kept in
``metadata["judge"]`` with the scores, so a person can audit the judge.
"""

from __future__ import annotations

import json
import re

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from finloom.llm.judge import ask_judge
from finloom.recipe import ClientSection

JUDGE_PROMPT = """You are a data-quality reviewer for training a financial language model.
Rate the document below on each dimension from 1 (very poor) to 5 (excellent):
{dimension_lines}

Answer with exactly one line per dimension, in this form:
{answer_lines}

Document:
\"\"\"
{document}
\"\"\""""

DIMENSION_HELP = {
    "readability": "fluent, well-formed language that a reader can follow",
    "coherence": "ideas connect logically; no boilerplate fragments or shuffled text",
    "informativeness": "teaches facts, reasoning or domain knowledge rather than filler",
    "safety": "free of toxic, harmful, illegal or privacy-violating content (5 = fully safe)",
}


def judge_prompt(text: str, dimensions: list[str], max_chars: int) -> str:
    excerpt = text[:max_chars] + (" ..." if len(text) > max_chars else "")
    return JUDGE_PROMPT.format(
        dimension_lines="\n".join(f"- {name}: {DIMENSION_HELP.get(name, name)}" for name in dimensions),
        answer_lines="\n".join(f"{name}: <1-5>" for name in dimensions),
        document=excerpt,
    )


def parse_scores(reply: str, dimensions: list[str]) -> dict[str, int] | None:
    """Scores 1-5 for every dimension, or None if any is missing or out of range."""
    scores: dict[str, int] = {}
    json_match = re.search(r"\{.*\}", reply, re.DOTALL)
    if json_match:
        try:
            payload = json.loads(json_match.group())
            scores = {str(k).lower(): v for k, v in payload.items() if isinstance(v, (int, float))}
        except json.JSONDecodeError:
            scores = {}
    parsed = {}
    for name in dimensions:
        value = scores.get(name)
        if value is None:
            match = re.search(rf"{re.escape(name)}[\s*\"']*[:=：]?[\s*\"']*(\d+(?:\.\d+)?)", reply, re.IGNORECASE)
            value = float(match.group(1)) if match else None
        if value is None or not 1 <= value <= 5:
            return None
        parsed[name] = int(round(value))
    return parsed


class LLMJudgeScorer(BaseFilter):
    """Score documents with the judge LLM; with ``min_score``, drop those whose mean score is below it.

    Writes ``metadata["judge_scores"]`` (dimension -> 1..5), ``metadata["judge_mean"]`` and
    ``metadata["judge"]`` (raw replies). Requests go out ``batch_size`` at a time through the
    client's concurrency limit.
    """

    name = "⚖️ LLM judge"

    def __init__(self, client: ClientSection, dimensions: list[str], min_score: float | None = 3.0,
                 max_chars: int = 3000, retries: int = 2, unparsed: str = "keep", max_tokens: int = 128,
                 batch_size: int = 16, exclusion_writer=None):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.client_config = client
        self.dimensions = list(dimensions)
        self.min_score = min_score
        self.max_chars = max_chars
        self.retries = retries
        self.unparsed = unparsed
        self.max_tokens = max_tokens
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def _llm(self):
        if self._client is None:
            from finloom.llm.client import LLMClient

            self._client = LLMClient(self.client_config)
        return self._client

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        prompts = [judge_prompt(doc.text, self.dimensions, self.max_chars) for doc in batch]
        verdicts = ask_judge(self._llm(), prompts, lambda _, reply: parse_scores(reply, self.dimensions),
                             self.retries, self.max_tokens)
        retried = sum(verdict.retries for verdict in verdicts)
        if retried:
            self.stat_update("judge_retries", value=retried)
        return [self._verdict(doc, verdict.parsed, verdict.replies) for doc, verdict in zip(batch, verdicts)]

    def _verdict(self, doc: Document, scores: dict | None, replies: list[str]) -> bool | tuple[bool, str]:
        doc.metadata["judge"] = replies
        if scores is None:
            self.stat_update("judge_unparsed")
            doc.metadata["judge_scores"] = None
            doc.metadata["judge_mean"] = None
            return True if self.unparsed == "keep" else (False, "judge_unparsed")
        mean = sum(scores.values()) / len(scores)
        doc.metadata["judge_scores"] = scores
        doc.metadata["judge_mean"] = round(mean, 3)
        self.stat_update("judge_scored")
        self.stat_update("judge_mean", value=mean)
        if self.min_score is not None and mean < self.min_score:
            return False, "judge_low_score"
        return True
