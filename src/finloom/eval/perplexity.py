"""Perplexity on held-out text: mean next-token NLL over fixed-length blocks, exponentiated."""

from __future__ import annotations

import math

import torch

from finloom.data.mixing import token_blocks


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], separator_id: int, seq_len: int, max_tokens: int, batch_size: int) -> dict:
    blocks = token_blocks(texts, tokenizer, seq_len, separator_id)[: max(1, max_tokens // seq_len)]
    if not blocks:
        raise ValueError("held-out text is shorter than one evaluation block")
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        inputs = torch.tensor(blocks[start : start + batch_size])
        logits = model(input_ids=inputs).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), inputs[:, 1:].reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += inputs[:, 1:].numel()
    mean = total_nll / total_tokens
    return {"perplexity": round(math.exp(mean), 4), "nll": round(mean, 5), "tokens": total_tokens}
