"""Multiple-choice questions in the FLAME-Cer layout, scored by log-likelihood.

A record is ``task_name``, ``second_level``, ``question`` (stem with options inline, "A.xxx" or
full-width "A．xxx" lines) and ``answer`` (one letter, or several for multi-answer questions).
Single-answer questions are scored cloze-style: the option text after the stem, log-likelihood
normalised by its length in characters (lm-eval's ``acc_norm``), because a small base model
knows contents better than letters. Multi-answer questions enumerate every letter set of size
>= 2 after the full question and pick the most likely (exact set match).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch

OPTION_LINE = re.compile(r"^\s*([A-H])\s*[\.．、:：)）]\s*(.+?)\s*$")


@dataclass(frozen=True)
class MCQ:
    stem: str
    options: dict[str, str]
    answer: str
    task_name: str = ""
    second_level: str = ""

    @property
    def multi(self) -> bool:
        return len(self.answer) > 1


def parse_question(question: str) -> tuple[str, dict[str, str]]:
    """Split a FLAME-style question into its stem and its lettered options."""
    stem_lines, options = [], {}
    for line in question.split("\n"):
        match = OPTION_LINE.match(line)
        if match and (options or len(stem_lines) > 0):
            options[match.group(1)] = match.group(2)
        elif options:
            last = list(options)[-1]
            options[last] += " " + line.strip()
        else:
            stem_lines.append(line)
    return "\n".join(stem_lines).strip(), options


def normalize_answer(answer: str) -> str:
    return "".join(sorted(set(re.sub(r"[^A-H]", "", answer.upper()))))


def to_mcq(record: dict) -> MCQ:
    stem, options = parse_question(record["question"])
    answer = normalize_answer(str(record["answer"]))
    if len(options) < 2:
        raise ValueError("fewer than two options found in question")
    if not answer or any(letter not in options for letter in answer):
        raise ValueError(f"answer {record['answer']!r} does not match the options {sorted(options)}")
    return MCQ(stem, options, answer, str(record.get("task_name", "")), str(record.get("second_level", "")))


def candidates(mcq: MCQ) -> list[tuple[str, str, str, int]]:
    """(label, context, continuation, normaliser) for every choice the model picks among."""
    letters = sorted(mcq.options)
    if not mcq.multi:
        return [(letter, mcq.stem, " " + mcq.options[letter], len(mcq.options[letter]) or 1) for letter in letters]
    listing = "\n".join(f"{letter}. {mcq.options[letter]}" for letter in letters)
    context = f"{mcq.stem}\n{listing}\nAnswer:"
    subsets = ["".join(s) for size in range(2, len(letters) + 1) for s in itertools.combinations(letters, size)]
    return [(subset, context, " " + subset, 1) for subset in subsets]


@torch.no_grad()
def loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int, max_length: int,
                   on_batch=None) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (lm-eval's definition).

    ``on_batch(n)`` is called after each batch of ``n`` pairs (for a progress bar).
    """
    encoded = []
    for context, continuation in pairs:
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ids = (context_ids + continuation_ids)[-(max_length + 1):]
        encoded.append((ids, min(len(continuation_ids), len(ids) - 1)))
    scores: list[float] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch) - 1
        inputs = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
            attention[row, : len(ids) - 1] = 1
        logprobs = torch.log_softmax(model(input_ids=inputs, attention_mask=attention).logits.float(), dim=-1)
        for row, (ids, n_continuation) in enumerate(batch):
            targets = torch.tensor(ids[-n_continuation:])
            positions = torch.arange(len(ids) - 1 - n_continuation, len(ids) - 1)
            scores.append(logprobs[row, positions, targets].sum().item())
        if on_batch:
            on_batch(len(batch))
    return scores


def choice_count(mcqs: list[MCQ]) -> int:
    """How many (context, continuation) pairs scoring these questions takes."""
    return sum(len(candidates(mcq)) for mcq in mcqs)


def score_mcqs(model, tokenizer, mcqs: list[MCQ], batch_size: int = 8, max_length: int = 512,
               on_batch=None) -> list[dict]:
    """Per-question results: the model's choice, the answer, and whether they match exactly."""
    flat, owners = [], []
    for index, mcq in enumerate(mcqs):
        for label, context, continuation, normaliser in candidates(mcq):
            flat.append((context, continuation))
            owners.append((index, label, normaliser))
    scores = loglikelihoods(model, tokenizer, flat, batch_size, max_length, on_batch)
    best: dict[int, tuple[float, str]] = {}
    choices: dict[int, int] = {}
    for (index, label, normaliser), score in zip(owners, scores):
        choices[index] = choices.get(index, 0) + 1
        value = score / normaliser
        if index not in best or value > best[index][0]:
            best[index] = (value, label)
    return [
        {"task_name": mcq.task_name, "second_level": mcq.second_level, "multi": mcq.multi,
         "answer": mcq.answer, "prediction": best[i][1], "correct": best[i][1] == mcq.answer, "choices": choices[i]}
        for i, mcq in enumerate(mcqs)
    ]


def accuracy_summary(results: list[dict]) -> dict:
    def acc(rows):
        return round(sum(r["correct"] for r in rows) / len(rows), 4) if rows else None

    by_task: dict[str, list[dict]] = {}
    for row in results:
        by_task.setdefault(row["task_name"], []).append(row)
    return {
        "accuracy": acc(results),
        "single_accuracy": acc([r for r in results if not r["multi"]]),
        "multi_accuracy": acc([r for r in results if r["multi"]]),
        "chance": round(sum(1 / r["choices"] for r in results) / len(results), 4) if results else None,
        "items": len(results),
        "by_task": {task: acc(rows) for task, rows in sorted(by_task.items())},
    }
