"""GRPO step time: finloom's GRPO (exact top-k KL in the reward, optionally the KL on SFT data) against TRL's
stock GRPOTrainer (its approximate KL in the loss) on the same model, prompts, reward and batch.

Each variant runs in its own subprocess (its own peak RSS), interleaved over repeats, best of each; the step
time is the median optimiser step after three warm-up steps. All sample the same number of tokens per answer
(generation runs to ``--completion-tokens`` unless an answer ends), so the difference is the KL terms.

- ``trl``: ``GRPOTrainer`` with ``beta`` 0.05 (TRL builds its reference, k3 estimator on the sampled token);
- ``finloom``: ``FinloomGRPOTrainer`` with ``kl_beta`` 0.05 over the top 500 tokens, gamma 0;
- ``finloom+sft_kl``: the same with gamma 0.1 (a forward of policy and reference on an SFT batch per step: 12
  conversations, as many as answers);
- ``finloom+sft_kl/4``: the same with 3 conversations per step (``grpo.sft_batch_size``).

    python benchmarks/align_grpo.py --model runs/quickstart/merge/model [--steps 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import StepClock, run_child

VARIANTS = ("trl", "finloom", "finloom+sft_kl", "finloom+sft_kl/4")


def prompts() -> list[dict]:
    from finloom.align.stage import prompt_rows
    from finloom.recipe import STARTER_DATA_DIR, ChatSource

    return prompt_rows([ChatSource(path="rl_prompts.jsonl")], lambda p: STARTER_DATA_DIR / p)[0]


def sft_rows(tokenizer) -> list[dict]:
    from finloom.llm.chat_template import tokenize_with_assistant_mask
    from finloom.recipe import STARTER_DATA_DIR

    lines = (STARTER_DATA_DIR / "sft_finance.jsonl").read_text(encoding="utf-8").splitlines()[:200]
    return [tokenize_with_assistant_mask(tokenizer, json.loads(line)["messages"], 320) for line in lines]


def step_time(model_dir: str, variant: str, steps: int, tokens: int, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from finloom.align.grpo import FinloomGRPOConfig, FinloomGRPOTrainer
    from finloom.align.rewards import RewardCombination
    from finloom.llm.chat_template import stop_at_end_of_turn
    from finloom.llm.loading import load_causal_lm, load_tokenizer, load_trainable
    from finloom.recipe import GRPOArgs
    from finloom.runner import process_peak_rss_mb

    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    policy = load_trainable(model_dir)
    stop_at_end_of_turn(policy, tokenizer)
    common = dict(output_dir=str(work / variant), per_device_train_batch_size=12, num_generations=3,
                  max_completion_length=tokens, temperature=0.8, learning_rate=1e-5, max_steps=steps, seed=0,
                  report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                  logging_steps=100, log_completions=False)
    data, reward = Dataset.from_list(prompts()), RewardCombination(GRPOArgs())
    if variant == "trl":
        trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=GRPOConfig(**common, beta=0.05),
                              train_dataset=data, processing_class=tokenizer)
    else:
        gamma = 0.1 if "sft_kl" in variant else 0.0
        trainer = FinloomGRPOTrainer(
            model=policy, reward_funcs=[reward], train_dataset=data, processing_class=tokenizer,
            args=FinloomGRPOConfig(**common, kl_beta=0.05, kl_top_k=500, sft_kl_gamma=gamma,
                                   sft_kl_batch_size=3 if variant.endswith("/4") else None),
            ref_model=load_causal_lm(model_dir), sft_rows=sft_rows(tokenizer) if gamma else None)
    clock = StepClock(warmup=3)
    trainer.add_callback(clock.callback)
    trainer.train()
    return {"step_s": round(clock.step_time(), 4), "peak_rss_mb": process_peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/quickstart/merge/model", help="a chat model (a run's SFT or merge)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    options = parser.parse_args()
    from finloom.logs import quiet_libraries

    quiet_libraries()
    if options.child:
        print(json.dumps(step_time(options.model, options.child, options.steps, options.completion_tokens,
                                   Path(options.work))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = {variant: [] for variant in VARIANTS}
        for _ in range(options.repeats):
            for variant in VARIANTS:
                runs[variant].append(run_child(__file__, "--model", options.model, "--steps", str(options.steps),
                                               "--completion-tokens", str(options.completion_tokens), "--work", tmp,
                                               "--child", variant))
    best = {variant: min(results, key=lambda r: r["step_s"]) for variant, results in runs.items()}
    print(f"{options.steps} steps of 12 answers (4 prompts x 3), {options.completion_tokens} tokens at most each; "
          f"best of {options.repeats}\n")
    print("| trainer | step (s) | vs TRL | peak RSS (MB) |\n|---|---|---|---|")
    for variant, result in best.items():
        print(f"| {variant} | {result['step_s']:.3f} | {result['step_s'] / best['trl']['step_s']:.2f}x "
              f"| {result['peak_rss_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
