"""Read conversation and preference datasets, sending malformed records to a rejects file.

The layouts are the ones TRL and the OpenAI API use: ``messages`` = [{role, content}, ...] for
SFT; ``prompt`` / ``chosen`` / ``rejected`` message lists (optionally ``score_chosen`` /
``score_rejected``) for preferences.
"""

from __future__ import annotations

from pathlib import Path

from finloom.errors import BadInput
from finloom.files import atomic_write_jsonl, read_records
from finloom.recipe import Source

ROLES = {"system", "user", "assistant"}


def message_problem(messages, must_end_with_assistant: bool = True) -> str | None:
    """Why a message list is unusable, or None if it is fine."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            return f"message {index} must be an object with role and content"
        if message.get("role") not in ROLES:
            return f"message {index} has role {message.get('role')!r}; expected one of {sorted(ROLES)}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f"message {index} has empty or non-string content"
    if must_end_with_assistant and messages[-1]["role"] != "assistant":
        return "last message must be from the assistant"
    return None


def _load(sources: list[Source], resolve, fields: tuple[str, ...], check, rejects_path: Path, stage: str,
          prepare=None) -> list[dict]:
    """Records that pass ``check``, each through ``prepare`` (which may raise ValueError: a reject too)."""
    rows, rejects = [], []
    for source in sources:
        path = resolve(source.path)
        for record in read_records(path, fields, rejects):
            problem = check(record)
            row = {field: record[field] for field in record if field in fields or field.startswith("score_")}
            if not problem and prepare is not None:
                try:
                    row = prepare(row)
                except ValueError as error:
                    problem = str(error)
            if problem:
                rejects.append({"file": str(path), "id": record.get("id"), "reason": problem})
            else:
                rows.append(row)
    atomic_write_jsonl(rejects_path, rejects)
    if not rows:
        raise BadInput(f"{stage}.datasets: no usable records ({len(rejects)} rejected, see {rejects_path})")
    return rows


def load_conversations(sources: list[Source], resolve, rejects_path: Path, stage: str, prepare=None) -> list[dict]:
    """Conversations (``messages``), each turned into a training row by ``prepare`` when given."""
    return _load(sources, resolve, ("messages",), lambda r: message_problem(r["messages"]), rejects_path, stage,
                 prepare)


def _preference_problem(record: dict) -> str | None:
    for field, must_end in (("prompt", False), ("chosen", True), ("rejected", True)):
        problem = message_problem(record[field], must_end)
        if problem:
            return f"{field}: {problem}"
    for field in ("score_chosen", "score_rejected"):
        if field in record and not isinstance(record[field], (int, float)):
            return f"{field} must be a number"
    return None


def load_preferences(sources: list[Source], resolve, rejects_path: Path, stage: str) -> list[dict]:
    rows = _load(sources, resolve, ("prompt", "chosen", "rejected"), _preference_problem, rejects_path, stage)
    return [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in rows]
