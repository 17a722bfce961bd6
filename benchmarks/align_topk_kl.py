"""The exact top-k KL of GRPO against the full KL: error, time and memory, side by side in one run.

Baichuan Alignment computes ``KL(pi || pi_ref)`` over the reference's top-500 tokens, both distributions
renormalised there (``finloom.llm.kl.token_kl(..., top_k=500)``). This measures what that costs and saves against
the full-vocabulary KL (``top_k=None``):

- on a 32k vocabulary: reference logits drawn so that the mean entropy and the top-500 mass are those of a
  language model (both printed), the policy the reference plus Gaussian noise (a policy that has moved); the
  forward and the forward + backward (the SFT-KL term has a gradient) of each, each variant in its own process
  so its peak RSS is its own;
- with ``--run-dir`` (a finished quickstart): the real SFT (reference) and aligned (policy) models on held-out
  finance text, k = 500 of their 4,096 tokens.

    python benchmarks/align_topk_kl.py [--positions 4096] [--vocab 32000] [--k 500] [--run-dir runs/quickstart]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import run_child  # noqa: E402

from finloom.llm.kl import token_kl  # noqa: E402


def synthetic(positions: int, vocab: int, spread: float, noise: float, seed: int = 0):
    """Reference and policy logits, filled a block of rows at a time so that no temporary raises the peak RSS
    the variants are measured against."""
    generator = torch.Generator().manual_seed(seed)
    reference, policy = torch.empty(positions, vocab), torch.empty(positions, vocab)
    for start in range(0, positions, 128):
        rows = slice(start, start + 128)
        reference[rows] = torch.randn(reference[rows].shape, generator=generator) * spread
        policy[rows] = reference[rows] + torch.randn(policy[rows].shape, generator=generator) * noise
    return policy, reference


def child(args) -> dict:
    """One variant in this process: peak RSS above what the inputs already took, and the median time."""
    policy, reference = synthetic(args.positions, args.vocab, args.spread, args.noise)
    top_k = None if args.variant.startswith("full") else args.k
    backward = args.variant.endswith("backward")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    policy.requires_grad_(backward)
    for _ in range(args.repeats):
        policy.grad = None
        start = time.perf_counter()
        kl = token_kl(policy, reference, top_k=top_k)
        if backward:
            kl.mean().backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": args.variant, "seconds": sorted(times)[len(times) // 2], "extra_peak_mb": (peak - before) / 1024}


def accuracy(args) -> dict:
    policy, reference = synthetic(args.positions, args.vocab, args.spread, args.noise)
    full = token_kl(policy, reference)
    top = token_kl(policy, reference, top_k=args.k)
    probabilities = reference.softmax(-1)
    entropy = -(probabilities * probabilities.clamp_min(1e-30).log()).sum(-1)
    mass = probabilities.topk(args.k, -1).values.sum(-1)
    return summary(full, top) | {"reference_entropy_nats": round(float(entropy.mean()), 3),
                                 "reference_top_k_mass": round(float(mass.mean()), 4)}


def summary(full: torch.Tensor, top: torch.Tensor) -> dict:
    relative = (top - full).abs() / full.clamp_min(1e-12)
    return {"mean_full_kl": round(float(full.mean()), 5), "mean_top_k_kl": round(float(top.mean()), 5),
            "mean_relative_error": round(float(relative.mean()), 4),
            "p95_relative_error": round(float(relative.quantile(0.95)), 4),
            "correlation": round(float(torch.corrcoef(torch.stack([full, top]))[0, 1]), 4)}


def real_models(run_dir: Path, k: int, max_tokens: int = 4096) -> dict:
    from finloom.llm.loading import load_causal_lm, load_tokenizer
    from finloom.recipe import STARTER_DATA_DIR

    tokenizer = load_tokenizer(run_dir / "sft" / "model")
    reference, policy = load_causal_lm(run_dir / "sft" / "model"), load_causal_lm(run_dir / "align" / "model")
    texts = [json.loads(line)["text"] for line in (STARTER_DATA_DIR / "finance_heldout.jsonl").read_text().splitlines()]
    ids = tokenizer("\n\n".join(texts[:40]))["input_ids"][:max_tokens]
    rows = torch.tensor(ids[: len(ids) // 256 * 256]).view(-1, 256)
    with torch.no_grad():
        p, q = policy(input_ids=rows).logits, reference(input_ids=rows).logits
    full, top = token_kl(p, q).flatten(), token_kl(p, q, top_k=k).flatten()
    mass = q.softmax(-1).topk(k, -1).values.sum(-1)
    return summary(full, top) | {"tokens": full.numel(), "vocab": q.size(-1), "reference_top_k_mass": round(float(mass.mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=4096, help="token positions (e.g. 8 answers x 512 tokens)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--spread", type=float, default=5.0, help="std of the reference logits: 5 gives a mean "
                                                                     "entropy of 2.7 nats, 3.2 a flatter 5.7")
    parser.add_argument("--noise", type=float, default=0.3, help="std of the policy's departure from the reference")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run-dir", type=Path, help="a finished quickstart run: also compare its real models")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    print(f"# synthetic: {args.positions} positions x {args.vocab} tokens, k = {args.k}")
    # The variants first: a child inherits its parent's peak RSS on Linux, so the parent stays small until then.
    shared = ["--positions", str(args.positions), "--vocab", str(args.vocab), "--k", str(args.k), "--spread",
              str(args.spread), "--noise", str(args.noise), "--repeats", str(args.repeats)]
    results = {v: run_child(__file__, *shared, "--variant", v)
               for v in ("full", f"top{args.k}", "full+backward", f"top{args.k}+backward")}
    print(f"{'variant':>22} {'seconds':>9} {'extra peak MB':>14}")
    for name, result in results.items():
        print(f"{name:>22} {result['seconds']:9.3f} {result['extra_peak_mb']:14.0f}")
    for mode in ("", "+backward"):
        full, top = results[f"full{mode}"], results[f"top{args.k}{mode}"]
        print(f"ratio top-k / full{mode or ' (forward)'}: time {top['seconds'] / full['seconds']:.2f}x, "
              f"extra memory {top['extra_peak_mb'] / max(full['extra_peak_mb'], 1):.2f}x")
    print(json.dumps(accuracy(args)))
    if args.run_dir:
        print(f"# real models: {args.run_dir} (sft = reference, align = policy), k = {args.k}")
        print(json.dumps(real_models(args.run_dir, args.k)))


if __name__ == "__main__":
    main()
