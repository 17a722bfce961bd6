"""finloom's `pretrain` stage against the plain HF Trainer doing the same work, in one run.

Both start from the same saved model, read the same cleaned corpora, cut the same 256-token
blocks, train the same number of steps with the same batch and learning rate, and save a model.
finloom adds what the baseline lacks (manifest, input/output hashing, checkpoints, resumability,
progress bar, the domain mix); this measures what that costs.

    python benchmarks/pretrain_stage.py [--steps 60] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from finloom.llm.loading import load_causal_lm, load_tokenizer, save_model
from finloom.llm.scratch import END_OF_TEXT, build_model, train_tokenizer
from finloom.logs import quiet_libraries
from finloom.pretrain.blocks import read_texts, token_blocks
from finloom.recipe import STARTER_DATA_DIR, ScratchModel, load_recipe
from finloom.runner import Runner

SEQ_LEN, BATCH = 256, 16


def make_start_model(folder: Path) -> Path:
    texts = read_texts(STARTER_DATA_DIR / "general_corpus.jsonl") + read_texts(STARTER_DATA_DIR / "finance_corpus.jsonl")
    tokenizer = train_tokenizer(texts, 4096)
    model = build_model(ScratchModel(), tokenizer)
    return save_model(model, tokenizer, folder / "start")


def plain_trainer(start: Path, work: Path, steps: int) -> float:
    """The baseline: read, tokenise, block, Trainer.train, save — nothing else."""
    began = time.perf_counter()
    tokenizer = load_tokenizer(start)
    model = load_causal_lm(start)
    separator = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    blocks = []
    for name in ("general_corpus.jsonl", "finance_corpus.jsonl"):
        blocks += token_blocks(read_texts(STARTER_DATA_DIR / name), tokenizer, SEQ_LEN, separator)
    args = TrainingArguments(output_dir=str(work / "plain"), max_steps=steps, per_device_train_batch_size=BATCH,
                             learning_rate=1e-3, report_to="none", save_strategy="no", seed=1234,
                             disable_tqdm=True, dataloader_pin_memory=False)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list([{"input_ids": b} for b in blocks]),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    trainer.save_model(str(work / "plain" / "model"))
    return time.perf_counter() - began


def finloom_stage(start: Path, work: Path, steps: int, run_name: str) -> float:
    recipe = {
        "name": run_name, "seed": 1234, "model": {"hf": str(start)},
        "data": {"general": [{"path": "starter:general_corpus.jsonl"}], "finance": [{"path": "starter:finance_corpus.jsonl"}],
                 "general_heldout": [{"path": "starter:general_heldout.jsonl"}],
                 "finance_heldout": [{"path": "starter:finance_heldout.jsonl"}]},
        "pretrain": {"train": {"max_steps": steps, "batch_size": BATCH, "seq_len": SEQ_LEN, "learning_rate": 1e-3,
                               "save_steps": max(1, steps // 2)}},
        "sft": {"enabled": False}, "reward": {"enabled": False}, "align": {"enabled": False},
        "eval": {"enabled": False}, "report": {"enabled": False},
    }
    path = work / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    runner = Runner(load_recipe(path), work / run_name)
    runner.run(only="data")  # the baseline reads already-clean text, so the data stage is not timed
    began = time.perf_counter()
    runner.run(only="pretrain")
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = make_start_model(work)
        plain, ours = [], []
        for repeat in range(options.repeats):  # interleaved, so drift hits both alike
            plain.append(plain_trainer(start, work, options.steps))
            ours.append(finloom_stage(start, work, options.steps, f"run{repeat}"))
    result = {
        "steps": options.steps, "batch": BATCH, "seq_len": SEQ_LEN,
        "hf_trainer_s": round(statistics.median(plain), 2), "finloom_pretrain_s": round(statistics.median(ours), 2),
        "ratio_finloom_over_hf": round(statistics.median(ours) / statistics.median(plain), 3),
        "tokens_per_s_hf": round(options.steps * BATCH * SEQ_LEN / statistics.median(plain)),
        "tokens_per_s_finloom": round(options.steps * BATCH * SEQ_LEN / statistics.median(ours)),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
