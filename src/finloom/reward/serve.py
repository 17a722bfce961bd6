"""A reward model over HTTP (``finloom serve REWARD_MODEL_DIR``): POST /v1/rewards scores a batch of
conversations, so RL on several machines, and other tools, share one reward model.

Request: ``{"conversations": [[{"role": ..., "content": ...}, ...], ...]}`` (each ending with the answer to
score); reply: ``{"object": "list", "model": NAME, "data": [{"index": i, "reward": r}, ...]}``. /v1/models
lists it as the chat server does. Loopback use by default, as ``finloom serve``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from finloom.llm.serve import ChatMessage, _error
from finloom.recipe import ModelLoading
from finloom.llm.reward_scorer import LocalRewardScorer

MAX_CONVERSATIONS = 256


class RewardRequest(BaseModel):
    model: str | None = None
    conversations: list[list[ChatMessage]] = Field(min_length=1, max_length=MAX_CONVERSATIONS)


def create_reward_app(model_dir: str | Path, model_name: str | None = None, trust_remote_code: bool = False) -> FastAPI:
    scorer = LocalRewardScorer(model_dir, ModelLoading(trust_remote_code=trust_remote_code))
    resolved = Path(model_dir).resolve()
    name = model_name or ("/".join(resolved.parts[-3:-1]) if resolved.name == "model" else resolved.name)
    app = FastAPI(title="finloom serve (reward model)", version="1")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(400, "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors()))

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "finloom"}]}

    @app.post("/v1/rewards")
    def rewards(request: RewardRequest):
        if request.model not in (None, "default", name):
            return _error(404, f"model: the model {request.model!r} does not exist (this server has {name!r})",
                          "model_not_found")
        for index, conversation in enumerate(request.conversations):
            if not conversation:
                return _error(400, f"conversations.{index}: empty")
        scores = scorer.score([[m.model_dump() for m in c] for c in request.conversations])
        return {"object": "list", "model": name,
                "data": [{"index": i, "reward": round(r, 6)} for i, r in enumerate(scores)]}

    return app
