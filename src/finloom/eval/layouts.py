"""Benchmark files in their public column layouts, turned into one canonical record per kind.

finloom's lm-eval task templates (``finloom/eval/tasks``) read only canonical records, so a new
public benchmark is a new converter here, not a new task. A record that cannot be converted (no
options, a gap in the option letters, an answer that is not among them, a missing field, a label or
tolerance that is not a number) is returned as a reject with its reason, never dropped silently.

Canonical MCQ: ``question`` (the stem), ``options`` (option texts in letter order), ``letters``,
``answer`` (sorted letters, "ABD" for multi-answer), ``multi``, ``answer_index`` (single answer:
index in ``options``; multi-answer: index in ``subsets``), ``subsets`` (every letter set of size
>= 2, for multi-answer scoring), ``task_name`` (certification or subject), ``second_level``, ``id``.

Layouts:
- ``flame``: FLAME-Cer (``task_name``, ``second_level``, ``question`` with the options inline, on their
  own lines or not (``finloom.eval.mcq``), ``answer``); finloom's bundled MCQ sets use it.
- ``columns``: FinanceIQ, FinEval, C-Eval, CMMLU (``question``/``Question``, ``A``..``D``, ``answer``/``Answer``).
- ``cflue``: CFLUE knowledge (``名称``, ``task``, ``question``, ``choices`` as a dict literal string, ``answer``).
- ``mmlu``: ``question``, ``choices`` (list), ``answer`` (index), ``subject``.
- ``arc``: ``question``, ``choices: {text, label}``, ``answerKey``.
- ``hellaswag``: ``ctx``, ``endings``, ``label`` (a sentence completion: the context is the question).
Calculation (``calc``): ``question``, ``answer`` (number), optional ``unit``, ``tolerance``; GSM8K's
"#### 42" answers are read too. Open generation (``scenario``): ``prompt`` plus any other fields.
"""

from __future__ import annotations

import ast
import itertools
import re

from finloom.eval.mcq import normalize_answer, parse_question

LETTERS = "ABCDEFGH"
MCQ_LAYOUTS = ("flame", "columns", "cflue", "mmlu", "arc", "hellaswag")


class Unconvertible(ValueError):
    """A record the layout cannot turn into a canonical item; the message is the reject reason."""


def _field(record: dict, *names: str):
    for name in names:
        if record.get(name) not in (None, ""):
            return record[name]
    raise Unconvertible(f"missing field {' / '.join(names)}")


def canonical_mcq(question: str, options: list[str], answer: str, task_name: str = "", second_level: str = "",
                  item_id: str = "") -> dict:
    options = [str(option).strip() for option in options]
    if len(options) < 2:
        raise Unconvertible("fewer than two options")
    letters = list(LETTERS[: len(options)])
    if empty := [letter for letter, option in zip(letters, options) if not option]:
        raise Unconvertible(f"option {empty[0]} is empty")  # lm-eval would score "" as the likeliest answer
    answer = normalize_answer(str(answer))
    if not answer or any(letter not in letters for letter in answer):
        raise Unconvertible(f"answer {answer!r} is not among the options {''.join(letters)}")
    multi = len(answer) > 1
    subsets = ["".join(s) for size in range(2, len(letters) + 1) for s in itertools.combinations(letters, size)]
    return {
        "id": str(item_id), "question": question.strip(), "options": options, "letters": letters, "answer": answer,
        "multi": multi, "subsets": subsets,
        "answer_index": subsets.index(answer) if multi else letters.index(answer),
        "task_name": str(task_name), "second_level": str(second_level),
    }


def _flame(record: dict, index: int) -> dict:
    stem, options = parse_question(str(_field(record, "question")))
    if options and not stem:
        raise Unconvertible("no question stem")
    letters = sorted(options)
    return canonical_mcq(stem, [options[letter] for letter in letters], _field(record, "answer"),
                         record.get("task_name", ""), record.get("second_level", ""), record.get("id", index))


def _lettered(options: dict) -> list:
    """The option texts of a letter -> text mapping in letter order; a gap (an empty or missing B before a C) is
    refused rather than closed up, which would give C's text the letter B and score the wrong option."""
    present = sorted(letter for letter, text in options.items() if text not in (None, ""))
    expected = list(LETTERS[: len(present)])
    if present != expected:
        raise Unconvertible(f"option letters {''.join(present)} are not {''.join(expected)}")
    return [options[letter] for letter in present]


def _columns(record: dict, index: int) -> dict:
    options = _lettered({letter: record.get(letter) for letter in LETTERS})
    return canonical_mcq(_field(record, "question", "Question"), options, _field(record, "answer", "Answer"),
                         record.get("subject", record.get("task_name", "")), record.get("second_level", ""),
                         record.get("id", index))


def _cflue(record: dict, index: int) -> dict:
    choices = _field(record, "choices")
    if isinstance(choices, str):
        try:
            choices = ast.literal_eval(choices)
        except (ValueError, SyntaxError) as error:
            raise Unconvertible(f"choices is not a dict literal: {error}") from None
    if not isinstance(choices, dict):
        raise Unconvertible("choices is not a mapping of letters to options")
    return canonical_mcq(_field(record, "question"), _lettered(choices), _field(record, "answer"),
                         record.get("名称", ""), record.get("task", ""), record.get("id", index))


def _mmlu(record: dict, index: int) -> dict:
    choices = _field(record, "choices")
    answer = record.get("answer")
    if isinstance(answer, int) and not 0 <= answer < len(choices):
        raise Unconvertible(f"answer index {answer} is not among the {len(choices)} choices")
    letter = LETTERS[answer] if isinstance(answer, int) else str(answer)
    return canonical_mcq(_field(record, "question"), list(choices), letter, record.get("subject", ""), "",
                         record.get("id", index))


def _arc(record: dict, index: int) -> dict:
    choices = _field(record, "choices")
    labels, texts = list(choices["label"]), list(choices["text"])
    key = str(_field(record, "answerKey"))
    if key not in labels:
        raise Unconvertible(f"answerKey {key!r} is not among the labels {labels}")
    return canonical_mcq(_field(record, "question"), texts, LETTERS[labels.index(key)], "arc", "",
                         record.get("id", index))


def _hellaswag(record: dict, index: int) -> dict:
    label, endings = int(_field(record, "label")), list(_field(record, "endings"))
    if not 0 <= label < len(endings):
        raise Unconvertible(f"label {label} is not among the {len(endings)} endings")
    return canonical_mcq(_field(record, "ctx"), endings, LETTERS[label],
                         record.get("activity_label", "hellaswag"), "", record.get("ind", index))


_GSM8K_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def canonical_calc(record: dict, index: int) -> dict:
    answer = _field(record, "answer")
    if isinstance(answer, str):
        match = _GSM8K_ANSWER.search(answer)
        try:
            answer = float((match.group(1) if match else answer).replace(",", ""))
        except ValueError:
            raise Unconvertible(f"answer {answer[:40]!r} is not a number") from None
    return {"id": str(record.get("id", index)), "question": str(_field(record, "question")), "answer": float(answer),
            "unit": str(record.get("unit", "")), "tolerance": float(record.get("tolerance", 0.005)),
            "task_name": str(record.get("kind", record.get("task_name", "calc")))}


def canonical_scenario(record: dict, index: int) -> dict:
    return {**record, "id": str(record.get("id", index)), "prompt": str(_field(record, "prompt"))}


CONVERTERS = {"flame": _flame, "columns": _columns, "cflue": _cflue, "mmlu": _mmlu, "arc": _arc,
              "hellaswag": _hellaswag, "calc": canonical_calc, "scenario": canonical_scenario}


def convert(records: list[dict], layout: str) -> tuple[list[dict], list[tuple[int, str]]]:
    """Canonical items and (record index, reason) for each record that could not be converted."""
    converter = CONVERTERS[layout]
    items, rejects = [], []
    for index, record in enumerate(records):
        try:
            items.append(converter(record, index))
        except (ValueError, KeyError, TypeError, IndexError) as error:  # ValueError: int("x"), float("1%")
            rejects.append((index, str(error) if isinstance(error, Unconvertible) else f"{type(error).__name__}: {error}"))
    return items, rejects
