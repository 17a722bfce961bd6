"""A reward model served over HTTP scores conversations as the trainer saw them."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import serving
from finloom.errors import BadInput
from finloom.llm.reward_scorer import LocalRewardScorer, RemoteRewardScorer, is_reward_model


def test_served_reward_model_scores_as_training_did(tiny_run):
    model_dir = tiny_run / "reward" / "model"
    assert is_reward_model(model_dir) and not is_reward_model(tiny_run / "sft" / "model")
    held = [json.loads(line) for line in (tiny_run / "reward" / "heldout_rewards.jsonl").read_text().splitlines()]
    conversations = [row["prompt"] + row[side] for row in held for side in ("chosen", "rejected")]
    expected = [row[f"reward_{side}"] for row in held for side in ("chosen", "rejected")]
    assert len(set(expected)) > 1
    local = LocalRewardScorer(model_dir, batch_size=3).score(conversations)
    assert local == pytest.approx(expected, abs=1e-4)  # the trainer's own batches gave these, padded differently
    with serving(model_dir) as base_url:
        assert RemoteRewardScorer(base_url).score(conversations) == pytest.approx(expected, abs=1e-4)
        empty = httpx.post(f"{base_url}/rewards", json={"conversations": [[]]})
        assert empty.status_code == 400 and "conversations.0: empty" in empty.text
        other = httpx.post(f"{base_url}/rewards", json={"model": "gpt-x", "conversations": conversations[:1]})
        assert other.status_code == 404
        with pytest.raises(BadInput, match="HTTP 400"):
            RemoteRewardScorer(base_url).score([[{"role": "robot", "content": "x"}]])
