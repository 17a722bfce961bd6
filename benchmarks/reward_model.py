"""The reward model: finloom's BT + MSE trainer against TRL's stock RewardTrainer, and BT alone against BT + MSE.

1. Throughput: pairs per second of ``ScoredRewardTrainer`` (alpha 1) and of TRL's ``RewardTrainer`` on the
   same pairs, model and batch, each in its own subprocess, interleaved over repeats (best of each).
2. What the squared-error term buys: from the same backbone, BT alone (alpha 0) and BT + MSE (alpha 1)
   trained for 1 and 2 epochs on the bundled preferences (90% of them; 120 of 300 carry scores), then
   held-out accuracy, correlation with the scores and mean |reward - score| on the other 10%.

The backbone is a chat model of a finished run (default: the quickstart's merged SFT model).

    python benchmarks/reward_model.py --backbone runs/quickstart/merge/model [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import StepClock, run_child


def rows() -> list[dict]:
    from finloom.llm.chat_data import load_preferences
    from finloom.recipe import ChatSource, STARTER_DATA_DIR
    from finloom.reward.stage import with_scores

    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_preferences([ChatSource(path="preferences.jsonl")], lambda p: STARTER_DATA_DIR / p,
                                  Path(tmp) / "rejects.jsonl", "bench", keep_scores=True)
    return with_scores(loaded, (0.0, 1.0))


def build(backbone: str, variant: str, alpha: float, data: list[dict], work: Path, **train):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from finloom.llm.loading import load_tokenizer, load_trainable
    from finloom.reward.trainer import ScoredRewardConfig, ScoredRewardTrainer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(backbone)
    model = load_trainable(backbone, model_class=AutoModelForSequenceClassification, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    common = dict(output_dir=str(work / variant), per_device_train_batch_size=16, learning_rate=5e-4,
                  report_to="none", save_strategy="no", seed=0, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                  bf16=False, max_length=256, logging_steps=10, **train)
    if variant == "trl":
        data = [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in data]
        return RewardTrainer(model=model, args=RewardConfig(**common), processing_class=tokenizer,
                             train_dataset=Dataset.from_list(data))
    return ScoredRewardTrainer(model=model, args=ScoredRewardConfig(**common, score_alpha=alpha),
                               processing_class=tokenizer, train_dataset=Dataset.from_list(data))


def throughput(backbone: str, variant: str, steps: int, work: Path) -> dict:
    from finloom.runner import process_peak_rss_mb

    trainer = build(backbone, variant, 1.0, rows(), work, max_steps=steps)
    clock = StepClock(warmup=3)
    trainer.add_callback(clock.callback)
    trainer.train()
    timed, seconds = clock.timed_steps()
    return {"pairs_per_s": round(16 * timed / seconds, 2), "peak_rss_mb": process_peak_rss_mb()}


def quality(backbone: str, alpha: float, epochs: int, work: Path) -> dict:
    from datasets import Dataset

    from finloom.reward.calibration import calibration
    from finloom.reward.stage import heldout_rewards, split_pairs

    train, held = split_pairs(rows(), 1234, 0.1)
    trainer = build(backbone, f"alpha{alpha}", alpha, train, work, num_train_epochs=epochs)

    indexed = [dict(row, pair_index=i) for i, row in enumerate(held)]
    trainer.eval_dataset = trainer._prepare_dataset(Dataset.from_list(indexed), trainer.processing_class, trainer.args,
                                                    "eval")
    trainer.train()
    result = calibration(heldout_rewards(trainer, held))
    result.pop("by_source")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="runs/quickstart/merge/model")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true", help="Only the BT vs BT + MSE comparison.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--alpha", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    options = parser.parse_args()
    from finloom.logs import quiet_libraries

    quiet_libraries()
    if options.child:
        work = Path(options.work)
        result = (quality(options.backbone, options.alpha, options.epochs, work) if options.child == "quality"
                  else throughput(options.backbone, options.child, options.steps, work))
        print(json.dumps(result))
        return 0

    def child(*args: str) -> dict:
        return run_child(__file__, "--backbone", options.backbone, "--steps", str(options.steps), "--work", tmp, *args)

    with tempfile.TemporaryDirectory() as tmp:
        speed = {"trl": [], "finloom": []}
        for _ in range(0 if options.skip_speed else options.repeats):
            for variant in speed:
                speed[variant].append(child("--child", variant))
        best = {v: max(r, key=lambda x: x["pairs_per_s"]) for v, r in speed.items() if r}
        if best:
            print("| trainer | pairs/s | vs TRL | peak RSS (MB) |\n|---|---|---|---|")
        for variant, result in best.items():
            print(f"| {variant} | {result['pairs_per_s']:.1f} | {result['pairs_per_s'] / best['trl']['pairs_per_s']:.2f}x "
                  f"| {result['peak_rss_mb']:,.0f} |")
        print("\n| loss | epochs | held-out accuracy | Pearson | Spearman | mean abs(reward - score) |\n|---|---|---|---|---|---|")
        for alpha in (0.0, 1.0):
            for epochs in (1, 2):
                r = child("--child", "quality", "--alpha", str(alpha), "--epochs", str(epochs))
                name = "BT" if alpha == 0 else "BT + MSE"
                print(f"| {name} | {epochs} | {r['eval_accuracy']:.3f} | {r['score_pearson']} | {r['score_spearman']} "
                      f"| {r['score_mae']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
