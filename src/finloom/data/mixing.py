"""Mix domains to target token shares and write packed token shards that pre-training streams.

Each domain is tokenised once (documents joined by the end-of-text separator) and packed into
``seq_len`` blocks. The plan gives every domain its share of blocks: a small domain is repeated
(whole epochs plus a seeded subset), a large one down-sampled (a seeded subset). Sampling whole
blocks, as Megatron's blended datasets do, makes token shares exact up to one block. The drawn
blocks are shuffled together, so any prefix of the stream already has the target mix, and written
as safetensors shards (int32 ``input_ids`` plus each block's ``domain`` and ``block`` of origin)
beside ``index.json``. ``TokenShardDataset`` streams them back and can skip N blocks to resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from torch.utils.data import IterableDataset, get_worker_info
from transformers import PreTrainedTokenizerBase

from finloom.files import atomic_dir, atomic_write_json, sha256_file

INDEX_FORMAT = "finloom-token-shards/1"
END_OF_TEXT = "<|endoftext|>"


def plan_mix(
    token_counts: Mapping[str, int],
    targets: Mapping[str, float],
    total_tokens: int | None = None,
    block_tokens: int = 1,
) -> dict:
    """How many tokens each domain contributes so that shares match ``targets``.

    ``total_tokens`` defaults to the corpus size (all available tokens, mixed to the targets).
    Tokens are allotted in whole ``block_tokens`` units by largest remainder, so each realised
    share is within one unit of the target: under 1% once the mix holds 100 units. A domain
    missing from ``targets`` gets share 0. Per domain: ``sampling_factor`` (target tokens over
    available: above 1 repeats, below 1 takes a subset), realised ``tokens``, ``blocks``,
    ``share`` and ``epochs`` (realised over available).
    """
    unknown = sorted(set(targets) - set(token_counts))
    if unknown:
        raise ValueError(f"mix targets name domains without data: {unknown} (domains: {sorted(token_counts)})")
    if any(share < 0 for share in targets.values()) or not math.isclose(sum(targets.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"mix targets must be >= 0 and sum to 1, got {dict(targets)}")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    available = {domain: count // block_tokens for domain, count in token_counts.items()}
    starved = sorted(domain for domain, share in targets.items() if share > 0 and available[domain] == 0)
    if starved:
        raise ValueError(f"domains {starved} have a target share but not one {block_tokens}-token block of data")
    total_units = (sum(token_counts.values()) if total_tokens is None else total_tokens) // block_tokens
    if total_units < 1:
        raise ValueError(f"total_tokens {total_tokens} is less than one {block_tokens}-token block")

    scale = sum(targets.values())
    quotas = {domain: targets.get(domain, 0.0) / scale * total_units for domain in token_counts}
    units = {domain: math.floor(quota) for domain, quota in quotas.items()}
    by_remainder = sorted((d for d in quotas if targets.get(d, 0.0) > 0), key=lambda d: (units[d] - quotas[d], d))
    for domain in by_remainder[: total_units - sum(units.values())]:
        units[domain] += 1

    domains = {}
    for domain, count in token_counts.items():
        target = targets.get(domain, 0.0)
        domains[domain] = {
            "available_tokens": count,
            "target_share": target,
            "sampling_factor": round(target / scale * total_units / available[domain], 6) if available[domain] else 0.0,
            "blocks": units[domain],
            "tokens": units[domain] * block_tokens,
            "share": round(units[domain] / total_units, 6),
            "epochs": round(units[domain] / available[domain], 6) if available[domain] else 0.0,
        }
    return {
        "total_tokens": total_units * block_tokens,
        "block_tokens": block_tokens,
        "max_share_error": round(max(abs(d["share"] - d["target_share"] / scale) for d in domains.values()), 6),
        "domains": domains,
    }


def default_separator_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """``<|endoftext|>`` when the vocabulary has it (finloom's scratch tokenizer), else the EOS token."""
    separator = tokenizer.get_vocab().get(END_OF_TEXT, tokenizer.eos_token_id)
    if separator is None:
        raise ValueError("tokenizer has neither <|endoftext|> nor an EOS token; pass separator_id")
    return separator


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the full tokenizer definition (tokenizer.json for fast tokenizers), to pair shards with it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(definition.encode("utf-8")).hexdigest()


def token_blocks(texts: list[str], tokenizer, seq_len: int, separator_id: int) -> list[list[int]]:
    """Documents joined by the separator and cut into ``seq_len`` blocks, as pre-training packs them."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []:  # no texts: fast tokenizers fail
        stream.extend(ids)
        stream.append(separator_id)
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def write_token_shards(
    docs_by_domain: Mapping[str, Iterable[str]],
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    targets: Mapping[str, float],
    seq_len: int,
    shard_tokens: int = 1 << 25,
    seed: int = 0,
    separator_id: int | None = None,
    total_tokens: int | None = None,
    batch_size: int = 1000,
) -> dict:
    """Tokenise, pack, mix and write shards to ``out_dir`` (replaced as a whole, atomically); returns the index.

    Each domain's token stream is spooled to a scratch file beside ``out_dir`` (4 bytes a token),
    so memory stays flat whatever the corpus size. A domain's last partial block is dropped and
    counted in ``tokenized[domain]["dropped_tokens"]``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    separator_id = default_separator_id(tokenizer) if separator_id is None else separator_id
    domains = sorted(docs_by_domain)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.streams.", dir=out_dir.parent) as scratch:
        blocks: dict[str, np.ndarray] = {}
        tokenized: dict[str, dict] = {}
        for number, domain in enumerate(domains):
            stream_path = Path(scratch) / f"{number}.int32"
            documents, tokens = _spool_tokens(docs_by_domain[domain], tokenizer, separator_id, stream_path, batch_size)
            n_blocks = tokens // seq_len
            blocks[domain] = (
                np.memmap(stream_path, dtype=np.int32, mode="r", shape=(n_blocks, seq_len))
                if n_blocks else np.zeros((0, seq_len), dtype=np.int32)
            )
            tokenized[domain] = {"documents": documents, "tokens": tokens, "blocks": n_blocks,
                                 "dropped_tokens": tokens - n_blocks * seq_len}
        plan = plan_mix({d: len(blocks[d]) * seq_len for d in domains}, targets, total_tokens, block_tokens=seq_len)
        domain_ids, block_ids = _draw_blocks([len(blocks[d]) for d in domains],
                                             [plan["domains"][d]["blocks"] for d in domains], seed)
        shard_blocks = max(1, shard_tokens // seq_len)
        with atomic_dir(out_dir) as tmp:
            shards = []
            for start in range(0, len(domain_ids), shard_blocks):
                shard_domains = domain_ids[start : start + shard_blocks]
                shard_origins = block_ids[start : start + shard_blocks]
                rows = np.empty((len(shard_domains), seq_len), dtype=np.int32)
                for number, domain in enumerate(domains):
                    chosen = shard_domains == number
                    rows[chosen] = blocks[domain][shard_origins[chosen]]
                name = f"shard-{len(shards):05d}.safetensors"
                save_file({"input_ids": rows, "domain": shard_domains, "block": shard_origins}, str(tmp / name),
                          metadata={"format": INDEX_FORMAT})  # one key: safetensors orders metadata at random
                shards.append({"file": name, "blocks": len(rows), "sha256": sha256_file(tmp / name)})
            index = {
                "format": INDEX_FORMAT,
                "seq_len": seq_len,
                "separator_id": separator_id,
                "tokenizer_hash": tokenizer_hash(tokenizer),
                "vocab_size": len(tokenizer),
                "seed": seed,
                "domains": domains,
                "blocks": len(domain_ids),
                "tokens": len(domain_ids) * seq_len,
                "tokens_per_domain": {d: plan["domains"][d]["tokens"] for d in domains},
                "mix": plan,
                "tokenized": tokenized,
                "shards": shards,
            }
            atomic_write_json(tmp / "index.json", index)
        blocks.clear()  # release the memory maps before the scratch folder goes
    return index


def _spool_tokens(texts: Iterable[str], tokenizer, separator_id: int, path: Path, batch_size: int) -> tuple[int, int]:
    """Append each document's ids and the separator to ``path``; returns (documents, tokens)."""
    documents = tokens = 0
    with open(path, "wb") as handle:
        for batch in _batches(texts, batch_size):
            encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
            for ids in encoded["input_ids"]:
                ids.append(separator_id)
                np.asarray(ids, dtype=np.int32).tofile(handle)
                tokens += len(ids)
            documents += len(batch)
    return documents, tokens


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _draw_blocks(available: list[int], wanted: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(domain id, block of origin) for every drawn block, shuffled together.

    A domain wanting k of its n blocks gets every block k // n times plus a seeded subset of
    k % n, so repeated epochs spread evenly and a down-sampled domain is a uniform sample.
    """
    rng = np.random.default_rng(seed)
    domain_ids, block_ids = [], []
    for number, (n, k) in enumerate(zip(available, wanted, strict=True)):
        if k == 0:
            continue
        drawn = np.concatenate([np.tile(np.arange(n), k // n), np.sort(rng.permutation(n)[: k % n])])
        domain_ids.append(np.full(k, number, dtype=np.int32))
        block_ids.append(drawn.astype(np.int64))
    order = rng.permutation(sum(wanted))
    return np.concatenate(domain_ids)[order], np.concatenate(block_ids)[order]


class TokenShardDataset(IterableDataset):
    """Stream ``{"input_ids": LongTensor(seq_len)}`` blocks from a shard folder, for HF Trainer.

    Order is the stored (already mixed) order, or with ``seed`` a seeded permutation of it that
    changes with each epoch (``set_epoch``, which the HF Trainer calls); the same seed and epoch
    give the same order. ``skip_blocks`` drops the first N blocks of that order, so a run resumed
    after N blocks sees exactly the blocks it has not seen. DataLoader workers split the remaining
    blocks between them. Each item also carries its block's ``domain`` (an index into
    ``index["domains"]``) and global ``position`` (the key of a precomputed reference). Batch it
    with ``collate_blocks``.
    """

    def __init__(self, shard_dir: Path, seed: int | None = None, skip_blocks: int = 0):
        super().__init__()
        self.shard_dir = Path(shard_dir)
        self.index = json.loads((self.shard_dir / "index.json").read_text(encoding="utf-8"))
        if self.index.get("format") != INDEX_FORMAT:
            raise ValueError(f"{self.shard_dir}: not a finloom token shard folder (format {self.index.get('format')!r})")
        self.seq_len = self.index["seq_len"]
        self.total_blocks = self.index["blocks"]
        if not 0 <= skip_blocks <= self.total_blocks:
            raise ValueError(f"skip_blocks must be in [0, {self.total_blocks}], got {skip_blocks}")
        self.seed = seed
        self.epoch = 0
        self.skip_blocks = skip_blocks
        self._shard_starts = np.cumsum([0] + [shard["blocks"] for shard in self.index["shards"]])

    def __len__(self) -> int:
        return self.total_blocks - self.skip_blocks

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def positions(self) -> np.ndarray:
        """Global block positions in iteration order, skipped blocks included."""
        if self.seed is None:
            return np.arange(self.total_blocks)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.total_blocks)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        positions = self.positions()[self.skip_blocks :]
        worker = get_worker_info()
        if worker is not None:
            positions = positions[worker.id :: worker.num_workers]
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(safe_open(str(self.shard_dir / shard["file"]), framework="np"))
                     for shard in self.index["shards"]]
            shards = [handle.get_slice("input_ids") for handle in files]
            domains = [handle.get_tensor("domain") for handle in files]
            for position in positions:
                shard = int(np.searchsorted(self._shard_starts, position, side="right")) - 1
                row = int(position - self._shard_starts[shard])
                yield {"input_ids": torch.from_numpy(shards[shard][row : row + 1][0].astype(np.int64)),
                       "domain": int(domains[shard][row]), "position": int(position)}


def collate_blocks(tags: bool = False):
    """A collator for ``TokenShardDataset`` items: ``input_ids`` and ``labels`` (the same ids; blocks are
    packed, never padded), plus ``domain`` and ``position`` tensors when ``tags`` and the items have them
    (held-out evaluation blocks do not)."""

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        input_ids = torch.stack([torch.as_tensor(item["input_ids"], dtype=torch.long) for item in items])
        batch = {"input_ids": input_ids, "labels": input_ids.clone()}
        if tags and "domain" in items[0]:
            batch["domain"] = torch.tensor([item["domain"] for item in items])
            batch["position"] = torch.tensor([item["position"] for item in items])
        return batch

    return collate
