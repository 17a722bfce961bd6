"""Read conversation and preference datasets as users bring them; malformed records go to a rejects file.

Sources: JSONL, JSON (an array, as LLaMA-Factory's ``alpaca_data.json``), Parquet, a folder written by
``datasets.save_to_disk``, or ``hub:ORG/NAME`` (read only when online). Layouts, per source (``format``;
``auto`` decides per record from its fields):

- ``messages``: ``[{role, content}, ...]``, as the OpenAI API and TRL write them;
- ``sharegpt``: ``conversations: [{from, value}]`` (roles human / gpt / system; ``role`` / ``content``
  too), an optional top-level ``system``, as LLaMA-Factory and axolotl read it;
- ``alpaca``: ``instruction``, ``input``, ``output``, optional ``system`` and ``history`` (earlier
  ``[prompt, response]`` pairs).

Preferences: ``prompt`` / ``chosen`` / ``rejected`` as message lists or strings; TRL's implicit-prompt
form (full ``chosen`` and ``rejected`` conversations sharing their first messages); and scores
(``score_chosen`` / ``score_rejected``, UltraFeedback's), kept for the reward model. Every layout
becomes the same rows: a ShareGPT and an Alpaca copy of one dataset train identically.
"""

from __future__ import annotations

import json
from pathlib import Path

from finloom.errors import BadInput
from finloom.files import atomic_write_jsonl, display_name, read_records
from finloom.recipe import ChatSource

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "system": "system"}


class Unreadable(ValueError):
    """A record that is no conversation in the layout it was read as; the message is the reject reason."""


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


def _sharegpt(record: dict) -> list[dict]:
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise Unreadable("sharegpt: conversations must be a list")
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise Unreadable(f"sharegpt: turn {index} must be an object")
        # Either spelling; a saved dataset fills the other one's fields with None (Arrow unifies the schema)
        speaker = turn.get("from") or turn.get("role")
        text = turn.get("value") if turn.get("value") is not None else turn.get("content")
        if speaker not in SHAREGPT_ROLES:
            raise Unreadable(f"sharegpt: turn {index} is from {speaker!r}; expected one of {sorted(SHAREGPT_ROLES)}")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": text})
    return messages


def _alpaca(record: dict) -> list[dict]:
    instruction, extra, output = record.get("instruction"), record.get("input") or "", record.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise Unreadable("alpaca: instruction and output must be strings")
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for pair in record.get("history") or []:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise Unreadable("alpaca: history must hold [prompt, response] pairs")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def to_messages(record: dict, layout: str = "auto") -> list[dict]:
    """A record's conversation as ``[{role, content}]``, from the layout given or detected."""
    if layout == "auto":
        layout = ("messages" if "messages" in record else "sharegpt" if "conversations" in record
                  else "alpaca" if "instruction" in record else None)
        if layout is None:
            raise Unreadable("no conversation: expected messages, conversations (ShareGPT) or instruction / output "
                             "(Alpaca)")
    if layout == "messages":
        return record.get("messages")
    return _sharegpt(record) if layout == "sharegpt" else _alpaca(record)


def _as_messages(value, role: str) -> list[dict]:
    """A preference field: a message list, or a plain string (TRL's standard, non-conversational form)."""
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def to_preference(record: dict) -> dict:
    """``prompt`` / ``chosen`` / ``rejected`` message lists (and scores), from explicit or implicit prompts."""
    chosen, rejected = _as_messages(record.get("chosen"), "assistant"), _as_messages(record.get("rejected"), "assistant")
    if "prompt" in record:
        prompt = _as_messages(record["prompt"], "user")
    else:  # TRL's implicit prompt: the messages both conversations start with
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise Unreadable("chosen and rejected must be conversations when there is no prompt")
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise Unreadable("no prompt, and chosen and rejected share no first message")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    for field in ("score_chosen", "score_rejected"):
        if field in record:
            if isinstance(record[field], bool) or not isinstance(record[field], (int, float)):
                raise Unreadable(f"{field} must be a number")
            row[field] = record[field]
    return row


def _preference_problem(row: dict) -> str | None:
    for field, must_end in (("prompt", False), ("chosen", True), ("rejected", True)):
        problem = message_problem(row[field], must_end)
        if problem:
            return f"{field}: {problem}"
    return None


def read_source(source: ChatSource, resolve, rejects: list[dict]) -> list[tuple[str, dict]]:
    """(where, record) for every record of ``source``; unreadable lines go to ``rejects``."""
    if source.on_hub:
        return _dataset_records(source, source.path.removeprefix("hub:"))
    path = resolve(source.path)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return _dataset_records(source, path)
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadInput(f"{source.path}: not a JSON array of records ({error})") from None
        if not isinstance(records, list):
            raise BadInput(f"{source.path}: a .json source must hold an array of records")
        return [(f"{display_name(path)}:{index + 1}", r) for index, r in enumerate(records)]
    return [(display_name(path), record) for record in read_records(path, (), rejects)]


def _dataset_records(source: ChatSource, where) -> list[tuple[str, dict]]:
    import datasets

    try:
        if isinstance(where, Path):
            loaded = datasets.load_from_disk(str(where))
            loaded = loaded[source.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            loaded = datasets.load_dataset(where, source.name, split=source.split)
    except Exception as error:  # offline, unknown dataset or split: the user's to fix
        raise BadInput(f"datasets: cannot read {source.path} (split {source.split!r}): {error}") from None
    return [(f"{source.path}:{index + 1}", dict(record)) for index, record in enumerate(loaded)]


def _load(sources: list[ChatSource], resolve, convert, rejects_path: Path, stage: str, prepare=None) -> list[dict]:
    """Every record of ``sources`` through ``convert`` (a layout to rows) and ``prepare`` (to training rows); a
    ValueError from either, or a problem the check finds, makes the record a reject with its reason."""
    rows, rejects = [], []
    for source in sources:
        for where, record in read_source(source, resolve, rejects):
            try:
                row = convert(record, source)
                if prepare is not None:
                    row = prepare(row)
            except ValueError as error:  # Unreadable, a template mismatch, a problem the check found
                rejects.append({"file": where, "id": record.get("id"), "reason": str(error)})
                continue
            rows.append(row)
    atomic_write_jsonl(rejects_path, rejects)
    if not rows:
        raise BadInput(f"{stage}.datasets: no usable records ({len(rejects)} rejected, see {rejects_path})")
    return rows


def _conversation(record: dict, source: ChatSource) -> dict:
    messages = to_messages(record, source.format)
    problem = message_problem(messages)
    if problem:
        raise Unreadable(problem)
    return {"messages": messages}


def _pair(record: dict, source: ChatSource) -> dict:
    row = to_preference(record)
    problem = _preference_problem(row)
    if problem:
        raise Unreadable(problem)
    return dict(row, source=source.path)


def load_conversations(sources: list[ChatSource], resolve, rejects_path: Path, stage: str, prepare=None) -> list[dict]:
    """Conversations as ``{"messages": [...]}``, each turned into a training row by ``prepare`` when given."""
    return _load(sources, resolve, _conversation, rejects_path, stage, prepare)


def load_preferences(sources: list[ChatSource], resolve, rejects_path: Path, stage: str,
                     keep_scores: bool = False) -> list[dict]:
    """Preference pairs as ``prompt`` / ``chosen`` / ``rejected`` message lists; with ``keep_scores``, the absolute
    scores of the pairs that have them too, and each pair's ``source`` (its recipe path)."""
    rows = _load(sources, resolve, _pair, rejects_path, stage)
    return rows if keep_scores else [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in rows]


def read_prompts(sources: list[ChatSource], resolve, fields: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Prompts as ``{id, messages, ...fields}`` (the record's task fields it has), from TRL's prompt-only layout
    or any conversation layout; a record ending with an assistant turn gives that turn as its ``golden`` answer
    (unless it has one). Malformed records are rejects with their reason."""
    prompts, rejects = [], []
    for source in sources:
        for where, record in read_source(source, resolve, rejects):
            try:  # TRL's prompt-only layout (``prompt``: messages or a string), or any conversation layout
                messages = (_as_messages(record["prompt"], "user") if "prompt" in record and source.format == "auto"
                            else to_messages(record, source.format))
            except ValueError as error:
                rejects.append({"file": where, "id": record.get("id"), "reason": str(error)})
                continue
            problem = message_problem(messages, must_end_with_assistant=False)
            if problem:
                rejects.append({"file": where, "id": record.get("id"), "reason": problem})
                continue
            golden = {key: record[key] for key in fields if record.get(key) is not None}
            if messages[-1]["role"] == "assistant":
                golden.setdefault("golden", messages[-1]["content"])
                messages = messages[:-1]
            if not messages or messages[-1]["role"] != "user":
                rejects.append({"file": where, "id": record.get("id"), "reason": "no user turn to answer"})
                continue
            prompts.append({"id": str(record.get("id") or where), "messages": messages, **golden})
    return prompts, rejects


def _labelled(record: dict, source: ChatSource) -> dict:
    """KTO's unpaired answers: a record with ``completion`` and a boolean ``label``, or a preference pair read as
    a good (chosen) and a bad (rejected) answer to the same prompt."""
    if "completion" not in record:
        pair = _pair(record, source)
        return {"answers": [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                            {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]}
    if not isinstance(record.get("label"), bool):
        raise Unreadable("label must be true (a good answer) or false (a bad one)")
    row = {"prompt": _as_messages(record.get("prompt"), "user"),
           "completion": _as_messages(record["completion"], "assistant"), "label": record["label"]}
    for field, must_end in (("prompt", False), ("completion", True)):
        problem = message_problem(row[field], must_end)
        if problem:
            raise Unreadable(f"{field}: {problem}")
    return {"answers": [row]}


def load_labelled_answers(sources: list[ChatSource], resolve, rejects_path: Path, stage: str) -> list[dict]:
    """Answers labelled good or bad as ``prompt`` / ``completion`` message lists and ``label`` (TRL's unpaired
    preference layout), from unpaired records or from preference pairs."""
    return [answer for row in _load(sources, resolve, _labelled, rejects_path, stage) for answer in row["answers"]]
