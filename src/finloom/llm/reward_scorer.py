"""Reward models as scorers of conversations: a local model directory, or one served over HTTP.

Both take conversations (message lists ending with the answer to score) and return one reward each, so
online RL, the preference builder and other tools call ``score`` without caring where the model runs.
A conversation is tokenized exactly as TRL's RewardTrainer tokenized the training pairs (the chat template,
tokenized by ``apply_chat_template``), and one longer than the model's context keeps its last tokens (the
answer, which the reward is read from).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import torch
from transformers import AutoModelForSequenceClassification

from finloom.errors import BadInput
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.recipe import ModelLoading


def is_reward_model(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a sequence-classification head with one output (what ``reward`` writes)."""
    import json

    config = Path(model_dir) / "config.json"
    if not config.exists():
        return False
    data = json.loads(config.read_text(encoding="utf-8"))
    return any(name.endswith("ForSequenceClassification") for name in data.get("architectures") or [])


class LocalRewardScorer:
    def __init__(self, model_dir: str | Path, loading: ModelLoading | None = None, batch_size: int = 8):
        loading = loading or ModelLoading()
        self.tokenizer = load_tokenizer(model_dir, loading)
        self.model = load_causal_lm(model_dir, loading, model_class=AutoModelForSequenceClassification).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.context = getattr(self.model.config, "max_position_embeddings", None) or 4096
        self.batch_size = batch_size

    def tokenize(self, conversation: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        return ids[-self.context:]

    @torch.no_grad()
    def score(self, conversations: list[list[dict]]) -> list[float]:
        rewards: list[float] = []
        device = self.model.device
        for start in range(0, len(conversations), self.batch_size):
            rows = [self.tokenize(c) for c in conversations[start:start + self.batch_size]]
            width = max(len(row) for row in rows)
            ids = torch.tensor([row + [self.tokenizer.pad_token_id] * (width - len(row)) for row in rows], device=device)
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=device)
            rewards += self.model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float().cpu().tolist()
        return rewards


class RemoteRewardScorer:
    """A reward model served by ``finloom serve REWARD_MODEL_DIR`` (POST /v1/rewards)."""

    def __init__(self, base_url: str, timeout: float = 120.0, api_key: str | None = None):
        self.url = base_url.rstrip("/") + "/rewards"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def score(self, conversations: list[list[dict]]) -> list[float]:
        try:
            reply = httpx.post(self.url, json={"conversations": conversations}, headers=self.headers,
                               timeout=self.timeout)
        except httpx.HTTPError as error:
            raise BadInput(f"reward model at {self.url}: {type(error).__name__}: {error}") from None
        if reply.status_code != 200:
            raise BadInput(f"reward model at {self.url}: HTTP {reply.status_code}: {reply.text[:300]}")
        data = sorted(reply.json()["data"], key=lambda item: item["index"])
        if len(data) != len(conversations):
            raise BadInput(f"reward model at {self.url}: {len(data)} rewards for {len(conversations)} conversations")
        return [item["reward"] for item in data]


def reward_scorer(where: str, resolve=Path):
    """A scorer for a recipe's reward model: an ``http(s)://.../v1`` URL of ``finloom serve``, else a directory."""
    if where.startswith(("http://", "https://")):
        return RemoteRewardScorer(where)
    return LocalRewardScorer(resolve(where))
