"""The task-aware embedding against the generic one on planted "template + context" prompts, side by side.

The bundled prompt pool plus planted template families whose fills carry long, different contexts (paragraphs of
the bundled finance corpus), and as many prompts that wrap the same kind of paragraphs in other, one-off tasks.
For each embedding: how many planted sibling pairs the template search sees as candidates (cosine >= the
template threshold among each prompt's neighbours), how many other pairs it sees, and the families the LCS rule
then confirms; the task-aware embedding's mining and training time.

    python benchmarks/prompts_task_embedding.py [--embedding wordllama] [--fills 8] [--context-words 50]
"""

from __future__ import annotations

import argparse
import json
import random
import time

FRAMES = [
    "Read the passage below from a bank's internal newsletter and list three risks it points to, each with one "
    "sentence of explanation, as a numbered list, adding no facts that are not in the passage.\n\n{context}",
    "You are preparing talking points for a client meeting. Using only the text that follows, write four short "
    "bullet points a relationship manager could say out loud, avoid jargon, and end with one question to ask the "
    "client.\n\n{context}",
    "Our compliance team asks for a check of the following draft. Point out any sentence that could mislead a retail "
    "investor, explain why in one line each, and suggest a safer wording for every one you point out.\n\n{context}",
    "Turn the following material into a five-question multiple-choice quiz for new staff, with four options per "
    "question, the correct letter after each question, and no question that the material cannot answer.\n\n{context}",
]
ONE_OFF = ["Summarise this in two sentences: {context}", "Translate into Chinese: {context}",
           "What is the main point here? {context}", "Give this text a title. {context}",
           "Is the tone of this text positive or negative? {context}", "Find the numbers in this text. {context}"]


def planted(contexts: list[str], fills: int, seed: int) -> tuple[list[str], list[int | None]]:
    """Prompts and the frame each fills (None for the one-off tasks)."""
    rng = random.Random(seed)
    contexts = sorted(set(contexts))  # the corpus plants exact copies: a context used twice is a shared frame
    rng.shuffle(contexts)
    texts, frames = [], []
    for number, frame in enumerate(FRAMES):
        for _ in range(fills):
            texts.append(frame.format(context=contexts.pop()))
            frames.append(number)
    for _ in range(len(texts)):
        texts.append(rng.choice(ONE_OFF).format(context=contexts.pop()))
        frames.append(None)
    return texts, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedding", default="wordllama")
    parser.add_argument("--fills", type=int, default=8)
    parser.add_argument("--context-words", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()

    from finloom.prompts.embed import embed, embedder
    from finloom.prompts.select import cluster, similar_pairs, template_families
    from finloom.prompts.task_embedding import task_aware_vectors
    from finloom.recipe import STARTER_DATA_DIR, TaskAwareSettings, TemplateSettings

    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (STARTER_DATA_DIR / name).read_text(encoding="utf-8").splitlines()]

    pool = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in read("prompt_pool.jsonl")]
    paragraphs = [p for r in read("finance_corpus.jsonl") if r["lang"] == "en" for p in r["text"].split("\n\n")
                  if len(p.split()) >= options.context_words]
    contexts = [" ".join(p.split()[:options.context_words]) for p in paragraphs]
    texts, frames = planted(contexts, options.fills, options.seed)
    texts, frames = pool + texts, [None] * len(pool) + frames
    siblings = {(a, b) for a in range(len(texts)) for b in range(a) if frames[a] is not None and frames[a] == frames[b]}
    template = TemplateSettings(min_shared=0.3)  # frames of ~40 tokens around contexts of ~50 words
    vectors = embed(texts, embedder(options.embedding, lambda name: name))
    labels = cluster(vectors, 0, options.seed)
    started = time.perf_counter()
    mapped, trained = task_aware_vectors(texts, vectors, labels, TaskAwareSettings(enabled=True), template.min_frame_tokens,
                                         options.seed)
    seconds = time.perf_counter() - started
    print(f"{len(pool)} pool prompts + {len(FRAMES)} planted frames x {options.fills} fills around {options.context_words}"
          f"-word contexts + {len(FRAMES) * options.fills} one-off tasks on the same kind of paragraphs; "
          f"embedding {options.embedding}; template.min_shared {template.min_shared}, candidates at cosine >= "
          f"{template.candidate_similarity} among {10} neighbours")
    print(f"task-aware: {trained['triplets']} triplets mined, triplet loss {trained.get('triplet_loss_before')} -> "
          f"{trained.get('triplet_loss_after')}, {seconds:.1f} s to mine and train")
    print("| embedding | planted sibling pairs seen | other pairs seen | planted prompts in a family | "
          "families | families mixing frames or pulling in others |")
    print("|---|---|---|---|---|---|")
    alive = list(range(len(texts)))
    for label, rows in (("generic", vectors), ("task-aware", mapped)):
        pairs = similar_pairs(rows, template.candidate_similarity, 10)
        seen = {(a, b) for a, b, _ in pairs}
        families = template_families(texts, pairs, alive, template)
        in_family = sum(1 for family in families for index in family if frames[index] is not None)
        mixed = sum(1 for family in families if len({frames[index] for index in family}) > 1)
        print(f"| {label} | {len(seen & siblings)} of {len(siblings)} | {len(seen - siblings)} | "
              f"{in_family} of {len(FRAMES) * options.fills} | {len(families)} | {mixed} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
