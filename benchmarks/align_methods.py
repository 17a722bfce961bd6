"""Alignment methods side by side from the same SFT model, at the same number of optimiser steps: GRPO (with and
without the KL on SFT data), PPO, DPO and KTO, each on the held-out RL prompts of every category and on held-out
general and finance perplexity.

The study's recipe is ``recipes/studies/align_methods.yaml`` (the quickstart's pipeline and GRPO settings);
each variant overrides its ``align`` section, copies a finished run of it (everything before align) and runs
the align stage alone. The held-out prompts are those the GRPO run holds out (the same seed and split), answered
greedily and scored by the same reward combination; DPO and KTO train on the bundled preference pairs, which
hold no verifiable prompts, so they show what preference data alone does to those rewards.

    finloom run recipes/studies/align_methods.yaml          # or use a finished quickstart run
    python benchmarks/align_methods.py --run-dir runs/align_methods [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from finloom.align.categories import greedy_rewards
from finloom.align.rewards import RewardCombination
from finloom.align.stage import prompt_rows, split_heldout
from finloom.eval.perplexity import perplexity
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.recipe import STARTER_DATA_DIR, load_recipe, recipe_to_dict
from finloom.runner import Runner
from finloom.stages import model_stage_before

STUDY = Path(__file__).parents[1] / "recipes" / "studies" / "align_methods.yaml"
PAIRS = [{"path": "starter:preferences.jsonl"}]
VARIANTS = {
    "grpo": {},
    "grpo, gamma 0": {"grpo": {"gamma": 0.0}},
    "ppo": {"method": "ppo"},
    "dpo": {"method": "dpo", "datasets": PAIRS},
    "kto": {"method": "kto", "datasets": PAIRS},
}


def variant_recipe(study: dict, overrides: dict, steps: int, folder: Path, name: str):
    recipe = json.loads(json.dumps(study))
    align = recipe["align"]
    for key, value in overrides.items():
        align[key] = ({**align.get(key, {}), **value} if isinstance(value, dict) else value)
    align["train"]["max_steps"] = steps
    recipe["report"] = {"enabled": False}
    path = folder / f"{name.replace(', ', '_').replace(' ', '_')}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return load_recipe(path)


def measure(model_dir: Path, heldout: dict, score, max_tokens: int, ppl_tokens: int) -> dict:
    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
    row = {}
    for name, rows in heldout.items():
        rewards = greedy_rewards(model, tokenizer, rows, score, max_tokens)[1]
        row[name] = round(sum(rewards) / len(rewards), 6)
    separator = tokenizer.get_vocab().get("<|endoftext|>", tokenizer.eos_token_id)
    for domain in ("general", "finance"):
        texts = [json.loads(line)["text"] for line in
                 (STARTER_DATA_DIR / f"{domain}_heldout.jsonl").read_text(encoding="utf-8").splitlines()]
        row[f"{domain} ppl"] = perplexity(model, tokenizer, texts, separator, 256, ppl_tokens, 8)["perplexity"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished run of the study recipe (through merge)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ppl-tokens", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path("runs/align_methods_variants"))
    args = parser.parse_args()
    base = load_recipe(STUDY)
    study = recipe_to_dict(base)
    args.work.mkdir(parents=True, exist_ok=True)
    grpo = base.align.grpo
    rows, _ = prompt_rows(base.align.datasets, base.resolve)
    _, heldout = split_heldout(rows, grpo.reweighting.holdout, base.seed)
    heldout = {name: members[:grpo.reweighting.max_prompts] for name, members in heldout.items()}
    score = RewardCombination(grpo)
    start = model_stage_before(base, "align")
    table = {f"before ({start})": measure(args.run_dir / start / "model", heldout, score, grpo.max_completion_tokens,
                                          args.ppl_tokens) | {"align seconds": 0}}
    for name in args.variants:
        run_dir = args.work / name.replace(", ", "_").replace(" ", "_")
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(args.run_dir, run_dir, ignore=shutil.ignore_patterns("align", "eval", "report*", "*.lock"))
        recipe = variant_recipe(study, VARIANTS[name], args.steps, args.work, name)
        started = time.perf_counter()
        Runner(recipe, run_dir).run(only="align", force=True)
        seconds = round(time.perf_counter() - started, 1)
        table[name] = measure(run_dir / "align" / "model", heldout, score, grpo.max_completion_tokens,
                              args.ppl_tokens) | {"align seconds": seconds}
    columns = list(next(iter(table.values())))
    print(f"\n{args.steps} optimiser steps each; held-out reward per category (greedy), held-out perplexity")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                                         for c in columns) + " |")
    print(json.dumps(table))


if __name__ == "__main__":
    main()
