"""Packed SFT: the same losses and gradients as unpacked training, and no sample sees another.

``FINLOOM_TEST_DEVICE=cuda`` runs the same checks on a GPU (SDPA's GPU kernels; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finloom.sft.packing import PackedCollator, pack_rows, packed_utilisation, padded_utilisation

SEQ_LEN = 48
DEVICE = os.environ.get("FINLOOM_TEST_DEVICE", "cpu")


def tiny_model(attention: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = attention
    return LlamaForCausalLM(config).to(DEVICE)


def conversations(count: int = 11, seed: int = 0) -> list[dict]:
    """Samples with distinct first tokens (so a packed segment can be matched to its sample), a prompt part
    without labels and an answer part with labels; one with two answer spans (a multi-turn conversation)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        length = rng.randint(6, 30)
        ids = [index + 1] + [rng.randrange(20, 120) for _ in range(length - 1)]
        cut = rng.randint(2, length - 3)
        labels = [-100] * cut + ids[cut:]
        if index == 0:
            labels[cut + 1] = -100  # a second user turn between two assistant turns
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def token_losses(model, batch: dict) -> torch.Tensor:
    """Each position's loss for predicting the next label (0 where the label is -100), shape like labels[:, 1:]."""
    batch = {key: value.to(DEVICE) if torch.is_tensor(value) else value for key, value in batch.items()}
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]  # with a cache, transformers ignores packed positions
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100, reduction="none")
    return losses.view(labels.shape)


def unpacked_batch(rows: list[dict]) -> dict:
    width = max(len(row["input_ids"]) for row in rows)
    pad = lambda values, fill: torch.tensor([v + [fill] * (width - len(v)) for v in values])  # noqa: E731
    return {"input_ids": pad([r["input_ids"] for r in rows], 0), "labels": pad([r["labels"] for r in rows], -100),
            "attention_mask": pad([[1] * len(r["input_ids"]) for r in rows], 0)}


def packed_per_sample(model, packed, flatten: bool) -> dict[int, float]:
    """Summed loss of each sample in the packed batch, keyed by its first token (its index + 1)."""
    examples = list(packed)
    batch = PackedCollator(pad_token_id=0, flatten=flatten)(examples)
    losses = token_losses(model, batch)
    found, row, offset = {}, 0, 0
    segments = [(r, n) for r, example in enumerate(examples) for n in example["seq_lengths"]]
    if flatten:
        segments = [(0, n) for _, n in segments]
    for r, n in segments:
        if r != row:
            row, offset = r, 0
        first = int(batch["input_ids"][r, offset])
        found[first] = float(losses.detach()[r, offset:offset + n - 1].sum())  # the last position predicts the next sample
        offset += n
    return found


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("flatten", [False, True])
def test_packed_losses_equal_unpacked_per_sample(attention, flatten):
    model = tiny_model(attention).eval()
    rows = conversations()
    packed = pack_rows(rows, SEQ_LEN)
    assert len(packed) < len(rows)  # it did pack
    assert sum(len(row["input_ids"]) for row in packed) == sum(len(row["input_ids"]) for row in rows)
    packed_losses = packed_per_sample(model, packed, flatten)
    unpacked = token_losses(model, unpacked_batch(rows)).sum(dim=1)
    assert sorted(packed_losses) == [row["input_ids"][0] for row in rows]
    for index, row in enumerate(rows):
        assert packed_losses[row["input_ids"][0]] == pytest.approx(float(unpacked[index]), abs=1e-4)


def test_packed_gradients_equal_unpacked():
    rows = conversations(seed=1)
    grads = []
    for batch in (unpacked_batch(rows), PackedCollator(pad_token_id=0)(list(pack_rows(rows, SEQ_LEN)))):
        model = tiny_model("sdpa")
        losses = token_losses(model, batch)
        (losses.sum() / (batch["labels"][:, 1:] != -100).sum().to(DEVICE)).backward()  # the trainer's token mean
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().max() > 1e-3
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_no_token_of_one_sample_changes_another_samples_logits():
    model = tiny_model("sdpa").eval()
    packed = pack_rows(conversations(), SEQ_LEN)
    row = next(example for example in packed if len(example["seq_lengths"]) >= 2)
    first = row["seq_lengths"][0]
    changed = dict(row, input_ids=[(t + 7) % 120 for t in row["input_ids"][:first]] + row["input_ids"][first:])
    collate = PackedCollator(pad_token_id=0)
    before, after = (model(**{k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in collate([r]).items()
                              if k != "labels"}, use_cache=False).logits for r in (row, changed))
    assert not torch.allclose(before[0, :first], after[0, :first])  # the edit did change the first sample
    assert torch.allclose(before[0, first:], after[0, first:], atol=1e-6)


def test_collator_restarts_positions_and_drops_cross_sample_labels():
    batch = PackedCollator(pad_token_id=0)([{"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, -100, 8, 9],
                                             "seq_lengths": [2, 3]},
                                            {"input_ids": [3, 4], "labels": [3, 4], "seq_lengths": [2]}])
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert batch["labels"].tolist() == [[-100, 6, -100, 8, 9], [-100, 4, -100, -100, -100]]
    assert "attention_mask" not in batch
    flat = PackedCollator(pad_token_id=0, flatten=True)([{"input_ids": [5, 6, 7], "labels": [5, 6, 7], "seq_lengths": [1, 2]},
                                                         {"input_ids": [3, 4], "labels": [3, 4], "seq_lengths": [2]}])
    assert flat["position_ids"].tolist() == [[0, 0, 1, 0, 1]]
    assert flat["cu_seq_lens_q"].tolist() == [0, 1, 3, 5] and flat["max_length_k"] == 2


def test_utilisation_counts_padding_slots():
    assert padded_utilisation([4, 2, 3, 1], batch_size=2) == round(10 / (8 + 6), 4)
    assert packed_utilisation([6, 4], seq_len=8) == round(10 / 16, 4)
    with pytest.raises(ValueError, match="longer than seq_len"):
        pack_rows([{"input_ids": [1] * 9, "labels": [1] * 9}], 8)
