"""Token-level domain mixing: exact shares, packed == unpacked, determinism, exact resume."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from finloom.data.mixing import (
    TokenShardDataset,
    plan_mix,
    tokenizer_hash,
    write_token_shards,
)
from finloom.llm.scratch import END_OF_TEXT, train_tokenizer

FINANCE = "bank loan interest deposit bond equity dividend capital risk premium fund margin tax audit".split()
GENERAL = "river mountain tree bird music football cooking history science planet ocean city school".split()
SEQ_LEN = 16


def _docs(words: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))).capitalize() + "." for _ in range(count)]


@pytest.fixture(scope="module")
def corpus():
    return {"finance": _docs(FINANCE, 40, 1), "general": _docs(GENERAL, 200, 2)}


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus["finance"][:10] + corpus["general"][:10], vocab_size=300)


def _stream(texts, tokenizer) -> list[int]:
    separator = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    return [token for text in texts for token in tokenizer(text, add_special_tokens=False)["input_ids"] + [separator]]


def _read_shards(out_dir) -> dict[str, np.ndarray]:
    index = json.loads((out_dir / "index.json").read_text())
    tensors = [load_file(out_dir / shard["file"]) for shard in index["shards"]]
    return {name: np.concatenate([t[name] for t in tensors]) for name in ("input_ids", "domain", "block")}


def test_plan_mix_hand_computed():
    plan = plan_mix({"finance": 1_000, "general": 9_000}, {"finance": 0.5, "general": 0.5})
    assert plan["total_tokens"] == 10_000 and plan["max_share_error"] == 0
    finance, general = plan["domains"]["finance"], plan["domains"]["general"]
    assert (finance["tokens"], finance["share"], finance["epochs"], finance["sampling_factor"]) == (5_000, 0.5, 5.0, 5.0)
    assert (general["tokens"], general["share"], general["epochs"]) == (5_000, 0.5, round(5 / 9, 6))

    # 10 blocks of 100 tokens at 1/3 : 2/3 -> 3.33 : 6.67 blocks -> largest remainder gives 3 : 7.
    plan = plan_mix({"a": 500, "b": 2_050}, {"a": 1 / 3, "b": 2 / 3}, total_tokens=1_000, block_tokens=100)
    assert [plan["domains"][d]["tokens"] for d in "ab"] == [300, 700]
    assert plan["domains"]["a"]["epochs"] == 0.6 and plan["domains"]["b"]["epochs"] == 0.35

    plan = plan_mix({"a": 100, "unused": 50}, {"a": 1.0})
    assert plan["domains"]["unused"]["tokens"] == 0 and plan["total_tokens"] == 150


@pytest.mark.parametrize(
    ("counts", "targets", "message"),
    [
        ({"a": 10}, {"a": 0.5, "b": 0.5}, "without data"),
        ({"a": 10, "b": 10}, {"a": 0.6, "b": 0.6}, "sum to 1"),
        ({"a": 10, "b": 0}, {"a": 0.5, "b": 0.5}, "not one"),
    ],
)
def test_plan_mix_rejects_impossible_targets(counts, targets, message):
    with pytest.raises(ValueError, match=message):
        plan_mix(counts, targets)


def test_shares_match_targets_by_tokens(tmp_path, corpus, tokenizer):
    targets = {"finance": 0.3, "general": 0.7}
    index = write_token_shards(corpus, tokenizer, tmp_path / "shards", targets, SEQ_LEN, shard_tokens=SEQ_LEN * 50)
    stored = _read_shards(tmp_path / "shards")
    assert stored["input_ids"].dtype == np.int32 and stored["input_ids"].shape == (index["blocks"], SEQ_LEN)
    assert index["blocks"] >= 100 and len(index["shards"]) == -(-index["blocks"] // 50)
    for number, domain in enumerate(index["domains"]):
        realised = (stored["domain"] == number).sum() * SEQ_LEN / index["tokens"]
        assert abs(realised - targets[domain]) < 0.01
        assert index["tokens_per_domain"][domain] == (stored["domain"] == number).sum() * SEQ_LEN
    # finance is the small domain: up-sampled, each block repeated evenly; general down-sampled without repeats.
    finance, general = index["mix"]["domains"]["finance"], index["mix"]["domains"]["general"]
    assert finance["epochs"] > 1 > general["epochs"]
    finance_counts = np.bincount(stored["block"][stored["domain"] == 0], minlength=index["tokenized"]["finance"]["blocks"])
    assert finance_counts.max() - finance_counts.min() <= 1
    assert np.bincount(stored["block"][stored["domain"] == 1]).max() == 1
    assert index["tokenizer_hash"] == tokenizer_hash(tokenizer)
    assert index["tokenized"]["finance"]["documents"] == 40
    assert index["tokenized"]["finance"]["tokens"] == len(_stream(corpus["finance"], tokenizer))


def test_round_trip_blocks_concatenate_to_the_token_stream(tmp_path, corpus, tokenizer):
    counts = {d: len(_stream(texts, tokenizer)) // SEQ_LEN for d, texts in corpus.items()}
    natural = {d: n / sum(counts.values()) for d, n in counts.items()}  # every block drawn exactly once
    index = write_token_shards(corpus, tokenizer, tmp_path / "shards", natural, SEQ_LEN, shard_tokens=SEQ_LEN * 64)
    stored = _read_shards(tmp_path / "shards")
    for number, domain in enumerate(index["domains"]):
        mine = stored["domain"] == number
        in_order = stored["input_ids"][mine][np.argsort(stored["block"][mine])]
        stream = _stream(corpus[domain], tokenizer)
        assert in_order.reshape(-1).tolist() == stream[: counts[domain] * SEQ_LEN]
        assert index["tokenized"][domain]["dropped_tokens"] == len(stream) - counts[domain] * SEQ_LEN


def test_deterministic_and_pickle_free(tmp_path, corpus, tokenizer):
    targets = {"finance": 0.5, "general": 0.5}
    first = write_token_shards(corpus, tokenizer, tmp_path / "a", targets, SEQ_LEN, shard_tokens=SEQ_LEN * 40, seed=3)
    again = write_token_shards(corpus, tokenizer, tmp_path / "b", targets, SEQ_LEN, shard_tokens=SEQ_LEN * 40, seed=3)
    other = write_token_shards(corpus, tokenizer, tmp_path / "c", targets, SEQ_LEN, shard_tokens=SEQ_LEN * 40, seed=4)
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in again["shards"]]
    assert [s["sha256"] for s in first["shards"]] != [s["sha256"] for s in other["shards"]]
    assert first["mix"] == other["mix"]
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["index.json"] + [s["file"] for s in first["shards"]]
    assert all(name.endswith((".json", ".safetensors")) for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no scratch or temp leftovers


def test_dataset_streams_deterministically_and_resumes_exactly(tmp_path, corpus, tokenizer):
    out = tmp_path / "shards"
    index = write_token_shards(corpus, tokenizer, out, {"finance": 0.4, "general": 0.6}, SEQ_LEN,
                               shard_tokens=SEQ_LEN * 30, separator_id=tokenizer.eos_token_id)
    assert index["separator_id"] == tokenizer.eos_token_id
    stored = _read_shards(out)["input_ids"]

    rows = list(TokenShardDataset(out))
    assert len(rows) == len(TokenShardDataset(out)) == index["blocks"]
    assert all(row["input_ids"].dtype == torch.long and row["input_ids"].shape == (SEQ_LEN,) for row in rows)
    assert torch.equal(torch.stack([row["input_ids"] for row in rows]), torch.from_numpy(stored).long())

    shuffled = [row["input_ids"].tolist() for row in TokenShardDataset(out, seed=7)]
    assert shuffled == [row["input_ids"].tolist() for row in TokenShardDataset(out, seed=7)]
    assert shuffled != [row["input_ids"].tolist() for row in rows]
    assert sorted(shuffled) == sorted(stored.tolist())

    resumed = TokenShardDataset(out, seed=7, skip_blocks=37)
    assert len(resumed) == index["blocks"] - 37
    assert [row["input_ids"].tolist() for row in resumed] == shuffled[37:]
    with pytest.raises(ValueError, match="skip_blocks"):
        TokenShardDataset(out, skip_blocks=index["blocks"] + 1)

    loader = torch.utils.data.DataLoader(TokenShardDataset(out, seed=7), batch_size=8, num_workers=2)
    seen = [ids.tolist() for batch in loader for ids in batch["input_ids"]]
    assert sorted(seen) == sorted(shuffled)  # two workers split the blocks, none twice
