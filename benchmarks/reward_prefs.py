"""Preference-builder throughput against a local ``finloom serve``, at client concurrency 1 and 8.

The builder's two endpoint-bound steps, as the prefs stage runs them: sampling ``--samples`` answers per prompt
(``finloom.llm.sampling.sample_candidates``) and judging each answer in absolute mode
(``finloom.reward.judging.judged_scores``), both through the one client, against a served chat model standing
in for the answering model and the judge. Prompts: the first ``--prompts`` of the bundled prompt pool.

    python benchmarks/reward_prefs.py --model runs/quickstart/sft/model [--prompts 16] [--samples 3]
"""

from __future__ import annotations

import argparse
import json
import time

from common import finloom_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/quickstart/sft/model")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--port", type=int, default=8771)
    options = parser.parse_args()

    from finloom.llm.client import LLMClient
    from finloom.llm.sampling import sample_candidates
    from finloom.logs import quiet_libraries
    from finloom.recipe import STARTER_DATA_DIR, ClientSection
    from finloom.reward.judging import judged_scores

    quiet_libraries()
    pool = [json.loads(line) for line in (STARTER_DATA_DIR / "prompt_pool.jsonl").read_text(encoding="utf-8").splitlines()]
    prompts = [[m for m in row["messages"] if m["role"] != "assistant"][:1] for row in pool[:options.prompts]]
    with finloom_server(options.model, options.port) as url:
        print("| concurrency | prompts | answers | sampling s | judging s | prompts / s | judge parse failures |")
        print("|---|---|---|---|---|---|---|")
        for concurrency in (1, 8):
            with LLMClient(ClientSection(base_url=url, concurrency=concurrency, max_retries=0)) as client:
                began = time.perf_counter()
                answers = sample_candidates([client], prompts, options.samples, 1.0, 0.99, 64, seed=0)
                sampled = time.perf_counter()
                judged_items = judged_scores(client, [{"mode": "absolute", "prompt": messages[-1]["content"],
                                                       "answers": candidates, "golden": None}
                                                      for messages, candidates in zip(prompts, answers)], retries=0)
                failures = sum(score is None for scores, _ in judged_items for score in scores)
                judged = time.perf_counter()
            total = sum(len(a) for a in answers)
            print(f"| {concurrency} | {len(prompts)} | {total} | {sampled - began:.1f} | {judged - sampled:.1f} "
                  f"| {len(prompts) / (judged - began):.2f} | {failures} of {total} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
