"""Is a complement right for its prompt? The report's five criteria, by rules where they can be computed and by
the teacher for all five.

A complement is wrong if it (1) departs from or contradicts the prompt's intent (in RAG mode: goes beyond the
retrieved keywords), (2) piles material onto an already complex prompt, (3) answers instead of supplementing,
(4) makes excessive demands, (5) is in another language. The rules catch what text statistics show: another
language (5), a long addition to a long prompt (2), more words or constraint kinds than a complement needs (4),
numbers the prompt does not contain (3: a complement that computes or states figures is answering; counts of
words, points or sentences are format, not answers), and, with keywords, numbers or names outside them (1).
Each rejection keeps its criterion and reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finloom.llm.judge import reply_json
from finloom.pas.format import language, word_count
from finloom.prompts.tags import constraint_kinds
from finloom.recipe import PASCritique

CRITERIA = {1: "intent", 2: "overload", 3: "answers", 4: "excessive", 5: "language"}
"""The report's criteria by number, as rejections name them."""
OUTSIDE_KEYWORDS = "outside_keywords"
"""Criterion 1 in RAG mode, found by the rules: the complement brings in what the keywords do not hold."""

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_FORMAT_COUNT = re.compile(r"(\d+)\s*(?:-\s*\d+\s*)?(?:words?|characters?|sentences?|paragraphs?|points?|bullets?|"
                           r"items?|lines?|steps?|examples?|reasons?|options?|questions?|字|条|点|句|段|个|项|步)",
                           re.IGNORECASE)
_NAME = re.compile(r"(?<![.!?:;]\s)(?<!^)\b[A-Z][A-Za-z]{2,}\b")

CRITIQUE_PROMPT = """You check a complement: short guidance appended to a user's prompt so that an assistant answers \
it better. The complement is WRONG if it
1. departs from or contradicts the prompt's intent{keyword_rule}
2. adds too much to a prompt that is already complex
3. answers the prompt, or part of it, instead of adding guidance
4. makes excessive demands (too many or unreasonable requirements)
5. is written in another language than the prompt

Prompt:
<<<
{prompt}
>>>{keywords}
Complement:
<<<
{complement}
>>>

Reply with only a JSON object: {{"ok": true}} if the complement is right, else {{"ok": false, "criterion": <1-5>, \
"reason": "<one sentence>"}}."""


@dataclass(frozen=True)
class Rejection:
    criterion: str
    by: str
    """rules, teacher (its critique), or parser (the teacher's reply held no complement)."""
    reason: str

    def as_dict(self, attempt: int, complement: str | None) -> dict:
        return {"attempt": attempt, "criterion": self.criterion, "by": self.by, "reason": self.reason,
                "complement": complement}


def _new_numbers(complement: str, allowed: str) -> list[str]:
    format_counts = {m.group(1) for m in _FORMAT_COUNT.finditer(complement)}
    present = set(_NUMBER.findall(allowed))
    return [n for n in _NUMBER.findall(complement) if n not in present and n not in format_counts]


def rule_problem(prompt: str, complement: str, settings: PASCritique, keywords: list[str] | None = None) -> Rejection | None:
    """The first criterion the rules find broken, or None."""
    wanted, written = language(prompt), language(complement)
    if wanted != written:
        return Rejection(CRITERIA[5], "rules", f"the prompt is in {wanted}, the complement in {written}")
    words, prompt_words = word_count(complement), word_count(prompt)
    if prompt_words >= settings.complex_prompt_words and words > settings.complex_max_words:
        return Rejection(CRITERIA[2], "rules", f"{words:.0f} words added to a prompt of {prompt_words:.0f} "
                                               f"(at most {settings.complex_max_words} for a prompt this long)")
    if words > settings.max_words:
        return Rejection(CRITERIA[4], "rules", f"{words:.0f} words (at most {settings.max_words})")
    kinds = constraint_kinds(complement)
    if len(kinds) > settings.max_constraints:
        return Rejection(CRITERIA[4], "rules", f"{len(kinds)} kinds of constraint ({', '.join(kinds)}; at most "
                                               f"{settings.max_constraints})")
    new = _new_numbers(complement, prompt + " " + " ".join(keywords or ()))
    if new:
        return Rejection(CRITERIA[3], "rules", f"states numbers the prompt does not hold ({', '.join(new[:3])})")
    if keywords:
        allowed = (prompt + " " + " ".join(keywords)).lower()
        outside = [name for name in _NAME.findall(complement) if name.lower() not in allowed]
        if outside:
            return Rejection(OUTSIDE_KEYWORDS, "rules", f"names what neither the keywords nor the prompt hold "
                                                        f"({', '.join(outside[:3])})")
    return None


def critique_prompt(prompt: str, complement: str, keywords: list[str] | None = None) -> str:
    return CRITIQUE_PROMPT.format(
        prompt=prompt, complement=complement,
        keyword_rule=", or brings in anything beyond the retrieved keywords" if keywords else "",
        keywords=f"\nRetrieved keywords: {', '.join(keywords)}" if keywords else "")


def parse_critique(reply: str) -> Rejection | bool | None:
    """True for an accepted complement, a ``Rejection`` naming the criterion, None for a reply that is neither."""
    payload = reply_json(reply)
    if payload is None or not isinstance(payload.get("ok"), bool):
        return None
    if payload["ok"]:
        return True
    criterion = payload.get("criterion")
    if isinstance(criterion, str) and criterion.strip().isdigit():
        criterion = int(criterion)
    if criterion not in CRITERIA or isinstance(criterion, bool):
        return None
    reason = payload.get("reason")
    return Rejection(CRITERIA[criterion], "teacher", reason if isinstance(reason, str) and reason else "(no reason)")
