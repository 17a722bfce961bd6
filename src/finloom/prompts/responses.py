"""Responses for the selected prompts: given, or sampled from several models and filtered.

``sample``: each model (the teacher, a model of this run, a local directory) writes ``samples``
candidates per prompt at the recipe's temperature and top-p; with ``filter: judge`` the teacher
rates each 1-10 and the best is kept, and a prompt whose best scores below ``min_score`` is
dropped; with ``critique_rewrite`` the teacher critiques the chosen answer and writes a better
one. Refusals are recognised by their wording and capped at ``refusal_cap`` of the set.
Instruction back-translation turns a good existing text into a prompt it answers.
"""

from __future__ import annotations

import re

from finloom.llm.judge import ask_judge, reply_json

REFUSAL = re.compile(r"^\s*(?:I'm sorry|I am sorry|Sorry|I can(?:no|')t|I cannot|I won't|As an AI)|"
                     r"^\s*(?:抱歉|对不起|很遗憾)|我(?:无法|不能)(?:提供|回答|帮助)", re.IGNORECASE)
REWRITE_PROMPT = """Critique the assistant's response to the request below (accuracy, completeness, clarity, following the instructions), then write an improved response in the request's language.

Request:
<<<
{prompt}
>>>

Response:
<<<
{response}
>>>

Reply with only a JSON object: {{"critique": "...", "rewrite": "..."}}"""
BACK_TRANSLATION_PROMPT = """Below is a text. Write the request a user would make for which this text is an excellent answer. Write it in the text's language, as the user would, without mentioning that a text exists.

Text:
<<<
{text}
>>>

Reply with only the request."""


def is_refusal(response: str) -> bool:
    return bool(REFUSAL.search(response[:200]))


def parse_rewrite(reply: str) -> str | None:
    payload = reply_json(reply)
    rewrite = payload.get("rewrite") if payload else None
    return rewrite.strip() if isinstance(rewrite, str) and rewrite.strip() else None


def parse_request(reply: str, max_chars: int = 2000) -> str | None:
    """The request, without the quotes or a 'Request:' label models like to add; None if empty or too long."""
    text = re.sub(r"^\s*(?:request|user request|请求|用户请求)\s*[:：]\s*", "", reply.strip(), flags=re.IGNORECASE)
    text = text.strip().strip('"“”「」').strip()
    return text if text and len(text) <= max_chars else None


def rewrite(client, prompts: list[str], responses: list[str], retries: int) -> list[str | None]:
    verdicts = ask_judge(client, [REWRITE_PROMPT.format(prompt=p, response=r) for p, r in zip(prompts, responses)],
                         lambda _, reply: parse_rewrite(reply), retries, max_tokens=1024)
    return [verdict.parsed for verdict in verdicts]


def back_translate(client, texts: list[str], retries: int) -> list[str | None]:
    verdicts = ask_judge(client, [BACK_TRANSLATION_PROMPT.format(text=text) for text in texts],
                         lambda _, reply: parse_request(reply), retries, max_tokens=256)
    return [verdict.parsed for verdict in verdicts]


def cap_refusals(kept: list[str], refusal: dict[str, bool], score: dict[str, float], cap: float) -> list[str]:
    """The refusals to drop so that at most ``cap`` of what stays refuses: the lowest-scored first."""
    refusals = sorted((i for i in kept if refusal[i]), key=lambda i: (score.get(i, 0.0), i))
    others = len(kept) - len(refusals)
    allowed = int(cap * others / (1 - cap)) if cap < 1 else len(refusals)
    return refusals[: max(0, len(refusals) - allowed)]
