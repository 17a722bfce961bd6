"""Packed SFT against TRL's SFTTrainer without packing and with TRL's own packing, same model, data and batch.

Variants, each in its own subprocess (its peak RSS is its own), interleaved over repeats:

- ``trl_unpacked``: the library baseline: ``SFTTrainer`` on the tokenized conversations (input_ids +
  assistant-only labels), ``packing=False``: each batch padded to its longest conversation;
- ``trl_packed``: ``SFTTrainer(packing=True, packing_strategy="bfd")``: TRL's packer and its
  padding-free collator, which flattens the batch into one row;
- ``finloom_packed``: what the sft stage does: TRL's packer, finloom's ``PackedCollator`` (rows apart).

Throughput is effective tokens per second: real (non-padding) tokens of the timed steps over their time
(median-free: total over the steps after a warm-up). Utilisation is real tokens over the token slots of
the batches the model actually ran. Loss parity: on the same fixed samples, each collator's per-sample
loss against the sample run alone (max absolute difference), with the model's SDPA attention.

Data: the bundled prompt pool's conversations (project-written responses), tokenized with a byte-level
BPE trained on them, assistant-only labels, cut at --seq-len; model: the quickstart's scratch Llama.

    python benchmarks/sft_packing.py [--steps 30] [--repeats 2] [--batch 16] [--seq-len 320]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import StepClock, run_child

VARIANTS = ("trl_unpacked", "trl_packed", "finloom_packed")
WARMUP = 3


def prepare(work: Path, seq_len: int) -> dict:
    from finloom.llm.chat_data import load_conversations
    from finloom.llm.chat_template import tokenize_with_assistant_mask
    from finloom.llm.loading import save_model
    from finloom.llm.scratch import build_model, train_tokenizer
    from finloom.recipe import ChatSource, ScratchModel, load_recipe

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "quickstart.yaml")
    source = ChatSource(path="starter:prompt_pool.jsonl")
    raw = load_conversations([source], recipe.resolve, work / "rejects.jsonl", "bench")
    tokenizer = train_tokenizer((m["content"] for row in raw for m in row["messages"]), recipe.model.scratch.vocab_size)
    rows = [tokenize_with_assistant_mask(tokenizer, row["messages"], seq_len) for row in raw]
    (work / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    spec: ScratchModel = recipe.model.scratch
    save_model(build_model(spec, tokenizer), tokenizer, work / "model")
    return {"model": str(work / "model"), "rows": str(work / "rows.json")}


def child(variant: str, paths: dict, steps: int, batch: int, seq_len: int, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from finloom.llm.loading import load_tokenizer, load_trainable
    from finloom.logs import quiet_libraries
    from finloom.runner import process_peak_rss_mb
    from finloom.sft.packing import PackedCollator, pack_rows

    quiet_libraries()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(paths["model"])
    model = load_trainable(paths["model"])
    model.config.use_cache = False
    rows = json.loads(Path(paths["rows"]).read_text(encoding="utf-8"))
    config = dict(output_dir=str(work / variant), max_steps=steps, per_device_train_batch_size=batch,
                  learning_rate=1e-3, report_to="none", save_strategy="no", seed=0, disable_tqdm=True,
                  dataloader_pin_memory=False, logging_steps=10, max_length=seq_len, dataset_num_proc=None,
                  bf16=False, use_cpu=not torch.cuda.is_available())
    if variant == "trl_unpacked":
        trainer = SFTTrainer(model=model, args=SFTConfig(**config, packing=False), processing_class=tokenizer,
                             train_dataset=Dataset.from_list(rows))
    elif variant == "trl_packed":
        trainer = SFTTrainer(model=model, args=SFTConfig(**config, packing=True, packing_strategy="bfd"),
                             processing_class=tokenizer, train_dataset=Dataset.from_list(rows))
    else:
        trainer = SFTTrainer(model=model, args=SFTConfig(**config, packing=False), processing_class=tokenizer,
                             train_dataset=pack_rows(rows, seq_len), data_collator=PackedCollator(tokenizer.pad_token_id))
    inner, seen = trainer.data_collator, []

    def counting(examples):
        batch_out = inner(examples)
        seen.append((sum(len(e["input_ids"]) for e in examples), batch_out["input_ids"].numel()))
        return batch_out

    trainer.data_collator = counting
    clock = StepClock(WARMUP)
    trainer.add_callback(clock.callback)
    trainer.train()
    # dataloader batches and steps pair up one to one (grad_accum 1); the first WARMUP steps are left out
    steps, seconds = clock.timed_steps()
    real = sum(tokens for tokens, _ in seen[WARMUP + 1:WARMUP + 1 + steps])
    return {"variant": variant, "effective_tokens_per_s": round(real / seconds, 1),
            "utilisation": round(sum(t for t, _ in seen) / sum(s for _, s in seen), 4),
            "loss_parity_max_abs": loss_parity(variant, model.eval(), rows, tokenizer.pad_token_id, seq_len),
            "peak_rss_mb": process_peak_rss_mb()}


def loss_parity(variant: str, model, rows: list[dict], pad: int, seq_len: int) -> float | None:
    """Max |per-sample loss in a packed batch - the same sample alone| over 24 samples (None: nothing packed)."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finloom.sft.packing import PackedCollator, pack_rows

    if variant == "trl_unpacked":
        return None
    sample = rows[:24]
    packed = list(pack_rows(sample, seq_len))
    collate = (DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True) if variant == "trl_packed"
               else PackedCollator(pad))
    batch = collate(packed)
    worst = 0.0
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "position_ids", "attention_mask")}
        logits = model(**inputs).logits
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                   ignore_index=-100, reduction="none").view(batch["labels"][:, 1:].shape)
        flat = batch["input_ids"].shape[0] == 1 and len(packed) > 1
        alone_by_ids = {tuple(row["input_ids"]): row for row in sample}
        filled: dict[int, int] = {}
        for r, example in enumerate(packed):
            for n in example["seq_lengths"]:
                row = 0 if flat else r
                start, filled[row] = filled.get(row, 0), filled.get(row, 0) + n
                alone = alone_by_ids[tuple(batch["input_ids"][row, start:start + n].tolist())]
                single = model(input_ids=torch.tensor([alone["input_ids"]])).logits
                expected = torch.nn.functional.cross_entropy(single[0, :-1], torch.tensor(alone["labels"][1:]),
                                                             ignore_index=-100, reduction="sum")
                worst = max(worst, abs(float(losses[row, start:start + n - 1].sum() - expected)))
    return round(worst, 6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=320)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child, json.loads(options.paths), options.steps, options.batch,
                               options.seq_len, Path(options.work))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = prepare(work, options.seq_len)
        runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        for repeat in range(options.repeats):
            for variant in VARIANTS:
                runs[variant].append(run_child(__file__, "--child", variant, "--paths", json.dumps(paths), "--work",
                                               str(work / f"r{repeat}"), "--steps", str(options.steps), "--batch",
                                               str(options.batch), "--seq-len", str(options.seq_len)))
    best = {variant: max(results, key=lambda r: r["effective_tokens_per_s"]) for variant, results in runs.items()}
    baseline = best["trl_unpacked"]["effective_tokens_per_s"]
    print("| variant | effective tokens/s | vs TRL unpacked | token utilisation | loss parity (max abs) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for variant, result in best.items():
        parity = result["loss_parity_max_abs"]
        print(f"| {variant} | {result['effective_tokens_per_s']:,.0f} | {result['effective_tokens_per_s'] / baseline:.2f}x "
              f"| {result['utilisation']:.1%} | {'—' if parity is None else f'{parity:.2e}'} | {result['peak_rss_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
