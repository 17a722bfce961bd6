"""The ``prefs`` stage: preference pairs built from the run's own answers (Baichuan Alignment's preference data).

For every prompt: ``samples`` answers from each model (T 1.0, top-p 0.99 by default), answers too close to an
earlier one of the same prompt dropped (ROUGE-L F1 with a tokenizer that splits Chinese into characters, as
``rouge_score``'s own drops every non-ASCII character), each remaining answer scored (``reward.judging``:
verifiable checks, or the teacher in absolute, pairwise or golden-answer mode), and the best and the worst
answer kept as a pair with their scores, unless all answers score alike. Every prompt read is kept or dropped
with its reason (``prefs/decisions.jsonl``, with every answer, score and raw judge reply); read = kept + dropped.
Sampling and judging run in batches cached under ``prefs/cache/``, so a resumed stage asks nothing twice.
The reward stage trains on ``prefs/pairs.jsonl`` beside its own datasets.
"""

from __future__ import annotations

import random
import re

from rouge_score import rouge_scorer

from finloom.errors import BadInput
from finloom.files import atomic_write_json, atomic_write_jsonl
from finloom.llm.batches import run_batches
from finloom.llm.chat_data import read_prompts
from finloom.llm.client import LLMClient
from finloom.llm.sampling import answering_clients, sample_candidates
from finloom.recipe import ClientSection, PrefsSection
from finloom.reward.judging import judged_scores, mode_for, verified_scores
from finloom.stages import RunContext, StageResult

GOLDEN_FIELDS = ("answer", "valid", "expected", "unit", "tolerance", "checks", "golden", "kind")
VERIFIABLE_FIELDS = ("answer", "expected", "checks")
_TOKEN = re.compile(r"[\u3400-\u9fff]|[A-Za-z0-9]+")


class MixedTokenizer:
    """Chinese characters one by one, Latin words and numbers whole, lower-cased: for ROUGE on zh and en."""

    def tokenize(self, text: str) -> list[str]:
        return [token.lower() for token in _TOKEN.findall(text)]


def near_duplicates(answers: list[str], threshold: float) -> list[int]:
    """Indices of answers whose ROUGE-L F1 with an earlier kept answer reaches ``threshold``."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MixedTokenizer())
    kept, dropped = [], []
    for index, answer in enumerate(answers):
        if any(scorer.score(answers[k], answer)["rougeL"].fmeasure >= threshold for k in kept):
            dropped.append(index)
        else:
            kept.append(index)
    return dropped


def _teacher_client(ctx: RunContext) -> LLMClient:
    teacher = ctx.teacher()
    if teacher is None:
        raise BadInput("prefs.models: teacher named, but the recipe has no teacher section")
    return LLMClient(teacher, "prefs.models teacher")


def run(section: PrefsSection, ctx: RunContext) -> StageResult:
    prompts, rejects = read_prompts(section.sources, ctx.recipe.resolve, GOLDEN_FIELDS)
    if section.judge == "checks":
        unverifiable = [p for p in prompts if not any(key in p for key in VERIFIABLE_FIELDS)]
        rejects += [{"id": p["id"], "reason": "judge: checks, but no answer, expected or checks to verify"}
                    for p in unverifiable]
        prompts = [p for p in prompts if p not in unverifiable]
    unsampled = 0
    if section.max_prompts is not None and len(prompts) > section.max_prompts:
        sampled = set(random.Random(ctx.recipe.seed).sample(range(len(prompts)), section.max_prompts))
        unsampled, prompts = len(prompts) - section.max_prompts, [p for k, p in enumerate(prompts) if k in sampled]
    atomic_write_jsonl(ctx.stage_dir / "rejects.jsonl", rejects)
    if not prompts:
        raise BadInput(f"prefs.sources: no usable prompts ({len(rejects)} rejected, see {ctx.stage_dir / 'rejects.jsonl'})")
    if len({p["id"] for p in prompts}) != len(prompts):
        raise BadInput("prefs.sources: prompt ids repeat; give each record a unique id")
    by_id = {p["id"]: p for p in prompts}
    modes = {p["id"]: mode_for(p, section.judge) for p in prompts}
    needing_judge = [i for i, mode in modes.items() if mode != "verified"]
    teacher = ctx.teacher() if needing_judge or "teacher" in section.models else None
    if needing_judge and teacher is None:
        raise BadInput(f"teacher: {len(needing_judge)} prefs prompts need a judge (no answer, expected or checks to "
                       "verify); add a teacher section")
    cache = ctx.stage_dir / "cache"
    clients = (answering_clients(section.models, ctx, "prefs.models", lambda: _teacher_client(ctx)) if section.models
               else [LLMClient(ClientSection(local_model=str(ctx.input_model()[1])), "prefs: the model it follows")])

    def sample(batch: list[str]) -> list[list[str]]:
        return sample_candidates(clients, [by_id[i]["messages"] for i in batch], section.samples, section.temperature,
                                 section.top_p, section.max_tokens, ctx.recipe.seed)

    answers, sampled_now = run_batches("prefs: sampling", list(by_id), sample, cache / "samples.jsonl",
                                       section.batch_size)
    distinct = {}
    for prompt_id, candidates in answers.items():
        dropped = set(near_duplicates(candidates, section.near_duplicate_rouge))
        distinct[prompt_id] = [a for k, a in enumerate(candidates) if k not in dropped]
    judge = LLMClient(teacher, "prefs judge") if needing_judge else None

    def score(batch: list[str]) -> list[dict]:
        """A batch's prompts: verified ones by their checks, the others judged together (one round of requests)."""
        results = {}
        for prompt_id in batch:
            if len(distinct[prompt_id]) < 2:
                results[prompt_id] = {"scores": [], "replies": []}
            elif modes[prompt_id] == "verified":
                results[prompt_id] = {"scores": verified_scores(by_id[prompt_id], distinct[prompt_id]), "replies": []}
        judged = [prompt_id for prompt_id in batch if prompt_id not in results]
        items = [{"mode": modes[i], "prompt": by_id[i]["messages"][-1]["content"], "answers": distinct[i],
                  "golden": by_id[i].get("golden")} for i in judged]
        for prompt_id, (scores, replies) in zip(judged, judged_scores(judge, items, section.retries) if items else []):
            results[prompt_id] = {"scores": scores, "replies": replies}
        return [results[prompt_id] for prompt_id in batch]

    try:
        scored, _ = run_batches("prefs: judging", list(by_id), score, cache / "scores.jsonl", section.batch_size)
    finally:
        if judge is not None:
            judge.close()
        for client in clients:
            client.close()
    pairs, decisions = _decide(prompts, answers, distinct, scored, modes, section.min_spread)
    atomic_write_jsonl(ctx.stage_dir / "pairs.jsonl", pairs)
    atomic_write_jsonl(ctx.stage_dir / "decisions.jsonl", decisions)
    dropped: dict[str, int] = {}
    for decision in decisions:
        if not decision["kept"]:
            dropped[decision["reason"]] = dropped.get(decision["reason"], 0) + 1
    metrics = {"read": len(prompts) + len(rejects) + unsampled, "rejected": len(rejects), "not_sampled": unsampled,
               "prompts": len(prompts),
               "pairs": len(pairs), "dropped": dropped, "sampled_now": sampled_now,
               "answers": sum(len(a) for a in answers.values()),
               "near_duplicates": sum(len(answers[i]) - len(distinct[i]) for i in answers),
               "judge_failures": sum(s is None for r in scored.values() for s in r["scores"]),
               "modes": {mode: sum(1 for m in modes.values() if m == mode) for mode in sorted(set(modes.values()))}}
    atomic_write_json(ctx.stage_dir / "funnel.json", metrics)
    return StageResult(outputs={"pairs": "prefs/pairs.jsonl", "decisions": "prefs/decisions.jsonl"}, metrics=metrics)


def _decide(prompts, answers, distinct, scored, modes, min_spread) -> tuple[list[dict], list[dict]]:
    pairs, decisions = [], []
    for prompt in prompts:
        prompt_id = prompt["id"]
        candidates, result = distinct[prompt_id], scored[prompt_id]
        decision = {"id": prompt_id, "mode": modes[prompt_id], "answers": candidates, "scores": result["scores"],
                    "judge_replies": result["replies"], "sampled": len(answers[prompt_id])}
        usable = [(s, k) for k, s in enumerate(result["scores"]) if s is not None]
        if len(answers[prompt_id]) < 2:
            reason = "fewer than two answers sampled"
        elif len(candidates) < 2:
            reason = "near-duplicate answers"
        elif len(usable) < 2:
            reason = "judge failed"
        elif max(usable)[0] - min(usable)[0] < min_spread:
            reason = "answers score alike"
        else:
            reason = None
        decisions.append(dict(decision, kept=reason is None, reason=reason))
        if reason is None:
            (best, b), (worst, w) = max(usable), min(usable)
            pairs.append({"id": prompt_id, "prompt": prompt["messages"],
                          "chosen": [{"role": "assistant", "content": candidates[b]}],
                          "rejected": [{"role": "assistant", "content": candidates[w]}],
                          "score_chosen": round(best, 6), "score_rejected": round(worst, 6), "judge": modes[prompt_id]})
    return pairs, decisions
