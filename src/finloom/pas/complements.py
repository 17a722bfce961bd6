"""Complements written by the teacher from per-category golden examples, critiqued, and regenerated when wrong.

Each round asks the teacher for a complement of every prompt still without one; the rules and then (with
``critique.method: teacher``) the teacher's critique judge it; a rejected one is asked for again, up to
``generation.attempts`` times. Every rejection is kept with its attempt, criterion and reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from finloom.files import read_records
from finloom.llm.client import LLMRequestRejected
from finloom.llm.judge import ask_judge
from finloom.pas.critique import Rejection, critique_prompt, parse_critique, rule_problem
from finloom.recipe import PASCritique, PASGeneration

CRITIQUE_MAX_TOKENS = 128
GENERATION_PROMPT = """Write a complement for the user's prompt: about 30 words of guidance that will be appended to \
the prompt so that an assistant answers it better (the response requirements of its scenario, optional extensions \
of the intent, format constraints). Do not answer the prompt. Write in the prompt's language.{keyword_rule}
Reply with the complement only.

{examples}Prompt: {prompt}{keywords}
Complement:"""
_LABEL = re.compile(r"^\s*(?:complement|补充|补充说明)\s*[:：]\s*", re.IGNORECASE)


@dataclass
class PASItem:
    """A prompt to write a complement for."""

    prompt: str
    category: str
    keywords: list[str] | None = None


@dataclass
class Outcome:
    complement: str | None = None
    attempts: int = 0
    rejections: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"complement": self.complement, "attempts": self.attempts, "rejections": self.rejections}


def load_fewshot(path) -> dict[str, list[dict]]:
    """category -> golden examples (prompt, complement, lang), in file order."""
    examples: dict[str, list[dict]] = {}
    for record in read_records(path, ("category", "prompt", "complement")):
        examples.setdefault(record["category"], []).append(record)
    return examples


def generation_prompt(item: PASItem, fewshot: dict[str, list[dict]], shots: int, language: str) -> str:
    """The teacher's request: the category's examples (those in the prompt's language first), then the prompt."""
    pool = fewshot.get(item.category) or [e for examples in fewshot.values() for e in examples]
    chosen = sorted(pool, key=lambda e: e.get("lang") != language)[:shots]
    examples = "".join(f"Prompt: {e['prompt']}\nComplement: {e['complement']}\n\n" for e in chosen)
    return GENERATION_PROMPT.format(
        examples=examples, prompt=item.prompt,
        keyword_rule=" Mention nothing beyond the retrieved keywords." if item.keywords else "",
        keywords=f"\nRetrieved keywords: {', '.join(item.keywords)}" if item.keywords else "")


def parse_complement(reply: str) -> str | None:
    """The complement in a reply: its first paragraph, without a 'Complement:' label or quotes; None if empty."""
    text = _LABEL.sub("", reply.strip()).split("\n\n")[0].strip().strip('"“”').strip()
    return " ".join(text.split()) or None


def write_complements(client, items: list[PASItem], languages: list[str], fewshot: dict[str, list[dict]],
                      generation: PASGeneration, critique: PASCritique) -> list[Outcome]:
    """One outcome per item: the accepted complement (None if every attempt was rejected) and every rejection."""
    outcomes = [Outcome() for _ in items]
    pending = list(range(len(items)))
    for attempt in range(1, generation.attempts + 1):
        if not pending:
            break
        replies = client.chat_many(
            [[{"role": "user", "content": generation_prompt(items[i], fewshot, generation.shots, languages[i])}]
             for i in pending], keep_rejected=True, max_tokens=generation.max_tokens, temperature=generation.temperature)
        candidates: dict[int, str] = {}
        for i, reply in zip(pending, replies):
            outcomes[i].attempts = attempt
            text = None if isinstance(reply, LLMRequestRejected) else parse_complement(reply)
            problem = (Rejection("no_complement", "parser", f"the reply held no complement: {str(reply)[:200]!r}")
                       if text is None else rule_problem(items[i].prompt, text, critique, items[i].keywords))
            if problem:
                outcomes[i].rejections.append(problem.as_dict(attempt, text))
            else:
                candidates[i] = text
        if critique.method == "teacher" and candidates:
            order = list(candidates)
            verdicts = ask_judge(client, [critique_prompt(items[i].prompt, candidates[i], items[i].keywords) for i in order],
                                 lambda _, reply: parse_critique(reply), critique.retries, CRITIQUE_MAX_TOKENS)
            for i, verdict in zip(order, verdicts):
                if verdict.parsed is True:
                    outcomes[i].complement = candidates[i]
                    continue
                problem = verdict.parsed or Rejection("unjudged", "teacher", "no critique reply parsed: "
                                                      f"{verdict.replies[-1][:200]!r}")
                outcomes[i].rejections.append(problem.as_dict(attempt, candidates[i]))
        else:
            for i, text in candidates.items():
                outcomes[i].complement = text
        pending = [i for i in pending if outcomes[i].complement is None]
    return outcomes
