"""An OpenAI-compatible server for a local model directory (``finloom serve``).

Implements the parts of the OpenAI API that evaluation harnesses and the teacher/judge client
use: ``/v1/models``, ``/v1/chat/completions`` (with SSE streaming) and ``/v1/completions``.
Meant for loopback use and tests; for production throughput serve the same directory with vLLM.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from finloom.llm.generation import LocalGenerator
from finloom.recipe import ModelLoading


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


MAX_CHOICES = 8
"""``n`` above this is refused: each choice is a full generation on the one model this server holds."""


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False

    def sampling(self) -> dict:
        return dict(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed)


class ChatRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(SamplingParams):
    prompt: str | list[int] | list[str] | list[list[int]] = Field(description="Text or token ids, or a batch of either.")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="Top log-probs per token (prompt too, with echo).")

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)


def _usage(generations: list) -> dict:
    """Token counts of a response: the prompt once, every choice's completion."""
    prompt, completion = generations[0].prompt_tokens, sum(g.completion_tokens for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """An OpenAI-shaped error: 400 for a request the server will not run, 404 for an unknown model."""
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": "invalid_request_error",
                                                               "code": code}})


class Rejected(Exception):
    def __init__(self, response: JSONResponse):
        self.response = response


def create_app(model_dir: str | Path, model_name: str | None = None, trust_remote_code: bool = False) -> FastAPI:
    generator = LocalGenerator(model_dir, ModelLoading(trust_remote_code=trust_remote_code))
    resolved = Path(model_dir).resolve()
    # Stage models all live in RUN/STAGE/model: name them by run and stage instead.
    name = model_name or ("/".join(resolved.parts[-3:-1]) if resolved.name == "model" else resolved.name)
    vocabulary = len(generator.tokenizer)
    app = FastAPI(title="finloom serve", version="1")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        message = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors())
        return _error(400, message)

    @app.exception_handler(Rejected)
    async def rejected(_: Request, error: Rejected) -> JSONResponse:
        return error.response

    def check(request: SamplingParams, prompt_ids: list[list[int]]) -> None:
        """Refuse what the model cannot run, naming the field: another model's name, an empty or too long prompt,
        token ids outside the vocabulary, several streamed choices."""
        if request.model not in (None, "default", name):
            raise Rejected(_error(404, f"model: the model {request.model!r} does not exist (this server has {name!r})",
                                  "model_not_found"))
        if request.stream and request.n > 1:
            raise Rejected(_error(400, "n: a streamed response has one choice; set n to 1"))
        for ids in prompt_ids or [[]]:
            if not ids:
                raise Rejected(_error(400, "prompt: empty"))
            outside = [token for token in ids if not 0 <= token < vocabulary]
            if outside:
                raise Rejected(_error(400, f"prompt: token id {outside[0]} is outside the vocabulary (0..{vocabulary - 1})"))
            if len(ids) > generator.context_length:
                raise Rejected(_error(400, f"prompt: {len(ids)} tokens, longer than the model's context of "
                                           f"{generator.context_length} tokens"))

    def encode(prompt: str) -> list[int]:
        return generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "finloom"}]}

    def _sse(pieces, build) -> StreamingResponse:
        def events():
            for piece in pieces:
                yield f"data: {json.dumps(build(piece, None), ensure_ascii=False)}\n\n"
            yield f"data: {json.dumps(build('', 'stop'), ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest):
        prompt = generator.chat_prompt([m.model_dump() for m in request.messages])
        check(request, [encode(prompt)])
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if request.stream:
            def chunk(piece: str, finish: str | None) -> dict:
                delta = {"content": piece} if piece or finish is None else {}
                return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            return _sse(generator.stream(prompt, **request.sampling()), chunk)
        generations = [generator.generate(prompt, **request.sampling()) for _ in range(request.n)]
        return {
            "id": request_id, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": index, "message": {"role": "assistant", "content": generation.text},
                         "finish_reason": generation.finish_reason} for index, generation in enumerate(generations)],
            "usage": _usage(generations),
        }

    @app.post("/v1/completions")
    def completions(request: CompletionRequest):
        request_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        check(request, [prompt if isinstance(prompt, list) else encode(prompt) for prompt in request.prompts()])
        if request.echo or request.logprobs is not None:
            return _scored_completions(request, request_id, created)
        if not isinstance(request.prompt, str):
            return JSONResponse(status_code=400, content={"error": {
                "message": "token or batched prompts are served with logprobs / echo only", "type": "invalid_request_error"}})
        if request.stream:
            def chunk(piece: str, finish: str | None) -> dict:
                return {"id": request_id, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": 0, "text": piece, "finish_reason": finish}]}

            return _sse(generator.stream(request.prompt, **request.sampling()), chunk)
        generations = [generator.generate(request.prompt, **request.sampling()) for _ in range(request.n)]
        return {
            "id": request_id, "object": "text_completion", "created": created, "model": name,
            "choices": [{"index": index, "text": generation.text, "finish_reason": generation.finish_reason}
                        for index, generation in enumerate(generations)],
            "usage": _usage(generations),
        }

    def _scored_completions(request: CompletionRequest, request_id: str, created: int) -> dict:
        """Greedy tokens with their log-probs; with ``echo``, the prompt's tokens and log-probs first."""
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, prompt in enumerate(request.prompts()):
            ids = prompt if isinstance(prompt, list) else generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            scored = generator.prompt_logprobs(ids, request.logprobs or 1, request.max_tokens)
            logprobs = scored["logprobs"]
            if not request.echo:
                logprobs = {key: values[len(ids):] for key, values in logprobs.items()}
            choices.append({"index": index, "text": scored["all_text"] if request.echo else scored["text"],
                            "logprobs": logprobs, "finish_reason": "length"})
            prompt_tokens += scored["prompt_tokens"]
            completion_tokens += scored["completion_tokens"]
        return {"id": request_id, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    return app
