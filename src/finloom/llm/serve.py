"""An OpenAI-compatible server for a model directory or a run's chat models (``finloom serve``).

Implements the parts of the OpenAI API that evaluation harnesses, the teacher/judge client and chat UIs
use: ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` (both with SSE streaming), plus
``/health`` and a chat page at ``/``. What a shared endpoint needs:

- at most ``max_concurrency`` requests generate at once, ``max_queue`` more wait, further ones get 429;
- a request that has not finished ``request_timeout`` seconds after it arrived gets 504; a stream cut by the
  timeout ends with ``finish_reason: "timeout"`` (its status was sent with its first byte);
- token ``usage`` in every response: a stream's last chunk (the one with ``finish_reason``) carries it, or,
  with ``stream_options.include_usage``, a separate final chunk with no choices, as OpenAI sends it;
- a 4xx naming the field for any request the server will not run, never a 500;
- one JSON log line per request (``finloom.llm.request_log``);
- an optional PAS model that complements the last user message before the model answers: chat responses (a
  stream's first chunk) carry a top-level ``pas``, what it added or null; a request opts out with ``"pas": false``.

Meant for loopback use, tests and side-by-side inspection; for throughput serve a model directory with vLLM.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from jinja2 import TemplateError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from finloom.llm.admission import Admission, QueueFull, Slot, WaitedTooLong
from finloom.llm.generation import Generation, Interrupt, LocalGenerator, TextStream
from finloom.llm.model_pool import ModelPool, served_models
from finloom.llm.request_log import RequestLog, error_body, line_writer
from finloom.recipe import ModelLoading


def _encodable(text: str) -> str:
    """Refuse a lone surrogate ("\\ud800" is valid JSON): no tokenizer can read it, nor can a log line hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"not valid Unicode text (a lone surrogate at character {error.start})") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text


MAX_CHOICES = 8
"""``n`` above this is refused: each choice is a full generation on one model."""


class StreamOptions(BaseModel):
    include_usage: bool = False
    """Usage in a separate last chunk with no choices (OpenAI's shape) instead of on the finishing chunk."""


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # OpenAI clients send fields this server ignores

    model: str | None = None
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self) -> dict:
        return dict(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed)


class ChatRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1)
    pas: bool = True
    """Let the server's PAS model complement the last user message (when the server has one)."""

    @field_validator("messages")
    @classmethod
    def ends_with_the_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError(f"the last message must be the user's (it is the {messages[-1].role}'s)")
        return messages


class CompletionRequest(SamplingParams):
    prompt: Text | list[int] | list[Text] | list[list[int]] = Field(description="Text or token ids, or a batch of either.")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="Top log-probs per token (prompt too, with echo).")

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)


class PromptAugmenter(Protocol):
    """A PAS model: ``augment(prompt)`` gives {"complement", "category", "prompt" (the augmented prompt)}, or
    None where it does not apply to this prompt."""

    def augment(self, prompt: str) -> dict | None: ...


@dataclass(frozen=True)
class ServeOptions:
    max_concurrency: int = 4
    """Requests generating at once (several on one model take turns on it)."""
    max_queue: int = 32
    """Requests waiting for a slot; one more is answered 429 at once."""
    request_timeout: float = 300.0
    """Seconds from arrival to the end of the answer, queueing included; past it: 504, or a stream ends with
    ``finish_reason: "timeout"``."""
    max_loaded: int = 2
    """Models of a run kept in memory; the least recently used is unloaded to load another."""
    log_file: Path | None = None
    """Where the JSON request lines go (appended); None: stderr."""
    log_prompts: bool = False
    """Put prompt and completion texts in the request lines (off: they may be confidential)."""


def _usage(generations: list[Generation]) -> dict:
    """Token counts of a response: the prompt once, every choice's completion."""
    prompt, completion = generations[0].prompt_tokens, sum(g.completion_tokens for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(status: int, message: str, code: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    """An OpenAI-shaped error: 400 for a request the server will not run, 404 for an unknown model."""
    return JSONResponse(status_code=status, content=error_body(message, kind, code))


class Rejected(Exception):
    def __init__(self, response: JSONResponse):
        self.response = response


def _field_errors(error: RequestValidationError) -> str:
    """Pydantic's errors as "field.path: what is wrong", one per field (a union's alternatives are one error,
    the specific one where an alternative of the right type refused the value)."""
    messages: dict[str, str] = {}
    for item in error.errors():
        loc = [str(part) for part in item["loc"][1:]]
        if item["type"] == "json_invalid":
            field, message = "body", f"invalid JSON ({item.get('ctx', {}).get('error', item['msg'])})"
        else:
            field, message = ".".join(loc) or "body", item["msg"].removeprefix("Value error, ")
        if field.startswith("prompt."):  # one error per alternative of the union: say what the union takes
            field = "prompt"
            if item["type"] != "value_error":
                message = "expected text, a list of token ids, or a list of either"
        if item["type"] == "value_error" or field not in messages:
            messages[field] = message
    return "; ".join(f"{field}: {message}" for field, message in messages.items())


def _chat_prompt(generator: LocalGenerator, messages: list[dict]) -> str:
    try:
        return generator.chat_prompt(messages)
    except TemplateError as error:
        raise Rejected(_error(400, f"messages: the model's chat template refuses them ({error})")) from None


def _check_prompts(generator: LocalGenerator, prompt_ids: list[list[int]]) -> None:
    """Refuse what the model cannot run, naming the field: an empty or too long prompt, ids outside the vocabulary."""
    vocabulary = len(generator.tokenizer)
    for ids in prompt_ids or [[]]:
        if not ids:
            raise Rejected(_error(400, "prompt: empty"))
        outside = [token for token in ids if not 0 <= token < vocabulary]
        if outside:
            raise Rejected(_error(400, f"prompt: token id {outside[0]} is outside the vocabulary (0..{vocabulary - 1})"))
        if len(ids) > generator.context_length:
            raise Rejected(_error(400, f"prompt: {len(ids)} tokens, longer than the model's context of "
                                       f"{generator.context_length} tokens"))


def _encode(generator: LocalGenerator, prompt: str) -> list[int]:
    return generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _augment(pas: PromptAugmenter | None, generator: LocalGenerator, request: ChatRequest) -> tuple[list[dict], dict | None]:
    """The messages the model answers, and what PAS added (None: not applied). PAS does not apply where the
    request says ``"pas": false``, where it declines the prompt, or where its prompt would not fit the context."""
    messages = [m.model_dump() for m in request.messages]
    if pas is None or not request.pas:
        return messages, None
    result = pas.augment(messages[-1]["content"])
    if result is None:
        return messages, None
    augmented = [*messages[:-1], {**messages[-1], "content": result["prompt"]}]
    if len(_encode(generator, _chat_prompt(generator, augmented))) > generator.context_length:
        return messages, None
    return augmented, {"complement": result["complement"], "category": result["category"]}


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class _SlotStream(StreamingResponse):
    """A streamed answer holding a slot. However the response ends (finished, failed, its client gone, even before
    its first event), its events are closed, its generation stopped and its slot freed, at once."""

    def __init__(self, events: AsyncIterator[str], slot: Slot, interrupt: Interrupt):
        super().__init__(events, media_type="text/event-stream")
        self.slot, self.interrupt = slot, interrupt

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.interrupt.cancel()  # a no-op after the end
            self.slot.release()


@dataclass
class _Stream:
    """How one endpoint streams: ``open(generator, interrupt)`` (run in a thread) gives the opening chunk (or
    None) and the text stream; ``chunk(piece, finish, usage)`` shapes each chunk."""

    open: Callable[[LocalGenerator, Interrupt], tuple[dict | None, TextStream]]
    chunk: Callable[[str, str | None, dict | None], dict]
    include_usage: bool


def create_app(model_path: str | Path, model_name: str | None = None, trust_remote_code: bool = False,
               pas: PromptAugmenter | None = None, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The server for ``model_path``: a model directory, or a run directory (its chat models, by stage name)."""
    pool = ModelPool(served_models(Path(model_path), model_name), ModelLoading(trust_remote_code=trust_remote_code),
                     options.max_loaded)
    pool.get(pool.default)  # now: a broken model fails at start, and the first answer is not slowed by loading
    admission = Admission(options.max_concurrency, options.max_queue)
    app = FastAPI(title="finloom serve", version="1")
    app.state.pool = pool
    app.add_middleware(RequestLog, write=line_writer(options.log_file), unlogged=frozenset({"/health"}))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(400, _field_errors(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """An unknown path or method; FastAPI's only 400 is a body it cannot decode (not UTF-8, say)."""
        where = "body" if error.status_code == 400 else f"{request.method} {request.url.path}"
        return _error(error.status_code, f"{where}: {error.detail}")

    @app.exception_handler(Rejected)
    async def rejected(_: Request, error: Rejected) -> JSONResponse:
        return error.response

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, __: QueueFull) -> JSONResponse:
        response = _error(429, f"the server is busy: {admission.in_flight} requests are generating and "
                               f"{admission.queued} waiting (--max-queue {admission.max_queue}); retry later",
                          "queue_full", "rate_limit_error")
        response.headers["retry-after"] = "1"
        return response

    @app.exception_handler(WaitedTooLong)
    async def waited_too_long(_: Request, __: WaitedTooLong) -> JSONResponse:
        return timed_out()

    def timed_out() -> JSONResponse:
        return _error(504, f"request_timeout: no answer within {options.request_timeout:g} s (queueing included)",
                      "request_timeout", "timeout_error")

    def model_name_of(requested: str | None) -> str:
        if requested in (None, "default"):
            return pool.default
        if requested not in pool.directories:
            raise Rejected(_error(404, f"model: the model {requested!r} does not exist (this server has "
                                       f"{', '.join(map(repr, pool.directories))})", "model_not_found"))
        return requested

    def note(request: Request, generations: list[Generation], finish: str | None = None, **texts) -> None:
        """Token counts (and, with ``log_prompts``, the texts) for the request's log line."""
        record = request.state.log
        record["prompt_tokens"] = generations[0].prompt_tokens
        record["completion_tokens"] = sum(g.completion_tokens for g in generations)
        if finish:
            record["finish_reason"] = finish
        if options.log_prompts:
            record.update(texts)

    async def admitted(request: Request, body: SamplingParams, prepare: Callable[[LocalGenerator], None],
                       respond: Callable[[LocalGenerator, Interrupt], dict], stream: _Stream):
        """Answer ``body`` holding a slot: ``prepare`` refuses what the model cannot run, then ``respond`` answers
        (or ``stream`` streams, keeping the slot until the stream ends); all of it before the deadline."""
        name = model_name_of(body.model)
        request.state.log["model"] = name
        deadline = time.monotonic() + options.request_timeout
        slot = await admission.enter(options.request_timeout)
        try:
            generator = await run_in_threadpool(pool.get, name)
            await run_in_threadpool(prepare, generator)
        except BaseException:
            slot.release()
            raise
        interrupt = Interrupt(deadline)
        if body.stream:
            return _SlotStream(events(request, generator, interrupt, stream), slot, interrupt)
        try:
            reply = await run_in_threadpool(respond, generator, interrupt)
        finally:
            slot.release()
        return timed_out() if interrupt.fired else reply

    async def events(request: Request, generator: LocalGenerator, interrupt: Interrupt,
                     stream: _Stream) -> AsyncIterator[str]:
        """The opening chunk (chat: the role and ``pas``), a chunk per text piece, the finishing chunk with usage,
        [DONE]; an unexpected error ends the stream with an error event instead."""
        pieces = []
        try:
            opening, text_stream = await run_in_threadpool(stream.open, generator, interrupt)
            if opening is not None:
                yield _sse(opening)
            async for piece in iterate_in_threadpool(text_stream):
                pieces.append(piece)
                yield _sse(stream.chunk(piece, None, None))
            generation = text_stream.generation
            usage = _usage([generation])
            yield _sse(stream.chunk("", generation.finish_reason, None if stream.include_usage else usage))
            if stream.include_usage:
                yield _sse({**stream.chunk("", None, usage), "choices": []})
            note(request, [generation], generation.finish_reason, completion="".join(pieces))
            yield _sse("[DONE]")
        except Exception as error:  # the status went out with the first byte: the error is the stream's last event
            request.state.log["error"] = f"{type(error).__name__}: {error}"[:500]
            traceback.print_exc(file=sys.stderr)
            yield _sse(error_body("internal error while generating; the server log has the details", "server_error"))
        except (asyncio.CancelledError, GeneratorExit):
            request.state.log["finish_reason"] = "disconnected"
            raise

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> str:
        return resources.files("finloom.llm").joinpath("chat_page.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": pool.default, "pas": pas is not None, "in_flight": admission.in_flight,
                "queued": admission.queued, "loaded": pool.loaded}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "finloom",
                                            "pas": pas is not None, "default": name == pool.default}
                                           for name in pool.directories]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        if body.stream and body.n > 1:
            raise Rejected(_error(400, "n: a streamed response has one choice; set n to 1"))
        request_id, created = f"chatcmpl-{request.state.log['id']}", int(time.time())

        def prepare(generator: LocalGenerator) -> None:
            _check_prompts(generator, [_encode(generator, _chat_prompt(generator, [m.model_dump() for m in body.messages]))])

        def augmented(generator: LocalGenerator) -> tuple[str, list[dict], dict | None]:
            messages, added = _augment(pas, generator, body)
            request.state.log["pas"] = added is not None
            return _chat_prompt(generator, messages), messages, added

        def respond(generator: LocalGenerator, interrupt: Interrupt) -> dict:
            prompt, messages, added = augmented(generator)
            generations = [generator.generate(prompt, **body.sampling(), interrupt=interrupt) for _ in range(body.n)]
            note(request, generations, messages=messages, completion=[g.text for g in generations])
            return {"id": request_id, "object": "chat.completion", "created": created, "model": request.state.log["model"],
                    "choices": [{"index": index, "message": {"role": "assistant", "content": generation.text},
                                 "finish_reason": generation.finish_reason}
                                for index, generation in enumerate(generations)],
                    "usage": _usage(generations), "pas": added}

        def chunk(piece: str, finish: str | None, usage: dict | None) -> dict:
            payload = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                       "model": request.state.log["model"],
                       "choices": [{"index": 0, "delta": {"content": piece} if piece else {}, "finish_reason": finish}]}
            return {**payload, "usage": usage} if usage else payload

        def open_stream(generator: LocalGenerator, interrupt: Interrupt) -> tuple[dict, TextStream]:
            prompt, messages, added = augmented(generator)
            if options.log_prompts:
                request.state.log["messages"] = messages
            opening = chunk("", None, None)
            opening["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            return {**opening, "pas": added}, generator.stream(prompt, **body.sampling(), interrupt=interrupt)

        return await admitted(request, body, prepare, respond,
                              _Stream(open_stream, chunk, bool(body.stream_options and body.stream_options.include_usage)))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        scored = body.echo or body.logprobs is not None
        if body.stream and (scored or body.n > 1):
            raise Rejected(_error(400, "stream: echo, logprobs and n > 1 are not streamed; set stream to false"))
        if not scored and not isinstance(body.prompt, str):
            raise Rejected(_error(400, "prompt: token or batched prompts are served with logprobs / echo only"))
        request_id, created = f"cmpl-{request.state.log['id']}", int(time.time())

        def prepare(generator: LocalGenerator) -> None:
            _check_prompts(generator, [p if isinstance(p, list) else _encode(generator, p) for p in body.prompts()])

        def respond(generator: LocalGenerator, interrupt: Interrupt) -> dict:
            if scored:
                return _scored_completions(generator, body, request, interrupt, request_id, created)
            generations = [generator.generate(body.prompt, **body.sampling(), interrupt=interrupt) for _ in range(body.n)]
            note(request, generations, prompt=body.prompt, completion=[g.text for g in generations])
            return {"id": request_id, "object": "text_completion", "created": created, "model": request.state.log["model"],
                    "choices": [{"index": index, "text": generation.text, "finish_reason": generation.finish_reason}
                                for index, generation in enumerate(generations)],
                    "usage": _usage(generations)}

        def chunk(piece: str, finish: str | None, usage: dict | None) -> dict:
            payload = {"id": request_id, "object": "text_completion", "created": created,
                       "model": request.state.log["model"], "choices": [{"index": 0, "text": piece, "finish_reason": finish}]}
            return {**payload, "usage": usage} if usage else payload

        def open_stream(generator: LocalGenerator, interrupt: Interrupt) -> tuple[None, TextStream]:
            if options.log_prompts:
                request.state.log["prompt"] = body.prompt
            return None, generator.stream(body.prompt, **body.sampling(), interrupt=interrupt)

        return await admitted(request, body, prepare, respond,
                              _Stream(open_stream, chunk, bool(body.stream_options and body.stream_options.include_usage)))

    return app


def _scored_completions(generator: LocalGenerator, body: CompletionRequest, request: Request, interrupt: Interrupt,
                        request_id: str, created: int) -> dict:
    """Greedy tokens with their log-probs; with ``echo``, the prompt's tokens and log-probs first."""
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, prompt in enumerate(body.prompts()):
        ids = prompt if isinstance(prompt, list) else _encode(generator, prompt)
        scored = generator.prompt_logprobs(ids, body.logprobs or 1, body.max_tokens, interrupt)
        logprobs = scored["logprobs"]
        if not body.echo:
            logprobs = {key: values[len(ids):] for key, values in logprobs.items()}
        choices.append({"index": index, "text": scored["all_text"] if body.echo else scored["text"],
                        "logprobs": logprobs, "finish_reason": "length"})
        prompt_tokens += scored["prompt_tokens"]
        completion_tokens += scored["completion_tokens"]
    request.state.log.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return {"id": request_id, "object": "text_completion", "created": created, "model": request.state.log["model"],
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}
