"""Peak memory and step time of gradient checkpointing per k layers, against none and transformers' own.

Variants, each in its own subprocess (its peak RSS is its own), interleaved over repeats, same model,
batch and optimiser (AdamW, one full training step per iteration):

- ``none``: no checkpointing;
- ``hf_per_layer``: the library baseline, ``model.gradient_checkpointing_enable()`` (one per layer);
- ``k1``, ``k2``, ``k4``: ``finloom.llm.checkpointing.checkpoint_every_k_layers`` (k1 is per layer too).

Peak RSS counts weights, gradients and Adam states as well (the same in every variant), so the
activation memory is the difference to the smallest. The model is a from-scratch Llama large enough for
activations to matter on a CPU (default 12 layers, hidden 512, batch 4 x 512 tokens).

``--device cuda`` builds the model on the GPU, computes in bfloat16 (autocast, float32 master weights, as
``train.bf16`` does) and reports PyTorch's peak allocated GPU memory instead of RSS.

    python benchmarks/sft_checkpointing.py [--layers 12] [--hidden 512] [--batch 4] [--seq-len 512] [--steps 4]
    python benchmarks/sft_checkpointing.py --device cuda --layers 24 --hidden 2048 --batch 8 --seq-len 2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import run_child

VARIANTS = ("none", "hf_per_layer", "k1", "k2", "k4")


def child(variant: str, options) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finloom.llm.checkpointing import auto_group_size, checkpoint_every_k_layers
    from finloom.runner import process_peak_rss_mb

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=options.hidden, intermediate_size=int(options.hidden * 2.75),
                         num_hidden_layers=options.layers, num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=options.seq_len, use_cache=False)
    gpu = options.device == "cuda"
    with torch.device(options.device):
        model = LlamaForCausalLM(config).train()
    if variant == "hf_per_layer":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif variant != "none":
        checkpoint_every_k_layers(model, int(variant[1:]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 4096, (options.batch, options.seq_len), device=options.device)
    times = []
    for _ in range(options.steps + 1):
        began = time.perf_counter()
        with torch.autocast(options.device, dtype=torch.bfloat16, enabled=gpu):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=False)
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else process_peak_rss_mb()
    return {"variant": variant, "step_s": round(statistics.median(times[1:]), 3), "peak_mb": round(peak, 1),
            "auto_k": auto_group_size(config, options.layers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child, options)))
        return 0
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(options).items() if k not in ("child", "repeats")]
    for _ in range(options.repeats):
        for variant in VARIANTS:
            runs[variant].append(run_child(__file__, "--child", variant, *forwarded))
    summary = {v: {"step_s": min(r["step_s"] for r in rs), "peak_mb": min(r["peak_mb"] for r in rs)}
               for v, rs in runs.items()}
    floor = min(s["peak_mb"] for s in summary.values())
    memory = "peak GPU allocated" if options.device == "cuda" else "peak RSS"
    print(f"model: {options.layers} layers, hidden {options.hidden}; batch {options.batch} x {options.seq_len} tokens; "
          f"{options.device}; auto k = {runs['k1'][0]['auto_k']}")
    print(f"| variant | step time (s) | vs none | {memory} (MB) | above the smallest (MB) |")
    print("|---|---|---|---|---|")
    for variant, values in summary.items():
        print(f"| {variant} | {values['step_s']:.3f} | {values['step_s'] / summary['none']['step_s']:.2f}x "
              f"| {values['peak_mb']:,.0f} | {values['peak_mb'] - floor:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
