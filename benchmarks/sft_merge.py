"""Merge time and peak memory against model size and the number of inputs: finloom (mergekit, tensor by
tensor) beside the plain way (every model loaded whole with ``from_pretrained``, state dicts averaged).

For each model size, a base and N fine-tunes (the base plus small random deltas) are written as
safetensors; each merge runs in its own subprocess (its peak RSS is its own). finloom's memory should stay
near one model whatever N; the plain way's grows with N.

    python benchmarks/sft_merge.py [--hidden 512 1024] [--inputs 2 4 8] [--method model_stock]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import run_child


def write_models(folder: Path, hidden: int, count: int) -> list[Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finloom.llm.scratch import train_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8192, hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=12,
                         num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)
    tokenizer = train_tokenizer(["finance bank loan"] * 10, 300)
    model = LlamaForCausalLM(config)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    paths = []
    for index in range(count + 1):
        if index:
            model.load_state_dict({k: v + torch.randn_like(v) * 0.01 for k, v in base.items()})
        path = folder / f"h{hidden}" / ("base" if index == 0 else f"m{index}")
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


class AnonymousPeak:
    """The peak of the process's anonymous memory (RssAnon: what it allocated), sampled every 10 ms. Peak RSS
    also counts the pages of memory-mapped input files read so far (safetensors are read through mmap), which the
    kernel drops under memory pressure; RssAnon is what a merge really holds."""

    def __init__(self):
        import threading

        self.peak_kb, self.running = 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while self.running:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            time.sleep(0.01)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return round(self.peak_kb / 1024)


def child(way: str, method: str, base: str, models: list[str], out: str) -> dict:
    import torch

    from finloom.runner import process_peak_rss_mb

    anonymous = AnonymousPeak()
    began = time.perf_counter()
    if way == "finloom":
        from finloom.sft.merge import merge_models

        merge_models(method, [Path(m) for m in models], Path(out), Path(base))
    else:  # the plain way: linear average of whole models in memory
        from transformers import AutoModelForCausalLM

        loaded = [AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32) for m in models]
        states = [m.state_dict() for m in loaded]
        merged = {key: sum(state[key] for state in states) / len(states) for key in states[0]}
        loaded[0].load_state_dict(merged)
        loaded[0].save_pretrained(out, safe_serialization=True)
    return {"seconds": round(time.perf_counter() - began, 2), "peak_rss_mb": process_peak_rss_mb(),
            "peak_anon_mb": anonymous.stop()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--inputs", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--method", default="model_stock")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options, rest = parser.parse_known_args()
    if options.child:
        print(json.dumps(child(options.child, options.method, *json.loads(rest[0]))))
        return 0
    print("| model | model size (MB) | inputs | finloom s | finloom peak RSS / anonymous (MB) | plain s "
          "| plain peak RSS / anonymous (MB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in options.hidden:
            paths = write_models(Path(tmp), hidden, max(options.inputs))
            size = (paths[0] / "model.safetensors").stat().st_size / 2**20
            for count in options.inputs:
                cells = []
                for way in ("finloom", "plain"):
                    args = json.dumps([str(paths[0]), [str(p) for p in paths[1:count + 1]], f"{tmp}/out-{way}-{hidden}-{count}"])
                    result = run_child(__file__, "--child", way, "--method", options.method, args)
                    cells += [f"{result['seconds']:.1f}", f"{result['peak_rss_mb']:,.0f} / {result['peak_anon_mb']:,.0f}"]
                print(f"| 12 layers, hidden {hidden} | {size:,.0f} | {count} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
