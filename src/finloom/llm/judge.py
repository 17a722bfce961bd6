"""The one way finloom asks an LLM judge: ask, parse, ask again, then count the failure.

Every judge (the data judge, the scenario judge, and the preference, critique, rubric and
prompt-quality judges of the alignment stages) sends prompts through the teacher client and parses
the replies with its own parser. A reply that does not parse is asked again, up to ``retries``
times, at a higher temperature so a re-ask can come out differently; a prompt whose every reply
failed is returned as failed, with all its replies, for the caller to count. A prompt the endpoint
refuses (HTTP 400: too long for the judge's context) is a failure at once, its reason kept as a
reply; an endpoint no request can reach stops the stage with a clear error. Nothing is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finloom.llm.client import LLMRequestRejected

RETRY_TEMPERATURE = 0.7
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def reply_json(reply: str) -> dict | None:
    """The JSON object in a judge's reply, as models write it: alone, inside a ```json fence, or after some
    reasoning; None if there is none."""
    match = _OBJECT.search(reply)
    if not match:
        return None
    try:
        payload = json.loads(match.group())
    except json.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


@dataclass
class Verdict:
    replies: list[str]
    """Every raw reply, in the order they came (the first at temperature 0)."""
    parsed: Any | None
    """The parser's result for the last reply; None when no reply parsed."""

    @property
    def failed(self) -> bool:
        return self.parsed is None

    @property
    def retries(self) -> int:
        return len(self.replies) - 1


def ask_judge(client, prompts: list[str], parse: Callable[[int, str], Any | None], retries: int,
              max_tokens: int) -> list[Verdict]:
    """One verdict per prompt, in order. ``parse(index, reply)`` returns the parsed judgement or None."""
    verdicts = [Verdict([], None) for _ in prompts]
    pending = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not pending:
            break
        replies = client.chat_many([[{"role": "user", "content": prompts[i]}] for i in pending], keep_rejected=True,
                                   max_tokens=max_tokens, temperature=0.0 if attempt == 0 else RETRY_TEMPERATURE)
        refused = set()
        for index, reply in zip(pending, replies):
            if isinstance(reply, LLMRequestRejected):  # e.g. longer than the judge's context: asking again won't help
                verdicts[index].replies.append(f"<refused by the judge: {reply}>")
                refused.add(index)
                continue
            verdicts[index].replies.append(reply)
            verdicts[index].parsed = parse(index, reply)
        pending = [i for i in pending if verdicts[i].parsed is None and i not in refused]
    return verdicts
