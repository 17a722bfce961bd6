"""The training stages on a GPU, each through ``finloom run`` on a recipe: SFT full / LoRA / QLoRA and GRPO
single-process / FSDP / ZeRO-3.

What a CPU cannot show: peak GPU memory of full fine-tuning against LoRA and QLoRA (nf4) on the same model and
batch, effective (non-padding) tokens per second packed and unpacked in bfloat16, and GRPO's align stage
launched by accelerate under FSDP (v2, the repo's config) and DeepSpeed ZeRO-3 (when deepspeed imports), with
one process each (a machine with one GPU). The model is built here from scratch (random weights, a BPE
tokenizer trained on the bundled corpora): only memory and speed are measured, not quality.

    python benchmarks/gpu_stages.py --out /tmp/gpu [--hidden 2048 --layers 16 --seq-len 1024 --batch 8]
    python benchmarks/gpu_stages.py --out /tmp/gpu --tiny        # the same path on a CPU, in a minute

Prints one table per part and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = {"fsdp": ROOT / "recipes" / "accelerate" / "fsdp-1x8.yaml",
              "zero3": ROOT / "recipes" / "accelerate" / "zero3-1x8.yaml"}


def build_model(out: Path, options) -> Path:
    """A from-scratch Llama with a BPE tokenizer trained on the bundled corpora, saved as a model directory."""
    from finloom.llm.loading import save_model
    from finloom.llm.scratch import build_model as llama, train_tokenizer
    from finloom.recipe.model import ScratchModel
    from finloom.recipe.base import STARTER_DATA_DIR

    texts = []
    for name in ("general_corpus.jsonl", "finance_corpus.jsonl"):
        with open(STARTER_DATA_DIR / name, encoding="utf-8") as lines:
            texts += [json.loads(line)["text"] for line in lines]
    tokenizer = train_tokenizer(texts[:2000], 4096)
    spec = ScratchModel(hidden_size=options.hidden, intermediate_size=int(options.hidden * 2.75),
                        num_layers=options.layers, num_heads=max(1, options.hidden // 128),
                        num_kv_heads=max(1, options.hidden // 256), max_position_embeddings=max(2048, options.seq_len))
    model = llama(spec, tokenizer)
    path = save_model(model, tokenizer, out / "model")
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, {options.layers} layers, "
          f"hidden {options.hidden}", flush=True)
    return path


def recipe(name: str, model: Path, **sections) -> dict:
    return {"name": name, "seed": 7, "model": {"hf": str(model)}, "report": {"enabled": False}, **sections}


def train(options, **extra) -> dict:
    return {"max_steps": options.steps, "batch_size": options.batch, "seq_len": options.seq_len,
            "learning_rate": options.lr, "save_steps": 10**6, "logging_steps": 1, "bf16": options.bf16, **extra}


def finloom_run(spec: dict, run_dir: Path, launcher: list[str]) -> dict:
    """``finloom run`` of ``spec`` in ``run_dir`` under ``launcher``; the stage's manifest, or the error's tail."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    began = time.perf_counter()
    done = subprocess.run([*launcher, "-m", "finloom", "run", str(path), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = round(time.perf_counter() - began, 1)
    (run_dir / "log.txt").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode:
        return {"error": f"exit {done.returncode}: " + (done.stderr or done.stdout)[-1500:], "wall_s": wall}
    stage = next(s for s in ("sft", "align") if s in spec)
    manifest = json.loads((run_dir / stage / "manifest.json").read_text(encoding="utf-8"))
    return {**manifest["metrics"], "peak_gpu_mb": manifest.get("peak_gpu_mb"), "peak_rss_mb": manifest["peak_rss_mb"],
            "stage_wall_s": manifest["wall_time_s"], "wall_s": wall}


def run_variants(part: str, variants: dict[str, tuple[dict, list[str]]], out: Path, record) -> dict:
    """Each variant's recipe under its launcher, one after another; results recorded as they come."""
    results = {}
    for name, (spec, launcher) in variants.items():
        results[name] = finloom_run(spec, out / f"{part}_{name}", launcher)
        record(part, results)
        print(f"{part} {name}: {_brief(results[name])}", flush=True)
    return results


def print_table(columns: list[str], results: dict, row) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for name, result in results.items():
        cells = [f"failed: {result['error'][-200:]!r}"] if "error" in result else row(result)
        print("| " + " | ".join([name, *map(str, cells)]) + " |")


def sft_part(model: Path, out: Path, options, record) -> dict:
    data = [{"path": "starter:sft_finance.jsonl"}, {"path": "starter:sft_general.jsonl"}]
    lora = {"enabled": True, "r": 16}
    settings = {"full": {}, "full_unpacked": {"packing": False}, "lora": {"lora": lora},
                "qlora_nf4": {"lora": {**lora, "quantize": "nf4"}}}
    variants = {name: (recipe(f"gpu-sft-{name}", model,
                              sft={"datasets": data, "train": train(options), **extra}), [sys.executable])
                for name, extra in settings.items()}
    results = run_variants("sft", variants, out, record)

    def row(result: dict) -> list:
        utilisation = result["token_utilisation"]["packed" if result["packing"] else "unpacked"]
        real = utilisation * options.batch * options.seq_len * result["train_steps"] / result["train_seconds"]
        return [result["peak_gpu_mb"], f"{result['trainable_parameters']:,}", f"{real:,.0f}",
                result["train_seconds"], result["final_loss"]]

    print_table(["SFT variant", "peak GPU (MB)", "trainable params", "real tokens/s", "train s", "final loss"],
                results, row)
    return results


def align_part(model: Path, out: Path, options, record) -> dict:
    """One align run per ``--align-runs`` entry, ``LAUNCHER/PRECISION/LR`` (e.g. ``zero3/bf16/1e-5``)."""
    grpo = {"group_size": 4, "max_completion_tokens": options.completion_tokens, "temperature": 0.8,
            "reweighting": {"eval_every": max(2, options.steps // 2), "max_prompts": 8},
            "sft_datasets": [{"path": "starter:sft_finance.jsonl"}]}
    variants = {}
    for run in options.align_runs:
        launcher, precision, lr = run.split("/")
        if launcher == "zero3" and importlib.util.find_spec("deepspeed") is None:
            print(f"align {run}: skipped, deepspeed is not installed", flush=True)
            continue
        settings = train(options, batch_size=8, seq_len=min(options.seq_len, 512), learning_rate=float(lr),
                         bf16=precision == "bf16")
        spec = recipe("gpu-align", model, align={"datasets": [{"path": "starter:rl_prompts.jsonl"}], "grpo": grpo,
                                                 "train": settings})
        command = [sys.executable]
        if launcher != "single":
            command += ["-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE[launcher]),
                        "--num_processes", "1", *(["--cpu"] if options.tiny else [])]
        variants[run.replace("/", "_")] = (spec, command)
    results = run_variants("align", variants, out, record)
    for name in results:  # the per-step curves, kept by a diverged stage too: where a NaN came from
        history = out / f"align_{name}" / "align" / "log_history.json"
        if history.exists():
            steps = json.loads(history.read_text(encoding="utf-8"))
            results[name]["curve"] = [{k: row.get(k) for k in ("step", "loss", "grad_norm", "kl", "reward")}
                                      for row in steps if "loss" in row]
            print(f"align {name} per step: {json.dumps(results[name]['curve'])}", flush=True)
    record("align", results)
    print_table(["GRPO run", "peak GPU (MB)", "steps", "train s", "generation", "held-out reward before -> after"],
                results, lambda r: [r["peak_gpu_mb"], r["train_steps"], r["train_seconds"], r["generation"],
                                    f"{r['heldout_reward_before']} -> {r['heldout_reward_after']}"])
    return results


def _brief(result: dict) -> str:
    if "error" in result:
        return "FAILED " + result["error"][-600:]
    return json.dumps({k: result.get(k) for k in ("wall_s", "peak_gpu_mb", "train_seconds", "final_loss")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="train.learning_rate of the SFT runs")
    parser.add_argument("--align-runs", nargs="+", default=["single/bf16/1e-4", "fsdp/bf16/1e-4", "zero3/bf16/1e-4"],
                        metavar="LAUNCHER/PRECISION/LR",
                        help="align runs: launcher single|fsdp|zero3, precision bf16|fp32, learning rate")
    parser.add_argument("--parts", nargs="+", choices=["sft", "align"], default=["sft", "align"])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU: checks the path, measures nothing")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="train.bf16 (default: on, off with --tiny)")
    options = parser.parse_args()
    if options.tiny:
        options.hidden, options.layers, options.batch, options.seq_len, options.steps = 64, 2, 4, 256, 2
        options.completion_tokens = 8
    options.bf16 = not options.tiny if options.bf16 is None else options.bf16
    options.out.mkdir(parents=True, exist_ok=True)
    model = build_model(options.out, options)
    results = {"options": {k: str(v) for k, v in vars(options).items()}}

    def record(part: str, part_results: dict) -> None:  # after every variant: a run cut short keeps what it measured
        results[part] = part_results
        (options.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")

    if "sft" in options.parts:
        sft_part(model, options.out, options, record)
    if "align" in options.parts:
        align_part(model, options.out, options, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
