"""The ``pas`` stage: (prompt, complement) pairs, the PAS model trained on them, and answers with vs without it.

1. Pairs. The prompt pools go through the prompt system's selection (duplicates, six-dimension tags, quality,
   templates, quotas; ``finloom.prompts.stage.select_prompts``); each kept prompt gets a category (its finance
   scenario family, else its ability) and the teacher writes its complement from that category's golden
   examples, critiqued and regenerated (``finloom.pas.complements``). Ready pairs (``complements``) pass the
   same rules. Every prompt read ends in ``decisions.jsonl`` kept or dropped with its reason and every
   rejection with its criterion; read = kept + dropped. Teacher work is cached per batch: a rerun resumes.
2. Training: the SFT stage's trainer (packing included) on the pairs, into ``pas/model``, with ``pas.json``
   (its categories) and the category classifiers beside the weights, for serving.
3. Evaluation (``pas.eval``): the target model answers the scenario suite with and without PAS
   (``finloom.pas.evaluate``), into ``eval.jsonl``.

Under ``accelerate launch`` the main process builds the pairs and evaluates; every process trains.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path

from accelerate import PartialState

from finloom.errors import BadInput
from finloom.files import atomic_write_json, atomic_write_jsonl, read_records
from finloom.llm.batches import run_batches
from finloom.llm.client import LLMClient
from finloom.pas.augment import PAS_CONFIG, TAGGERS, Augmenter
from finloom.pas.complements import PASItem, load_fewshot, write_complements
from finloom.pas.critique import rule_problem
from finloom.pas.evaluate import evaluate_pas
from finloom.pas.format import category_of, language, pas_input
from finloom.prompts.records import load_prompts
from finloom.prompts.stage import Build, LazyTeacher, select_prompts
from finloom.recipe import ChatSource, PASSection
from finloom.sft.stage import train_on_conversations
from finloom.stages import RunContext, StageResult

GIVEN = "given"
GENERATED = "generated"


def run(section: PASSection, ctx: RunContext) -> StageResult:
    started = time.perf_counter()
    state, out = PartialState(), ctx.stage_dir
    metrics: dict = {}
    if state.is_main_process:
        metrics.update(build_pairs(section, ctx))
    state.wait_for_everyone()
    start = _model(ctx, section.start_model)
    metrics.update(train_on_conversations(ctx, start, [ChatSource(path=str(out / "pairs.jsonl"), format="messages")],
                                          section, out / "pairs_rejects.jsonl"))
    outputs = {"model": "pas/model", "pairs": "pas/pairs.jsonl", "decisions": "pas/decisions.jsonl"}
    if state.is_main_process:
        _describe_model(out, section)
        if section.eval.enabled:
            teacher = ctx.teacher()
            augmenter = Augmenter(out / "model", loading=ctx.recipe.model)
            with LLMClient(teacher, "teacher") if teacher else contextlib.nullcontext() as judge:
                rows, evaluation = evaluate_pas(_model(ctx, section.eval.target), augmenter, section.eval,
                                                section.critique, ctx.recipe.eval.scenarios, ctx.recipe.resolve, judge,
                                                ctx.recipe.model)
            atomic_write_jsonl(out / "eval.jsonl", rows)
            outputs["eval"] = "pas/eval.jsonl"
            metrics.update(eval=evaluation, win_rate=evaluation.get("win_rate"),
                           critique_pass_rate=evaluation["critique_pass_rate"],
                           teacher_requests=metrics.get("teacher_requests", 0) + (judge.requests if judge else 0))
    state.wait_for_everyone()
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return StageResult(outputs=outputs, metrics=metrics)


def _model(ctx: RunContext, name: str | None) -> Path:
    """A model the stage uses: ``stage:NAME``'s, a directory, or (None) the newest lineage model before pas."""
    return Path(ctx.input_model()[1]) if name is None else ctx.named_model(name)


def build_pairs(section: PASSection, ctx: RunContext) -> dict:
    """Write ``pairs.jsonl`` (the training conversations), ``decisions.jsonl`` and ``funnel.json``; return metrics."""
    out = ctx.stage_dir
    pairs, decisions, metrics = [], [], {}
    if section.complements:
        given, metrics["given"] = _given_pairs(section, ctx, out)
        pairs += given
    if section.sources:
        generated, decisions, metrics["generated"], requests = _generated_pairs(section, ctx, out)
        pairs += generated
        metrics["teacher_requests"] = requests
    if not pairs:
        raise BadInput(f"pas: no (prompt, complement) pair survived (see {out / 'decisions.jsonl'} and "
                       f"{out / 'complement_rejects.jsonl'})")
    atomic_write_jsonl(out / "pairs.jsonl", pairs)
    atomic_write_jsonl(out / "decisions.jsonl", decisions)
    metrics.update(pairs=len(pairs), pairs_by_origin=dict(Counter(p["origin"] for p in pairs)),
                   categories=dict(Counter(p["category"] for p in pairs).most_common()))
    atomic_write_json(out / "funnel.json", {key: metrics[key] for key in ("given", "generated") if key in metrics})
    return metrics


def _pair(item_id: str, origin: str, prompt: str, complement: str, category: str | None,
          keywords: list[str] | None) -> dict:
    return {"id": item_id, "origin": origin, "category": category or "uncategorised",
            "messages": [{"role": "user", "content": pas_input(prompt, keywords)},
                         {"role": "assistant", "content": complement}]}


def _given_pairs(section: PASSection, ctx: RunContext, out: Path) -> tuple[list[dict], dict]:
    """Ready pairs that pass the critique's rules; malformed records and rule failures to complement_rejects.jsonl."""
    pairs, rejects, read = [], [], 0
    for source in section.complements:
        path = ctx.recipe.resolve(source.path)
        malformed: list[dict] = []
        records = read_records(path, ("prompt", "complement"), malformed)
        read += len(records) + len(malformed)
        rejects += [{"file": str(path), **reject} for reject in malformed]
        for index, record in enumerate(records):
            prompt, complement, keywords = record["prompt"], record["complement"], record.get("keywords")
            item_id = str(record.get("id", f"{path.stem}-{index}"))
            if not (isinstance(prompt, str) and prompt.strip() and isinstance(complement, str) and complement.strip()):
                rejects.append({"file": str(path), "id": item_id, "reason": "prompt and complement must be non-empty "
                                                                            "strings"})
                continue
            problem = rule_problem(prompt, complement, section.critique, keywords)
            if problem:
                rejects.append({"file": str(path), "id": item_id, "reason": problem.reason,
                                "criterion": problem.criterion})
                continue
            pairs.append(_pair(item_id, GIVEN, prompt, complement, record.get("category"), keywords))
    atomic_write_jsonl(out / "complement_rejects.jsonl", rejects)
    if len(pairs) + len(rejects) != read:
        raise RuntimeError(f"pas: given complements do not add up: {read} read, {len(pairs)} kept, {len(rejects)} rejected")
    return pairs, {"read": read, "kept": len(pairs), "rejected": len(rejects),
                   "rejected_by": dict(Counter(r.get("criterion", "malformed") for r in rejects))}


def _generated_pairs(section: PASSection, ctx: RunContext, out: Path) -> tuple[list[dict], list[dict], dict, int]:
    """The pools' prompts selected, their complements written by the teacher; every prompt's decision."""
    recipe, teacher = ctx.recipe, LazyTeacher(ctx)
    prompts = load_prompts(section.sources, recipe.resolve, out / "rejects.jsonl")
    rejected = len((out / "rejects.jsonl").read_text(encoding="utf-8").splitlines())
    if not prompts:
        raise BadInput(f"pas.sources: no usable prompts ({rejected} rejected, see {out / 'rejects.jsonl'})")
    build = Build(prompts, {})
    tags, selected = select_prompts(section, recipe, teacher, build, out)
    alive = build.alive()
    last_turn = {i: build.prompts[i].messages[-1]["content"] for i in alive}
    items = {i: PASItem(last_turn[i], category_of(tags[i]), build.prompts[i].keywords) for i in alive}
    languages = {i: language(last_turn[i]) for i in alive}
    fewshot = load_fewshot(recipe.resolve(section.generation.fewshot.path))
    results, _ = run_batches("complements (teacher)", alive, lambda batch: [outcome.as_dict() for outcome in write_complements(
        teacher.client, [items[i] for i in batch], [languages[i] for i in batch], fewshot, section.generation,
        section.critique)], out / "cache" / "complements.jsonl", section.batch_size)
    pairs = []
    for item in alive:
        result = results[item]
        build.note(item, category=items[item].category, attempts=result["attempts"], rejections=result["rejections"])
        if result["complement"] is None:
            build.drop(item, "complement_rejected", last_criterion=result["rejections"][-1]["criterion"])
            continue
        build.note(item, complement=result["complement"], kept=True)
        pairs.append(_pair(item, GENERATED, last_turn[item], result["complement"], items[item].category,
                           items[item].keywords))
    decisions = [build.decisions[i] | {"kept": build.decisions[i].get("kept", False)} for i in build.order]
    dropped = Counter(d["reason"] for d in decisions if not d["kept"])
    if len(pairs) + sum(dropped.values()) != len(prompts):
        raise RuntimeError(f"pas funnel does not add up: {len(prompts)} read, {len(pairs)} kept, "
                           f"{sum(dropped.values())} dropped")
    rejections = [r for i in alive for r in results[i]["rejections"]]
    attempts = sum(results[i]["attempts"] for i in alive)
    metrics = {"read": len(prompts), "rejected": rejected, "asked": len(alive), "kept": len(pairs),
               "dropped": dict(sorted(dropped.items())), **selected,
               "attempts": attempts, "accepted_first_time": sum(results[i]["attempts"] == 1 and results[i]["complement"]
                                                                 is not None for i in alive),
               "rejections": dict(Counter(r["criterion"] for r in rejections).most_common()),
               "rejections_by": dict(Counter(r["by"] for r in rejections).most_common()),
               "generation_pass_rate": round(len(pairs) / attempts, 4) if attempts else None}
    return pairs, decisions, metrics, teacher.requests


def _describe_model(out: Path, section: PASSection) -> None:
    """``pas.json`` and the category classifiers beside the PAS model's weights: what serving needs."""
    model = out / "model"
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    config = {"categories": sorted({p["category"] for p in pairs}), "serve_categories": section.categories,
              "instruction": pas_input("{prompt}")}
    atomic_write_json(model / PAS_CONFIG, config)
    if (out / "taggers").is_dir():
        shutil.rmtree(model / TAGGERS, ignore_errors=True)
        shutil.copytree(out / "taggers", model / TAGGERS)
