"""Precomputed reference log-probabilities for self-constraint CPT: one pass of the frozen model, stored as top-k.

``precompute_reference`` runs the reference once over every general block of a token-shard mix and
stores, per position, the indices of its top-k tokens and their full-vocabulary log-probabilities
(safetensors shards keyed by the block's global position, beside ``index.json``). Training then
holds one model and reads ``PrecomputedReference.lookup(positions)``; the loss equals the online
top-k loss (the tests check it) up to the stored precision.

Disk: ``blocks * seq_len * k * (4 + 2)`` bytes in float16 (k = 500: 3 kB a token), so choose k with
the corpus in mind. The store lives in ``RUN/reference/<key>``, the key hashing the reference
model's identity (every file of its directory, or of its Hub snapshot), the shards and the settings,
so it is reused whenever those are unchanged and never for another model.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from finloom.data.mixing import TokenShardDataset
from finloom.files import atomic_dir, atomic_write_json, hash_json, hash_path
from finloom.llm.kl import reference_top_k
from finloom.llm.loading import model_identity
from finloom.progress import progress_bar

FORMAT = "finloom-reference-topk/1"
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def reference_key(model: Path | str, shard_dir: Path, top_k: int, dtype: str, finance_domain: int) -> str:
    """The store's name: the reference model's identity (``model_identity``: its weights, config and tokenizer,
    wherever they came from), the shards, and the settings, so another model never reuses a store."""
    return hash_json({"model": model_identity(model), "shards": hash_path(Path(shard_dir) / "index.json"),
                      "top_k": top_k, "dtype": dtype, "finance_domain": finance_domain})[:16]


@torch.no_grad()
def precompute_reference(model, shard_dir: Path, out_dir: Path, top_k: int, finance_domain: int,
                         batch_size: int = 8, dtype: str = "float16", blocks_per_shard: int = 256) -> dict:
    """Write the top-k store for every non-finance block of ``shard_dir`` to ``out_dir`` (atomically)."""
    dataset = TokenShardDataset(shard_dir)
    device = next(model.parameters()).device
    model.eval()
    general_blocks = int((_domains(dataset) != finance_domain).sum())
    items = iter(item for item in dataset if item["domain"] != finance_domain)
    shards, buffer = [], {"positions": [], "indices": [], "logprobs": []}
    with atomic_dir(out_dir) as tmp, progress_bar("reference top-k") as bar:
        task = bar.add_task("reference", total=general_blocks, status=f"k={top_k}")

        def flush() -> None:
            if not buffer["positions"]:
                return
            name = f"ref-{len(shards):05d}.safetensors"
            save_file({"positions": torch.tensor(buffer["positions"], dtype=torch.int64),
                       "indices": torch.cat(buffer["indices"]).to(torch.int32),
                       "logprobs": torch.cat(buffer["logprobs"]).to(DTYPES[dtype])}, str(tmp / name))
            shards.append({"file": name, "blocks": len(buffer["positions"])})
            for values in buffer.values():
                values.clear()

        while True:
            batch = [item for _, item in zip(range(batch_size), items)]
            if not batch:
                break
            input_ids = torch.stack([item["input_ids"] for item in batch]).to(device)
            indices, logprobs = reference_top_k(model(input_ids=input_ids).logits, top_k)
            buffer["positions"] += [item["position"] for item in batch]
            buffer["indices"].append(indices.cpu())
            buffer["logprobs"].append(logprobs.cpu())
            bar.advance(task, len(batch))
            if len(buffer["positions"]) >= blocks_per_shard:
                flush()
        flush()
        index = {"format": FORMAT, "top_k": top_k, "dtype": dtype, "seq_len": dataset.seq_len,
                 "finance_domain": finance_domain, "blocks": general_blocks, "shards": shards,
                 "shard_index_hash": hash_path(Path(shard_dir) / "index.json")}
        atomic_write_json(tmp / "index.json", index)
    return index


def _domains(dataset: TokenShardDataset) -> np.ndarray:
    """Every block's domain in stored order, read from the shard files without the token ids."""
    values = []
    for shard in dataset.index["shards"]:
        with safe_open(str(dataset.shard_dir / shard["file"]), framework="np") as handle:
            values.append(handle.get_tensor("domain"))
    return np.concatenate(values) if values else np.zeros(0, dtype=np.int32)


class PrecomputedReference:
    """Read access to a top-k store: ``lookup(positions)`` -> (indices [B, T, k] long, log-probs [B, T, k] float32)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{folder}: not a finloom reference store")
        self._stack = contextlib.ExitStack()
        self._rows: dict[int, tuple[int, int]] = {}
        self._files = []
        for number, shard in enumerate(self.index["shards"]):
            handle = self._stack.enter_context(safe_open(str(self.folder / shard["file"]), framework="pt"))
            self._files.append((handle.get_slice("indices"), handle.get_slice("logprobs")))
            for row, position in enumerate(handle.get_tensor("positions").tolist()):
                self._rows[position] = (number, row)

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def lookup(self, positions: list[int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        indices, logprobs = [], []
        for position in positions:
            if position not in self._rows:
                raise KeyError(f"block {position} is not in the reference store {self.folder} (a finance block?)")
            number, row = self._rows[position]
            index_slice, value_slice = self._files[number]
            indices.append(index_slice[row : row + 1])
            logprobs.append(value_slice[row : row + 1])
        return (torch.cat(indices).long().to(device), torch.cat(logprobs).float().to(device))
