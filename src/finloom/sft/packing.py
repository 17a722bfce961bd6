"""Packed SFT batches in which samples never see each other.

Conversations are packed into ``seq_len`` rows by TRL's best-fit-decreasing packer (``trl.pack_dataset``,
strategy ``bfd``: conversation boundaries kept, nothing split). What makes packing correct is the collator:
position ids restart at every sample and no 2D attention mask is sent, so transformers builds a
block-diagonal causal mask from the position ids (``masking_utils.find_packed_sequence_indices``) for
SDPA and eager attention, and flash-attention runs its varlen kernel from ``cu_seq_lens``.

TRL's own padding-free collator flattens the whole batch into one row. That is what flash-attention
needs (its varlen path reads one row), but with SDPA or eager attention it builds a dense mask over
``batch_size x seq_len`` tokens, batch_size times the work of separate rows. So rows stay apart here
unless the model runs flash-attention. Either way the first token of every sample gets no label: it
would otherwise be predicted from the end of the sample before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset
from trl import pack_dataset

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn", "kernels-community/flash-attn3")


def pack_rows(rows: list[dict], seq_len: int) -> Dataset:
    """Tokenized conversations (``input_ids``, ``labels``, each at most ``seq_len`` long) packed into rows of
    at most ``seq_len`` tokens, each row with ``seq_lengths``: the lengths of the samples it holds, in order."""
    too_long = [len(row["input_ids"]) for row in rows if len(row["input_ids"]) > seq_len]
    if too_long:
        raise ValueError(f"{len(too_long)} conversation(s) longer than seq_len {seq_len}: cut them before packing")
    columns = {"input_ids": [row["input_ids"] for row in rows], "labels": [row["labels"] for row in rows]}
    return pack_dataset(Dataset.from_dict(columns), seq_len, strategy="bfd")


def uses_varlen_attention(model) -> bool:
    return getattr(model.config, "_attn_implementation", None) in VARLEN_ATTENTION


@dataclass
class PackedCollator:
    """Batches of packed rows: ``input_ids``, ``labels`` and restarting ``position_ids``; no attention mask.

    ``flatten`` (for flash-attention) joins the batch into one row and adds ``cu_seq_lens_q/k`` and
    ``max_length_q/k`` for the varlen kernel; otherwise rows are padded to the longest in the batch."""

    pad_token_id: int
    flatten: bool = False

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = [torch.tensor(example["input_ids"]) for example in examples]
        labels = [torch.tensor(example["labels"]) for example in examples]
        positions = [torch.cat([torch.arange(n) for n in example["seq_lengths"]]) for example in examples]
        for row_ids, row_positions in zip(ids, positions):
            if len(row_ids) != len(row_positions):
                raise ValueError(f"a packed row holds {len(row_ids)} tokens but its seq_lengths add up to "
                                 f"{len(row_positions)}")
        if self.flatten:
            ids, labels, positions = [torch.cat(ids)], [torch.cat(labels)], [torch.cat(positions)]
        width = max(len(row) for row in ids)
        batch = {
            "input_ids": _pad(ids, width, self.pad_token_id),
            "labels": _pad(labels, width, -100),
            # padding continues the last sample's positions, so it forms no sample of its own and is never attended
            # to by a real token (it comes after all of them)
            "position_ids": torch.stack([torch.cat([row, torch.arange(row[-1] + 1, row[-1] + 1 + width - len(row))])
                                         for row in positions]),
        }
        batch["labels"][batch["position_ids"] == 0] = -100
        if self.flatten:
            starts = (batch["position_ids"][0] == 0).nonzero().flatten()
            cu_seq_lens = torch.cat([starts, torch.tensor([width])]).to(torch.int32)
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu_seq_lens
            batch["max_length_q"] = batch["max_length_k"] = int(cu_seq_lens.diff().max())
        return batch


def _pad(rows: list[torch.Tensor], width: int, value: int) -> torch.Tensor:
    return torch.stack([torch.cat([row, torch.full((width - len(row),), value, dtype=row.dtype)]) for row in rows])


def padded_utilisation(lengths: list[int], batch_size: int) -> float:
    """Share of real tokens in unpacked batches of ``batch_size`` samples, each padded to its longest sample
    (in dataset order)."""
    slots = sum(max(lengths[i:i + batch_size]) * len(lengths[i:i + batch_size]) for i in range(0, len(lengths), batch_size))
    return round(sum(lengths) / max(1, slots), 4)


def packed_utilisation(row_tokens: list[int], seq_len: int) -> float:
    """Share of real tokens in packed rows, each counted as a full ``seq_len`` slot (what memory is sized for)."""
    return round(sum(row_tokens) / max(1, len(row_tokens) * seq_len), 4)
