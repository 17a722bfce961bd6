"""Step time and memory of self-constraint CPT against the plain HF Trainer on CE, same model, data and batch.

Variants, each in its own subprocess (so its peak RSS is its own), interleaved over repeats:

- ``hf_trainer_ce``: the library baseline: ``Trainer`` + ``DataCollatorForLanguageModeling`` on a
  ``datasets.Dataset`` of the same packed blocks, plain CE;
- ``finloom_ce``: finloom's ``ce`` objective (the Trainer on the streamed token shards);
- ``self_constraint_online_full`` / ``_online_top500``: ``SelfConstraintTrainer`` with a frozen copy
  of the start model, full-vocabulary KL / top-500 KL;
- ``self_constraint_precomputed_top500``: the same reading a precomputed top-500 store (its one-off
  cost is reported separately as ``precompute_s``).

Step time is the median over steps after a warm-up, from per-step timestamps. The start model is a
freshly built quickstart-size Llama (weights do not change the cost); the shards come from the
quickstart's data stage on the bundled data, mixed 50/50.

    python benchmarks/pretrain_objective.py [--steps 40] [--repeats 2] [--batch 16] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import StepClock

VARIANTS = ("hf_trainer_ce", "finloom_ce", "self_constraint_online_full", "self_constraint_online_top500",
            "self_constraint_precomputed_top500")
WARMUP = 5


def prepare(work: Path, seq_len: int) -> dict:
    """The quickstart's data stage (shards at seq_len) and a quickstart-size start model."""
    from finloom.llm.loading import load_tokenizer, save_model
    from finloom.llm.scratch import build_model
    from finloom.logs import quiet_libraries
    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    quiet_libraries()
    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "quickstart.yaml").read_text())
    recipe["name"] = "bench"
    recipe["data"]["mix"]["seq_len"] = seq_len
    for stage in ("base", "pretrain"):
        recipe[stage]["train"]["seq_len"] = seq_len
    recipe["data"]["decontam"] = {"enabled": False}
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    loaded = load_recipe(path)
    Runner(loaded, work / "run").run(only="data")
    tokenizer = load_tokenizer(work / "run" / "data" / "tokenizer")
    save_model(build_model(loaded.model.scratch, tokenizer), tokenizer, work / "start")
    return {"start": str(work / "start"), "shards": str(work / "run" / "data" / "shards" / "pretrain")}


def child(variant: str, paths: dict, steps: int, batch: int, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from finloom.data.mixing import TokenShardDataset, collate_blocks
    from finloom.llm.loading import load_causal_lm, load_tokenizer
    from finloom.logs import quiet_libraries
    from finloom.pretrain.reference import PrecomputedReference, precompute_reference
    from finloom.pretrain.self_constraint import SelfConstraintConfig, SelfConstraintTrainer
    from finloom.runner import process_peak_rss_mb

    quiet_libraries()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(paths["start"])
    model = load_causal_lm(paths["start"])
    dataset = TokenShardDataset(Path(paths["shards"]), seed=0)
    finance = dataset.index["domains"].index("finance")
    common = dict(output_dir=str(work / variant), max_steps=steps, per_device_train_batch_size=batch,
                  learning_rate=1e-3, report_to="none", save_strategy="no", seed=0, disable_tqdm=True,
                  dataloader_pin_memory=False, logging_steps=10)
    clock = StepClock(WARMUP)
    result = {"variant": variant}
    if variant == "hf_trainer_ce":
        rows = [{"input_ids": item["input_ids"].tolist()} for item in dataset]
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=Dataset.from_list(rows),
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    elif variant == "finloom_ce":
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset,
                          data_collator=collate_blocks())
    else:
        top_k = None if variant.endswith("full") else 500
        extra = {}
        if "precomputed" in variant:
            began = time.perf_counter()
            precompute_reference(load_causal_lm(paths["start"]), Path(paths["shards"]), work / "reference", top_k,
                                 finance, batch_size=batch)
            result["precompute_s"] = round(time.perf_counter() - began, 2)
            extra["reference"] = PrecomputedReference(work / "reference")
        else:
            extra["ref_model"] = load_causal_lm(paths["start"])
        args = SelfConstraintConfig(**common, kl_top_k=top_k, finance_domain=finance)
        trainer = SelfConstraintTrainer(model=model, args=args, train_dataset=dataset,
                                        data_collator=collate_blocks(tags=True), **extra)
    trainer.add_callback(clock.callback)
    trainer.train()
    result["step_time_s"] = round(clock.step_time(), 4)
    result["peak_rss_mb"] = process_peak_rss_mb()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child, json.loads(options.paths), options.steps, options.batch,
                               Path(options.work))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = prepare(work, options.seq_len)
        runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        for repeat in range(options.repeats):  # interleaved, so drift hits every variant alike
            for variant in VARIANTS:
                done = subprocess.run([sys.executable, __file__, "--child", variant, "--paths", json.dumps(paths),
                                       "--work", str(work / f"r{repeat}"), "--steps", str(options.steps),
                                       "--batch", str(options.batch)], capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    tokens = options.batch * options.seq_len
    summary = {}
    for variant, results in runs.items():
        step = statistics.median(r["step_time_s"] for r in results)
        summary[variant] = {"step_time_s": round(step, 4), "tokens_per_s": round(tokens / step),
                            "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}
        if "precompute_s" in results[0]:
            summary[variant]["precompute_s"] = statistics.median(r["precompute_s"] for r in results)
    base = summary["hf_trainer_ce"]["step_time_s"]
    for values in summary.values():
        values["ratio_vs_hf_trainer_ce"] = round(values["step_time_s"] / base, 3)
    print(json.dumps({"steps": options.steps, "batch": options.batch, "seq_len": options.seq_len,
                      "repeats": options.repeats, "variants": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
