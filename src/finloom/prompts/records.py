"""Prompt pools as users bring them: conversations in any chat layout, or ``{prompt, response}`` records.

A prompt is a conversation up to its last user turn; a record that ends with an assistant turn brings
its response too (used by ``responses.method: given``), and a ``quality`` field (0-1) is an annotation
``quality.method: annotations`` reads. Malformed records go to the rejects file with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finloom.files import atomic_write_jsonl
from finloom.llm.chat_data import Unreadable, message_problem, read_source, to_messages
from finloom.recipe import ChatSource


@dataclass
class Prompt:
    id: str
    messages: list[dict]
    """The conversation up to and including the last user turn."""
    response: str | None = None
    quality: float | None = None
    keywords: list[str] | None = None
    """Retrieved keywords a RAG prompt came with (PAS keeps its complement within them)."""

    @property
    def text(self) -> str:
        """What tagging, embedding and judging read: the user turns, in order."""
        return "\n".join(message["content"] for message in self.messages if message["role"] == "user")


def to_prompt(record: dict, layout: str, fallback_id: str) -> Prompt:
    if isinstance(record.get("prompt"), str) and not any(key in record for key in ("messages", "conversations", "instruction")):
        messages = [{"role": "user", "content": record["prompt"]}]
        if record.get("response") is not None:
            if not isinstance(record["response"], str):
                raise Unreadable("response must be a string")
            messages.append({"role": "assistant", "content": record["response"]})
    else:
        messages = to_messages(record, layout)
    problem = message_problem(messages, must_end_with_assistant=False)
    if problem:
        raise Unreadable(problem)
    response = None
    if messages[-1]["role"] == "assistant":
        response, messages = messages[-1]["content"], messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise Unreadable("no user turn to answer (a prompt ends with a user message)")
    quality = record.get("quality")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 <= quality <= 1):
        raise Unreadable(f"quality must be a number from 0 to 1, got {quality!r}")
    keywords = record.get("keywords")
    if keywords is not None and (not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords)):
        raise Unreadable(f"keywords must be a list of non-empty strings, got {keywords!r}")
    record_id = record.get("id")
    return Prompt(str(record_id) if record_id not in (None, "") else fallback_id, messages, response,
                  None if quality is None else float(quality), keywords or None)


def load_prompts(sources: list[ChatSource], resolve, rejects_path: Path) -> list[Prompt]:
    """Every usable prompt of ``sources`` in order; a record that is none, or repeats an id, is a reject."""
    prompts, rejects, seen = [], [], set()
    for number, source in enumerate(sources):
        for index, (where, record) in enumerate(read_source(source, resolve, rejects)):
            try:
                prompt = to_prompt(record, source.format, f"source{number}-{index}")
                if prompt.id in seen:
                    raise Unreadable(f"id {prompt.id!r} repeats an earlier record's")
            except Unreadable as error:
                rejects.append({"file": where, "id": record.get("id"), "reason": str(error)})
                continue
            seen.add(prompt.id)
            prompts.append(prompt)
    atomic_write_jsonl(rejects_path, rejects)
    return prompts
