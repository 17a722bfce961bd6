"""Benchmarks run through lm-evaluation-harness: canonical data files, generated task YAMLs, results.

For each benchmark of the recipe, its files (or a folder of them, one sub-task per file, e.g.
FinanceIQ's per-certification CSVs) are converted to canonical JSONL (``finloom.eval.layouts``)
under ``work/data``, and a small task YAML per sub-task and scoring template is written under
``work/tasks``: it ``include``s one of finloom's templates (``finloom/eval/tasks``) and names the
data file. lm-eval's ``TaskManager`` indexes that folder and ``simple_evaluate`` runs the tasks on
an ``FinloomLM`` (an in-memory model) or on lm-eval's API models (an OpenAI-compatible endpoint).
Its per-sample logs become finloom's per-question results, from which accuracy overall, per
certification and by question type is computed.

Scoring: ``loglikelihood`` (base models): single-answer questions cloze-style (``acc_norm``) or
MMLU-style letters, multi-answer questions by the most likely letter set (exact set match);
``generate`` (chat and API models): the reply's letters (exact set match). Calculation problems
and scenarios are always generated.
"""

from __future__ import annotations

from collections.abc import Callable

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from finloom.grading.answers import answer_value, extract_letters
from finloom.eval.layouts import convert
from finloom.files import atomic_write_jsonl, read_records

TEMPLATES = Path(__file__).parent / "tasks"


@dataclass
class SubTask:
    """One lm-eval task: a data file scored with one template."""

    name: str
    template: str
    group: str
    """The sub-task's name in per-certification results (the file stem, or the benchmark for one file)."""
    items: int
    benchmark: str


@dataclass
class PreparedBenchmark:
    name: str
    kind: str
    subtasks: list[SubTask] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``datasets.Dataset.save_to_disk``."""
    return path.is_dir() and (path / "state.json").exists() and (path / "dataset_info.json").exists()


def _files(path: Path) -> list[Path]:
    if path.is_file() or _is_saved_dataset(path):
        return [path]
    saved = sorted(p.parent for p in path.rglob("state.json") if _is_saved_dataset(p.parent))
    return saved + sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".csv", ".parquet")
                          and not any(folder in p.parents for folder in saved))


def _records(path: Path, rejects: list[dict]) -> list[dict]:
    if _is_saved_dataset(path):
        from datasets import load_from_disk

        return [dict(row) for row in load_from_disk(str(path))]
    if path.suffix == ".csv":
        import csv

        with open(path, encoding="utf-8-sig", newline="") as handle:
            return list(csv.DictReader(handle))
    return read_records(path, (), rejects)


LOGLIKELIHOOD_TEMPLATES = ("mcq_cloze", "mcq_letters", "mcq_multi")


def templates_for(kind: str, scoring: str) -> list[str]:
    """The task templates a benchmark needs: log-likelihood ones and / or the generation one."""
    if kind == "calc":
        return ["calc_generate"]
    if kind == "scenario":
        return ["open_generate"]
    loglikelihood = ["mcq_letters" if scoring == "letters" else "mcq_cloze", "mcq_multi"]
    return {"generate": ["mcq_generate"], "auto": loglikelihood + ["mcq_generate"]}.get(scoring, loglikelihood)


def _generation_kwargs(template: str, max_gen_tokens: int) -> str:
    until = '["<|im_end|>"]' if template == "open_generate" else '["\\n\\n\\n"]'
    return f"generation_kwargs: {{until: {until}, max_gen_toks: {max_gen_tokens}, do_sample: false}}\n"


def spread(items: list[dict], key: str) -> list[dict]:
    """Items reordered round-robin over their ``key`` values (in first-seen order), so that the first N hold
    every value the file has, N allowing; the order within a value is kept."""
    groups: dict[str, list[dict]] = {}
    for item in items:
        groups.setdefault(str(item.get(key, "")), []).append(item)
    columns = list(groups.values())
    return [column[row] for row in range(max(map(len, columns), default=0)) for column in columns if row < len(column)]


def prepare(name: str, kind: str, layout: str, paths: list[Path], scoring: str, work: Path,
            max_items: int | None, num_fewshot: int = 0, max_gen_tokens: int = 128,
            augment: Callable[[str], dict | None] | None = None) -> PreparedBenchmark:
    """Canonical data files and task YAMLs for one benchmark; malformed records become rejects.

    ``augment`` (PAS) turns a scenario's prompt into ``{prompt, complement, ...}``: the model then answers the
    augmented prompt, and the item keeps the original as ``original_prompt`` for the judge."""
    prepared = PreparedBenchmark(name, kind)
    files = [file for path in paths for file in _files(path)]
    for file in files:
        raw_rejects: list[dict] = []
        records = _records(file, raw_rejects)
        items, rejects = convert(records, layout)
        prepared.rejects += raw_rejects + [{"file": str(file), "record": index + 1, "reason": reason}
                                           for index, reason in rejects]
        group = file.stem if len(files) > 1 else name
        for item in items:
            item["task_name"] = item.get("task_name") or group
        if max_items:
            if kind == "scenario":  # a cut keeps every scenario family, for the per-family rates
                items = spread(items, "family")
            items = items[: max(0, max_items - len(prepared.items))]
        if not items:
            continue
        if augment is not None and kind == "scenario":
            items = [_augmented(item, augment) for item in items]
        prepared.items += items
        data_file = work / "data" / name / f"{file.stem}.jsonl"
        atomic_write_jsonl(data_file, items)
        for template in templates_for(kind, scoring):
            selected = [i for i in items if kind != "mcq" or template in ("mcq_generate",)
                        or (template == "mcq_multi") == i["multi"]]
            if not selected:
                continue
            task = f"finloom__{name}__{file.stem}__{template}"
            (work / "tasks").mkdir(parents=True, exist_ok=True)
            (work / "tasks" / f"{task}.yaml").write_text(
                f"include: {TEMPLATES / (template + '.yaml')}\ntask: {task}\n"
                f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data_file))}\n"
                + (f"num_fewshot: {num_fewshot}\nfewshot_split: test\n" if num_fewshot else "")
                + (_generation_kwargs(template, max_gen_tokens) if template not in LOGLIKELIHOOD_TEMPLATES else ""),
                encoding="utf-8")
            prepared.subtasks.append(SubTask(task, template, group, len(selected), name))
    return prepared


def _augmented(item: dict, augment: Callable[[str], dict | None]) -> dict:
    pas = augment(item["prompt"])
    if pas is None:
        return {**item, "pas_complement": None}
    return {**item, "prompt": pas["prompt"], "original_prompt": item["prompt"], "pas_complement": pas["complement"]}


def evaluate(lm, subtasks: list[SubTask], work: Path, apply_chat_template: bool = False,
             seed: int = 1234) -> dict[str, list[dict]]:
    """Run ``subtasks`` on ``lm``; returns lm-eval's per-sample logs by task name."""
    import random

    import numpy
    import torch
    from lm_eval.evaluator import evaluate as lm_eval_evaluate
    from lm_eval.tasks import TaskManager

    names = [task.name for task in subtasks]
    if not names:
        return {}
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    manager = TaskManager(include_path=str(work / "tasks"), include_defaults=False)
    loaded = manager.load(names)
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=seed)
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        output = lm_eval_evaluate(lm=lm, task_dict=loaded, log_samples=True, bootstrap_iters=0,
                                  apply_chat_template=apply_chat_template, verbosity="ERROR")
    return output["samples"]


def _prediction(sample: dict, template: str, doc: dict) -> tuple[str | None, bool]:
    """What the model chose and whether it is right, from one lm-eval sample."""
    if template in ("mcq_generate", "calc_generate", "open_generate"):
        reply = sample["filtered_resps"][0] if sample["filtered_resps"] else ""
        metric = "responded" if template == "open_generate" else "acc"
        return reply, bool(sample[metric])
    scores = [float(r[0]) for r in sample["filtered_resps"]]
    if template == "mcq_cloze":  # acc_norm: log-likelihood per character of the option
        scores = [s / max(1, len(option)) for s, option in zip(scores, doc["options"])]
    choices = doc["subsets"] if template == "mcq_multi" else doc["letters"]
    best = choices[max(range(len(scores)), key=scores.__getitem__)]
    return best, best == doc["answer"]


def per_question(benchmark: PreparedBenchmark, samples: dict[str, list[dict]], subtasks: list[SubTask]) -> list[dict]:
    rows = []
    for task in subtasks:
        for sample in samples.get(task.name, []):
            doc = sample["doc"]
            prediction, correct = _prediction(sample, task.template, doc)
            row = {"id": doc["id"], "task_name": doc.get("task_name", task.group), "template": task.template,
                   "answer": doc.get("answer"), "prediction": prediction, "correct": correct}
            if benchmark.kind == "mcq":
                row.update(multi=doc["multi"], second_level=doc.get("second_level", ""),
                           choices=len(doc["subsets"] if doc["multi"] else doc["options"]))
                if task.template != "mcq_generate":
                    row["loglikelihoods"] = [round(float(r[0]), 6) for r in sample["filtered_resps"]]
            if task.template == "mcq_generate":  # what the scorer read from the reply, kept to trace a wrong score
                row["extracted"] = extract_letters(prediction or "", "".join(doc["letters"]))
            elif task.template == "calc_generate":
                row["extracted"] = answer_value(prediction or "", doc["unit"])
            if task.template in ("mcq_generate", "calc_generate"):
                row["parsed"] = bool(sample.get("parsed", 0))
            if benchmark.kind == "scenario":
                row["prompt"] = doc["prompt"]
            rows.append(row)
    return rows


def summarize(rows: list[dict], kind: str) -> dict:
    def accuracy(subset):
        return round(sum(r["correct"] for r in subset) / len(subset), 4) if subset else None

    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task_name"], []).append(row)
    summary = {"accuracy": accuracy(rows), "items": len(rows),
               "by_task": {task: accuracy(subset) for task, subset in sorted(by_task.items())}}
    if kind == "mcq":
        summary.update(single_accuracy=accuracy([r for r in rows if not r["multi"]]),
                       multi_accuracy=accuracy([r for r in rows if r["multi"]]),
                       chance=round(sum(1 / r["choices"] for r in rows) / len(rows), 4) if rows else None)
    if any("parsed" in r for r in rows):
        summary["parse_rate"] = round(sum(r.get("parsed", False) for r in rows) / len(rows), 4)
    return summary
