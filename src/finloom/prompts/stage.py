"""The ``prompts`` stage: from prompt pools to the SFT set, with one decision per prompt.

In order: read the pools (malformed records to ``rejects.jsonl``) and back-translate good texts into
prompts; drop exact duplicates; embed and cluster, drop near duplicates; tag on six dimensions;
score quality and drop the weak; keep ``template.keep`` prompts per template family; fill the set
round-robin across clusters under the quotas and the budget; build responses. Every prompt read
ends in ``decisions.jsonl`` as kept or dropped with its reason, and read = kept + dropped.

Teacher work (tags, quality comparisons, samples and ratings, rewrites, back-translation) runs in
batches cached under ``cache/``: an interrupted stage resumes without asking for anything twice.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from finloom.errors import BadInput
from finloom.files import atomic_write_json, atomic_write_jsonl, display_name, read_records
from finloom.grading.rating import rate
from finloom.llm.batches import run_batches
from finloom.llm.client import LLMClient
from finloom.llm.reward_scorer import reward_scorer
from finloom.llm.sampling import answering_clients, sample_candidates
from finloom.prompts import quality as quality_judge
from finloom.prompts import responses as answers
from finloom.prompts.embed import embed, embedder
from finloom.prompts.records import Prompt, load_prompts
from finloom.prompts.select import (
    apply_quotas,
    cluster,
    diversity_order,
    exact_duplicates,
    near_duplicates,
    similar_pairs,
    template_families,
)
from finloom.prompts.task_embedding import task_aware_vectors
from finloom.prompts.tags import classify, computed_tags, teacher_tags, train_taggers
from finloom.recipe import CLASSIFIED_DIMENSIONS, TAG_DIMENSIONS, PromptSelection, PromptsSection
from finloom.stages import RunContext, StageResult

TEXT_PREVIEW = 500


class Build:
    """What the stage knows about every prompt so far: the prompts, and each one's decision record."""

    def __init__(self, prompts: list[Prompt], origins: dict[str, str]):
        self.prompts = {p.id: p for p in prompts}
        self.order = [p.id for p in prompts]
        self.decisions = {p.id: {"id": p.id, "origin": origins.get(p.id, "pool"), "text": p.text[:TEXT_PREVIEW]}
                          for p in prompts}

    def alive(self) -> list[str]:
        return [i for i in self.order if "reason" not in self.decisions[i]]

    def drop(self, item: str, reason: str, **detail) -> None:
        self.decisions[item].update(reason=reason, **detail)

    def note(self, item: str, **values) -> None:
        self.decisions[item].update(values)


def run(section: PromptsSection, ctx: RunContext) -> StageResult:
    started = time.perf_counter()
    recipe, out = ctx.recipe, ctx.stage_dir
    cache = out / "cache"
    teacher = LazyTeacher(ctx)
    prompts = load_prompts(section.sources, recipe.resolve, out / "rejects.jsonl") if section.sources else []
    rejected = len((out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()) if section.sources else 0
    origins: dict[str, str] = {}
    if section.back_translation.sources:
        extra, back_failed = _back_translated(section, recipe, teacher, cache, {p.id for p in prompts})
        prompts += extra
        origins = {p.id: "back_translation" for p in extra}
    if not prompts:
        raise BadInput(f"prompts.sources: no usable prompts ({rejected} rejected, see {out / 'rejects.jsonl'})")
    build = Build(prompts, origins)
    metrics: dict = {"read": len(prompts), "rejected": rejected, "back_translated": len(origins)}
    if section.back_translation.sources:
        metrics["back_translation_failed"] = back_failed
    tags, selected = select_prompts(section, recipe, teacher, build, out)
    metrics.update(selected)

    responses, metrics["responses"] = _respond(section, ctx, teacher, build, cache)
    kept_ids = build.alive()
    conversations = [{"id": i, "messages": build.prompts[i].messages + [{"role": "assistant", "content": responses[i]}]}
                     for i in kept_ids]
    for item in kept_ids:
        build.note(item, kept=True)
    decisions = [build.decisions[i] | {"kept": build.decisions[i].get("kept", False)} for i in build.order]
    atomic_write_jsonl(out / "decisions.jsonl", decisions)
    atomic_write_jsonl(out / "sft.jsonl", conversations)
    dropped = Counter(d["reason"] for d in decisions if not d["kept"])
    if len(kept_ids) + sum(dropped.values()) != len(prompts):
        raise RuntimeError(f"prompts funnel does not add up: {len(prompts)} read, {len(kept_ids)} kept, "
                           f"{sum(dropped.values())} dropped")
    if not kept_ids:
        raise BadInput(f"prompts: every prompt was dropped ({dict(dropped)}); see {out / 'decisions.jsonl'}")
    metrics.update(
        kept=len(kept_ids), dropped=dict(sorted(dropped.items())),
        tags_kept={d: dict(Counter(tags[i][d] for i in kept_ids).most_common()) for d in TAG_DIMENSIONS},
        teacher_requests=teacher.requests, seconds=round(time.perf_counter() - started, 2))
    atomic_write_json(out / "funnel.json", {"read": len(prompts), "rejected": rejected, "kept": len(kept_ids),
                                            "dropped": metrics["dropped"]})
    return StageResult(outputs={"sft": "prompts/sft.jsonl", "decisions": "prompts/decisions.jsonl",
                                "rejects": "prompts/rejects.jsonl"}, metrics=metrics)


def select_prompts(section: PromptSelection, recipe, teacher: LazyTeacher, build: Build, out: Path) -> tuple[dict, dict]:
    """Drop exact and near duplicates, tag, score quality, thin template families and fill the set under the quotas
    and the budget, in that order; every drop is noted in ``build``. Returns the kept prompts' tags and the metrics."""
    cache = out / "cache"
    metrics: dict = {"embedding": section.selection.embedding}
    texts = [build.prompts[i].text for i in build.order]
    for index, first in exact_duplicates(texts).items():
        build.drop(build.order[index], "exact_duplicate", dup_of=build.order[first])

    alive = build.alive()
    position = {item: n for n, item in enumerate(alive)}
    vectors = embed([build.prompts[i].text for i in alive], embedder(section.selection.embedding, recipe.resolve))
    labels = cluster(vectors, section.selection.clusters, recipe.seed)
    metrics["clusters"] = int(labels.max()) + 1 if len(labels) else 0
    for item in alive:
        build.note(item, cluster=int(labels[position[item]]))
    alive_texts = [build.prompts[i].text for i in alive]
    selection = section.selection
    pairs = similar_pairs(vectors, min(selection.near_duplicate.candidate_similarity, selection.template.candidate_similarity),
                          selection.near_duplicate.neighbours)
    found = near_duplicates(alive_texts, pairs, selection.near_duplicate)
    for index, (original, similarity) in found.items():
        build.drop(alive[index], "near_duplicate", dup_of=alive[original], similarity=similarity)

    tags, metrics["tagging"] = _tag(section, recipe, teacher, build, cache, out)
    score, metrics["quality"] = _score(section, recipe, teacher, build, tags, cache)

    survivors = [position[i] for i in build.alive()]
    template_pairs = pairs
    if selection.template.enabled and selection.template.task_aware.enabled:
        mapped, metrics["task_aware"] = task_aware_vectors(alive_texts, vectors, labels, selection.template.task_aware,
                                                           selection.template.min_frame_tokens, recipe.seed)
        template_pairs = similar_pairs(mapped, selection.template.candidate_similarity, selection.near_duplicate.neighbours)
    families = template_families(alive_texts, template_pairs, survivors, selection.template) if selection.template.enabled else []
    for family in families:
        ranked = sorted(family, key=lambda n: (-(score.get(alive[n]) or 0.0), n))
        for n in ranked[section.selection.template.keep:]:
            build.drop(alive[n], "template_repeat", template_of=alive[ranked[0]])
    metrics["template_families"] = len(families)

    survivors = [position[i] for i in build.alive()]
    order = diversity_order(labels, survivors, {position[i]: s or 0.0 for i, s in score.items() if i in position})
    kept, reasons, metrics["quota_shortfalls"] = apply_quotas(
        order, {position[i]: tags[i] for i in build.alive()}, section.selection.quotas, section.selection.max_prompts)
    for n, reason in reasons.items():
        build.drop(alive[n], reason)

    return {i: tags[i] for i in build.alive()}, metrics


class LazyTeacher:
    """The teacher client, opened on first use (a stage configured without teacher work never connects)."""

    def __init__(self, ctx: RunContext):
        self._ctx = ctx
        self._client: LLMClient | None = None

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            config = self._ctx.teacher()
            if config is None:
                raise BadInput(f"teacher: the {self._ctx.stage} stage needs a teacher section for what it is configured to do")
            self._client = LLMClient(config, "teacher")
        return self._client

    @property
    def requests(self) -> int:
        return self._client.requests if self._client else 0


def _tag(section: PromptSelection, recipe, teacher: LazyTeacher, build: Build, cache: Path, out: Path) -> tuple[dict, dict]:
    """Tags for every prompt still in: computed dimensions, then the classifiers' or the teacher's."""
    settings = section.tagging
    alive = build.alive()
    texts = {i: build.prompts[i].text for i in alive}
    given: dict[str, dict | None] = {}
    if settings.method == "teacher" or settings.teacher_labels:
        asked = alive if settings.method == "teacher" else random.Random(recipe.seed).sample(alive, min(settings.teacher_labels, len(alive)))
        given, _ = run_batches("tags (teacher)", asked, lambda batch: teacher_tags(
            teacher.client, [texts[i] for i in batch], settings.retries), cache / "tags.jsonl", section.batch_size)
    failures = [i for i, tags in given.items() if tags is None]
    metrics: dict = {"method": settings.method, "teacher_asked": len(given), "teacher_failed": len(failures)}
    if settings.method == "classifier":
        labelled = [{"text": texts[i], **tags} for i, tags in given.items() if tags is not None]
        records = read_records(recipe.resolve(settings.labels.path), ("text",)) if settings.labels else []
        every = max(1, round(1 / settings.holdout)) if settings.holdout else 0
        held = [r for n, r in enumerate(labelled) if every and n % every == 0]
        train = [r for n, r in enumerate(labelled) if not (every and n % every == 0)] + records
        if not train:
            raise BadInput("prompts.tagging: no labelled prompts to train the classifiers on (every teacher reply failed "
                           "to parse and no labels file is given)")
        trained = train_taggers(train, out / "taggers", 0.0 if held else settings.holdout, recipe.seed)
        if held:
            predicted = classify(out / "taggers", [r["text"] for r in held])
            agreement = {d: round(sum(p[d] == r[d] for p, r in zip(predicted, held)) / len(held), 4) for d in CLASSIFIED_DIMENSIONS}
            metrics.update(agreement=agreement, agreement_with=f"{len(held)} held-out teacher labels")
        else:
            metrics.update(agreement={d: m.get("heldout", {}).get("accuracy") for d, m in trained.items()},
                           agreement_with=f"held-out {settings.holdout:.0%} of {display_name(settings.labels.path)}")
        predicted = dict(zip(alive, classify(out / "taggers", [texts[i] for i in alive])))
        given = {i: given.get(i) or predicted[i] for i in alive}
    tags = {}
    for item in alive:
        if given.get(item) is None:
            build.drop(item, "tagging_failed")
            continue
        tags[item] = {**given[item], **computed_tags(texts[item])}
        build.note(item, tags=tags[item])
    metrics["distribution"] = {d: dict(Counter(t[d] for t in tags.values()).most_common()) for d in TAG_DIMENSIONS}
    return tags, metrics


def _score(section: PromptSelection, recipe, teacher: LazyTeacher, build: Build, tags: dict, cache: Path) -> tuple[dict, dict]:
    settings = section.quality
    alive = build.alive()
    metrics: dict = {"method": settings.method, "drop_below": settings.drop_below}
    if settings.method == "none":
        return {}, metrics
    if settings.method == "annotations":
        score = {i: build.prompts[i].quality for i in alive}
        metrics["unannotated"] = sum(s is None for s in score.values())
    else:
        buckets: dict[str, list[str]] = {}
        for item in alive:
            buckets.setdefault(tags[item][settings.buckets], []).append(item)
        anchors = quality_judge.choose_anchors(buckets, settings.anchors, recipe.seed)
        bucket_of = {i: tags[i][settings.buckets] for i in alive}
        texts = {i: build.prompts[i].text for i in alive}
        results, _ = run_batches("quality (teacher)", alive, lambda batch: quality_judge.score_prompts(
            teacher.client, batch, texts, bucket_of, anchors, settings.retries), cache / "quality.jsonl", section.batch_size)
        score = {i: results[i]["score"] for i in alive}
        metrics.update(comparisons=sum(r["comparisons"] for r in results.values()),
                       comparisons_failed=sum(r["failed"] for r in results.values()),
                       anchors={bucket: ids for bucket, ids in anchors.items()})
    for item in alive:
        build.note(item, quality=score[item])
        if score[item] is None:
            if settings.method == "teacher":
                build.drop(item, "quality_unjudged")
        elif score[item] < settings.drop_below:
            build.drop(item, "low_quality")
    return score, metrics


def _respond(section: PromptsSection, ctx: RunContext, teacher: LazyTeacher, build: Build, cache: Path) -> tuple[dict, dict]:
    settings = section.responses
    alive = build.alive()
    metrics: dict = {"method": settings.method}
    chosen: dict[str, str] = {}
    score: dict[str, float] = {}
    if settings.method == "given":
        for item in alive:
            if build.prompts[item].response is None:
                build.drop(item, "no_response")
            else:
                chosen[item] = build.prompts[item].response
    else:
        clients = answering_clients(section.responses.models, ctx, "prompts.responses.models", lambda: teacher.client)
        scorer = (reward_scorer(settings.reward_model, ctx.recipe.resolve) if settings.filter == "reward_model"
                  else None)

        def score_candidates(item: str, options: list[str]) -> list[float | None]:
            if scorer is not None:
                messages = build.prompts[item].messages
                return scorer.score([messages + [{"role": "assistant", "content": o}] for o in options])
            return rate(teacher.client, [build.prompts[item].text] * len(options), options, settings.retries)[0]

        def sample(batch: list[str]) -> list[dict]:
            candidates = sample_candidates(clients, [build.prompts[i].messages for i in batch], settings.samples,
                                                   settings.temperature, settings.top_p, settings.max_tokens, ctx.recipe.seed)
            results = []
            for item, options in zip(batch, candidates):
                if settings.filter == "none" or not options:
                    results.append({"response": options[0] if options else None, "score": None, "candidates": len(options),
                                    "rated": 0})
                    continue
                ratings = score_candidates(item, options)
                rated = [(r, n) for n, r in enumerate(ratings) if r is not None]
                best = max(rated, key=lambda pair: (pair[0], -pair[1])) if rated else None
                results.append({"response": options[best[1]] if best else None, "score": best[0] if best else None,
                                "candidates": len(options), "rated": len(rated), "scores": ratings})
            return results

        given = [i for i in alive if build.decisions[i]["origin"] == "back_translation"]  # the text is the answer
        chosen.update({i: build.prompts[i].response for i in given})
        alive = [i for i in alive if i not in chosen]
        results, _ = run_batches("responses", alive, sample, cache / "responses.jsonl", section.batch_size)
        metrics.update(candidates=sum(r["candidates"] for r in results.values()),
                       ratings_failed=sum(r["candidates"] - r["rated"] for r in results.values())
                       if settings.filter != "none" else 0)
        threshold = settings.min_score if settings.filter == "judge" else settings.min_reward
        for item in alive:
            result = results[item]
            if result["candidates"] == 0:
                build.drop(item, "no_candidates")
            elif result["response"] is None:
                build.drop(item, "rating_failed")
            elif result["score"] is not None and threshold is not None and result["score"] < threshold:
                build.drop(item, "low_response_score", response_score=result["score"])
            else:
                chosen[item] = result["response"]
                if result["score"] is not None:
                    score[item] = result["score"]
                    build.note(item, response_score=result["score"])
        if settings.critique_rewrite and chosen:
            ids = [i for i in chosen if i not in given]
            rewritten, _ = run_batches("critique and rewrite", ids, lambda batch: answers.rewrite(
                teacher.client, [build.prompts[i].text for i in batch], [chosen[i] for i in batch], settings.retries),
                cache / "rewrites.jsonl", section.batch_size)
            metrics["rewrite_failed"] = sum(rewritten[i] is None for i in ids)
            for item in ids:
                if rewritten[item] is not None:
                    chosen[item] = rewritten[item]
                    build.note(item, rewritten=True)
    refusal = {i: answers.is_refusal(r) for i, r in chosen.items()}
    for item in answers.cap_refusals(list(chosen), refusal, score, settings.refusal_cap):
        build.drop(item, "refusal_cap")
        chosen.pop(item)
    metrics["refusals_kept"] = sum(refusal[i] for i in chosen)
    return chosen, metrics


def _back_translated(section: PromptsSection, recipe, teacher: LazyTeacher, cache: Path,
                     taken: set[str]) -> tuple[list[Prompt], int]:
    """Prompts the teacher writes for good existing texts (each text becomes its prompt's response), and how many
    texts got no usable request."""
    settings = section.back_translation
    texts: dict[str, str] = {}
    for number, source in enumerate(settings.sources):
        for index, record in enumerate(read_records(recipe.resolve(source.path), (source.text_field,))):
            text = record[source.text_field]
            if isinstance(text, str) and len(text.strip()) >= settings.min_chars and len(texts) < settings.max_texts:
                texts[f"bt{number}-{record.get('id', index)}"] = text.strip()
    ids = [i for i in texts if i not in taken]
    requests, _ = run_batches("back-translation", ids, lambda batch: answers.back_translate(
        teacher.client, [texts[i] for i in batch], section.responses.retries), cache / "back_translation.jsonl",
        section.batch_size)
    prompts = [Prompt(i, [{"role": "user", "content": requests[i]}], texts[i]) for i in ids if requests[i] is not None]
    return prompts, len(ids) - len(prompts)

