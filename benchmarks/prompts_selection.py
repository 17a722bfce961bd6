"""The prompts stage's selection against WordLlama's own ``deduplicate``, and teacher-call throughput.

1. **Quality of the near-duplicate rule on the bundled pool**: the planted near-duplicate pairs found
   (recall) and the clean prompts dropped, for finloom's rule (embedding neighbours confirmed by the
   longest common token subsequence) with the WordLlama and hashed embeddings, and for WordLlama's
   ``deduplicate(threshold)`` (cosine only) at several thresholds: the plain library baseline.
2. **Scale**: every selection step on N generated prompts (the pool's generators drawn with many
   seeds, so most prompts share frames, as real pools of templated prompts do): seconds per step and
   peak RSS, beside WordLlama's ``deduplicate`` on the same prompts.
3. **Teacher throughput** (``--serve MODEL_DIR``): tagging requests per second against a local
   ``finloom serve`` at concurrency 1 and 8.

    python benchmarks/prompts_selection.py [--scale 100000] [--serve runs/quickstart/sft/model]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from finloom.prompts.embed import embed, embedder
from finloom.prompts.select import (
    apply_quotas,
    cluster,
    diversity_order,
    exact_duplicates,
    near_duplicates,
    similar_pairs,
    template_families,
)
from finloom.prompts.tags import classify, computed_tags, train_taggers
from finloom.recipe import STARTER_DATA_DIR, NearDuplicateSettings, Quota, TemplateSettings


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pool() -> list[dict]:
    return [json.loads(line) for line in (STARTER_DATA_DIR / "prompt_pool.jsonl").read_text(encoding="utf-8").splitlines()]


def quality_table() -> None:
    records = pool()
    texts = [r["messages"][0]["content"] for r in records]
    index = {r["id"]: n for n, r in enumerate(records)}
    pairs = [(n, index[r["dup_of"]]) for n, r in enumerate(records) if r.get("planted") == "near_dup"]
    clean = {n for n, r in enumerate(records) if not r.get("planted")}
    print(f"## Near duplicates on the bundled pool ({len(records)} prompts, {len(pairs)} planted pairs, {len(clean)} clean)")
    print("| method | pairs found | clean prompts dropped | seconds |")
    print("|---|---|---|---|")
    for name in ("wordllama", "hashed"):
        started = time.perf_counter()
        vectors = embed(texts, embedder(name, Path))
        found = near_duplicates(texts, similar_pairs(vectors, 0.6, 10), NearDuplicateSettings())
        seconds = time.perf_counter() - started
        hit = sum(found.get(a, (None,))[0] == b or found.get(b, (None,))[0] == a for a, b in pairs)
        print(f"| finloom rule, {name} | {hit}/{len(pairs)} | {len(clean & set(found))} | {seconds:.2f} |")
    library = _library_model()
    for threshold in (0.9, 0.95, 0.98):
        started = time.perf_counter()
        kept = set(library.deduplicate(texts, threshold=threshold, return_indices=True))
        seconds = time.perf_counter() - started
        dropped = set(range(len(texts))) - kept
        hit = sum(a in dropped or b in dropped for a, b in pairs)
        print(f"| WordLlama deduplicate({threshold}) | {hit}/{len(pairs)} | {len(clean & dropped)} | {seconds:.2f} |")


def _library_model():
    import wordllama
    from safetensors import safe_open
    from wordllama import WordLlama
    from wordllama.inference import WordLlamaInference

    root = Path(wordllama.__file__).parent
    with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), framework="np") as handle:
        matrix = handle.get_tensor("embedding.weight")
    return WordLlamaInference(matrix, WordLlama.load_tokenizer(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))


def generated(count: int) -> list[str]:
    from finloom.starter.generate import load_knowledge_base, proper_words
    from finloom.starter.prompt_pool import _prompts

    kb = load_knowledge_base()
    proper = proper_words(kb.finance + kb.general)
    texts: list[str] = []
    seed = 0
    while len(texts) < count:
        texts += [r["messages"][0]["content"] for r in _prompts(kb, seed, "benchmark", proper)]
        seed += 1
    return texts[:count]


def scale_table(count: int) -> None:
    texts = generated(count)
    print(f"\n## Selection on {len(texts):,} generated prompts (peak RSS after generation: {peak_mb():.0f} MB)")
    print("| step | seconds | peak RSS (MB) | result |")
    print("|---|---|---|---|")

    def step(name: str, work):
        started = time.perf_counter()
        result = work()
        print(f"| {name} | {time.perf_counter() - started:.1f} | {peak_mb():.0f} | {result[1]} |")
        return result[0]

    duplicates = step("exact duplicates", lambda: (found := exact_duplicates(texts), f"{len(found):,} dropped"))
    alive = [n for n in range(len(texts)) if n not in duplicates]
    alive_texts = [texts[n] for n in alive]
    vectors = step("embed (wordllama)", lambda: (embed(alive_texts, embedder("wordllama", Path)), f"{len(alive):,} x 256"))
    labels = step("k-means clusters", lambda: (cluster(vectors, 0, 0), ""))
    pairs = step("neighbour search (10 nearest earlier, exact)", lambda: (
        found := similar_pairs(vectors, 0.6, 10), f"{len(found):,} pairs"))
    near = step("near duplicates (LCS check)", lambda: (
        found := near_duplicates(alive_texts, pairs, NearDuplicateSettings()), f"{len(found):,} dropped"))
    rest = [n for n in range(len(alive)) if n not in near]
    taggers = Path("/tmp/finloom-bench-taggers")
    records = [json.loads(line) for line in (STARTER_DATA_DIR / "prompt_tags.jsonl").read_text(encoding="utf-8").splitlines()]
    step("train tag classifiers", lambda: (train_taggers(records, taggers, 0.0, 0), "4 dimensions"))
    tags = step("tag (classifiers + computed)", lambda: (
        [t | computed_tags(alive_texts[n]) for t, n in zip(classify(taggers, [alive_texts[n] for n in rest]), rest)], ""))
    step("template families", lambda: (
        families := template_families(alive_texts, pairs, rest, TemplateSettings()), f"{len(families):,} families"))
    order = diversity_order(labels, rest, {})
    step("quotas + budget", lambda: (apply_quotas(order, dict(zip(rest, tags)), {"ability": {"calculation": Quota(max_share=0.2)}},
                                                  len(rest) // 2), ""))
    library = _library_model()
    step("baseline: WordLlama deduplicate(0.95)", lambda: (
        kept := library.deduplicate(texts, threshold=0.95, return_indices=True), f"{len(texts) - len(kept):,} dropped"))


def throughput(model_dir: str) -> None:
    import httpx

    from finloom.llm.client import LLMClient
    from finloom.prompts.tags import teacher_tags
    from finloom.recipe import ClientSection

    port = 8765
    server = subprocess.Popen([sys.executable, "-m", "finloom", "serve", model_dir, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        texts = generated(64)
        print(f"\n## Teacher tagging throughput against finloom serve ({model_dir}, {len(texts)} prompts, no retries)")
        print("| concurrency | requests | seconds | requests / s | parse failures |")
        print("|---|---|---|---|---|")
        for concurrency in (1, 8):
            config = ClientSection(base_url=f"http://127.0.0.1:{port}/v1", concurrency=concurrency, max_retries=0)
            with LLMClient(config) as client:
                started = time.perf_counter()
                tags = teacher_tags(client, texts, retries=0)
                seconds = time.perf_counter() - started
                print(f"| {concurrency} | {client.requests} | {seconds:.1f} | {client.requests / seconds:.2f} | "
                      f"{sum(t is None for t in tags)} |")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=100_000, help="Generated prompts for the scale table (0: skip).")
    parser.add_argument("--serve", help="A chat model directory to serve for the throughput table.")
    args = parser.parse_args()
    from finloom.logs import quiet_libraries

    quiet_libraries()  # no per-request httpx lines
    quality_table()
    if args.scale:
        scale_table(args.scale)
    if args.serve:
        throughput(args.serve)


if __name__ == "__main__":
    main()
