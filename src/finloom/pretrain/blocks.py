"""Tokenise documents once and cut them into fixed-length training blocks, then mix domains by tokens.

Documents are joined with the end-of-text token and cut into ``seq_len`` blocks (standard causal-LM
packing for pre-training); the mix draws blocks so the finance share of tokens equals the recipe's
ratio, repeating a domain's blocks when it is too small, and records the realised mix.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from transformers import PreTrainedTokenizerBase


def read_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def token_blocks(texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int, separator_id: int) -> list[list[int]]:
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(separator_id)
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def mix_blocks(
    blocks_by_domain: dict[str, list[list[int]]], shares: dict[str, float], total: int, seed: int
) -> tuple[list[dict], dict]:
    """Draw ``total`` blocks with the given domain shares; returns rows and the realised mix."""
    rng = random.Random(seed)
    counts = {domain: round(share * total) for domain, share in shares.items()}
    counts[max(shares, key=shares.get)] += total - sum(counts.values())
    rows = []
    for domain, count in counts.items():
        pool = blocks_by_domain[domain]
        if count and not pool:
            raise ValueError(f"no {domain} blocks to draw from")
        order: list[int] = []
        while len(order) < count:
            epoch = list(range(len(pool)))
            rng.shuffle(epoch)
            order.extend(epoch)
        rows.extend({"input_ids": pool[i], "domain": domain} for i in order[:count])
    rng.shuffle(rows)
    realised = {
        domain: {"blocks": counts[domain], "unique_blocks": min(counts[domain], len(blocks_by_domain[domain])),
                 "token_share": round(counts[domain] / total, 4) if total else 0.0,
                 "epochs": round(counts[domain] / len(blocks_by_domain[domain]), 3) if blocks_by_domain[domain] else 0.0}
        for domain in counts
    }
    return rows, realised
