"""What PAS costs at serving time, side by side in one run: plain transformers ``generate`` (the library baseline),
``finloom serve`` without PAS, and ``finloom serve --pas`` (each prompt first goes through the PAS model).

Greedy chat answers of ``--max-tokens`` to the first ``--prompts`` prompts of the bundled prompt pool, one request
at a time and ``--concurrency`` at once. The baseline runs in its own process, so no idle torch threads of this one
compete with the server. ``finloom`` sets ``OMP_WAIT_POLICY=PASSIVE`` (torch's threads sleep while they wait: many
times faster when another process shares the CPU); the server is also measured with ``ACTIVE``, the OpenMP default,
which a machine given to the server alone may prefer. Run after the quickstart (it needs a run with a pas stage):

    python benchmarks/pas_serve.py --run-dir runs/quickstart [--prompts 16] [--max-tokens 32] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import finloom_server


def plain_transformers(model_dir: Path, prompts: list[str], max_tokens: int) -> float:
    """Seconds for every answer with transformers alone: chat template, greedy generate, decode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    started = time.perf_counter()
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return time.perf_counter() - started


def served(run_dir: Path, options: list[str], port: int, prompts: list[str], max_tokens: int,
           concurrency: int, wait_policy: str = "PASSIVE") -> tuple[float, float, int]:
    """(seconds one at a time, seconds ``concurrency`` at once, answers that carried a complement)."""
    with finloom_server(run_dir / "sft" / "model", port, "--max-concurrency", str(concurrency), *options,
                        env={"OMP_WAIT_POLICY": wait_policy}) as url:
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency))  # kept-alive connections

        def ask(prompt: str) -> dict:
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
            return client.post(f"{url}/chat/completions", json=body).json()

        started = time.perf_counter()
        replies = [ask(prompt) for prompt in prompts]
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(ask, prompts))
        parallel = time.perf_counter() - started
        return sequential, parallel, sum(reply.get("pas") is not None for reply in replies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=8772)
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()

    from finloom.recipe import STARTER_DATA_DIR

    pas_model = options.run_dir / "pas" / "model"
    if not pas_model.is_dir():
        sys.exit(f"no PAS model at {pas_model}: run the quickstart (or a recipe with a pas stage) first")
    pool = [json.loads(line) for line in (STARTER_DATA_DIR / "prompt_pool.jsonl").read_text(encoding="utf-8").splitlines()]
    prompts = [next(m["content"] for m in row["messages"] if m["role"] == "user") for row in pool[:options.prompts]]
    if options.baseline_only:
        print(plain_transformers(options.run_dir / "sft" / "model", prompts, options.max_tokens))
        return 0
    baseline = float(subprocess.run([sys.executable, __file__, *sys.argv[1:], "--baseline-only"], check=True,
                                    capture_output=True, text=True).stdout.split()[-1])
    plain = served(options.run_dir, ["--no-pas"], options.port, prompts, options.max_tokens, options.concurrency)
    active = served(options.run_dir, ["--no-pas"], options.port + 2, prompts, options.max_tokens, options.concurrency,
                    "ACTIVE")
    with_pas = served(options.run_dir, ["--pas", str(pas_model)], options.port + 1, prompts, options.max_tokens,
                      options.concurrency)
    n = len(prompts)
    print(f"{n} prompts, greedy, {options.max_tokens} tokens per answer; PAS complements up to 96 tokens")
    print("| | s / answer, one at a time | ratio to transformers | s / answer, "
          f"{options.concurrency} at once | answers with a complement |")
    print("|---|---|---|---|---|")
    print(f"| transformers generate (baseline) | {baseline / n:.3f} | 1.00x | — | — |")
    for label, (sequential, parallel, augmented) in (("finloom serve", plain), ("finloom serve, OMP_WAIT_POLICY=ACTIVE",
                                                                                 active), ("finloom serve --pas", with_pas)):
        print(f"| {label} | {sequential / n:.3f} | {sequential / baseline:.2f}x | {parallel / n:.3f} | {augmented} |")
    print(f"PAS adds {(with_pas[0] - plain[0]) / n:.3f} s per request one at a time "
          f"({with_pas[0] / plain[0]:.2f}x the unaugmented request)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
