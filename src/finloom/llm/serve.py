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

What generates is a backend: ``LocalBackend``, the models of this process (HF transformers), or
``finloom.llm.upstream.UpstreamBackend``, an OpenAI-compatible server such as vLLM (``finloom serve --upstream
URL``). The app validates, admits, times, runs PAS, logs and shapes every response the same way for both.

The local backend is meant for loopback use, tests and side-by-side inspection; for throughput serve a model
directory with vLLM and put this server in front of it with ``--upstream``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from finloom.llm.generation import Generation, Interrupt, LocalGenerator
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


class BackendError(Exception):
    """A backend could not answer: the client gets ``status`` and ``message`` (an upstream's 4xx passed on; 502 for
    an upstream that is down or failed). Inside a stream, whose status has gone out, it is the stream's last event."""

    def __init__(self, status: int, message: str, code: str | None = None, kind: str = "upstream_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.headers = status, message, code, kind, headers or {}


class DeadlinePassed(Exception):
    """The request's ``request_timeout`` ran out before its answer came: 504."""


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


def _augment(pas: PromptAugmenter | None, fits: Callable[[list[dict]], bool],
             request: ChatRequest) -> tuple[list[dict], dict | None]:
    """The messages the model answers, and what PAS added (None: not applied). PAS does not apply where the
    request says ``"pas": false``, where it declines the prompt, or where its messages do not ``fit`` the model."""
    messages = [m.model_dump() for m in request.messages]
    if pas is None or not request.pas:
        return messages, None
    result = pas.augment(messages[-1]["content"])
    if result is None:
        return messages, None
    augmented = [*messages[:-1], {**messages[-1], "content": result["prompt"]}]
    if not fits(augmented):
        return messages, None
    return augmented, {"complement": result["complement"], "category": result["category"]}


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


@dataclass
class Job:
    """One admitted request as a backend sees it: the model (a name its ``resolve`` gave), the validated request
    and its deadline (a ``time.monotonic()`` value). A chat backend calls ``messages`` once (in a thread: PAS
    generates) for the messages to answer."""

    model: str
    body: ChatRequest | CompletionRequest
    deadline: float
    pas: PromptAugmenter | None = None
    answered: list[dict] | None = None
    """The messages answered, once ``messages`` has run."""
    added: dict | None = None
    """What PAS added to the last user message, once ``messages`` has run (None: nothing)."""

    @property
    def chat(self) -> bool:
        return isinstance(self.body, ChatRequest)

    def messages(self, fits: Callable[[list[dict]], bool] = lambda messages: True) -> list[dict]:
        """The request's messages with PAS's complement where it applies and the result ``fits`` the model."""
        self.answered, self.added = _augment(self.pas, fits, self.body)
        return self.answered


@dataclass
class Answer:
    """A backend's whole answer: a choice per ``n`` ({"text", "finish_reason"}, and "logprobs" for scored
    completions) and the response's token usage."""

    choices: list[dict]
    usage: dict


class Streamed(Protocol):
    """A streamed answer, opened by ``Backend.stream``: ``start()`` once (PAS may run then), then ``pieces()``, the
    text as it comes; after them ``finish_reason`` and ``usage`` are set. ``aclose()`` stops it, at any point."""

    finish_reason: str | None
    usage: dict | None

    async def start(self) -> None: ...

    def pieces(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    """What generates. Its methods raise ``Rejected`` (a 4xx of its own), ``BackendError`` or ``DeadlinePassed``."""

    def describe(self) -> str:
        """What it serves, for the line the server prints when it starts."""

    async def models(self) -> tuple[list[str], str]:
        """The model names a request may ask for, and the default one."""

    async def health(self) -> tuple[bool, dict]:
        """Whether it can answer now, and its fields for ``/health``."""

    async def resolve(self, requested: str | None) -> str:
        """The model that answers a request's ``model`` (None or "default": the default one)."""

    async def answer(self, job: Job) -> Answer:
        """The whole answer (the request holds a slot meanwhile)."""

    async def stream(self, job: Job) -> Streamed:
        """An opened stream; an error it raises is the response's status (none has gone out yet)."""

    async def aclose(self) -> None:
        """The server stops."""


class LocalBackend:
    """The models of this process (HF transformers): one model directory, or a run's chat models (``ModelPool``)."""

    def __init__(self, pool: ModelPool):
        self.pool = pool

    def describe(self) -> str:
        return f"models {', '.join(self.pool.directories)}"

    async def models(self) -> tuple[list[str], str]:
        return list(self.pool.directories), self.pool.default

    async def health(self) -> tuple[bool, dict]:
        return True, {"model": self.pool.default, "loaded": self.pool.loaded}

    async def resolve(self, requested: str | None) -> str:
        if requested in (None, "default"):
            return self.pool.default
        if requested not in self.pool.directories:
            raise Rejected(_error(404, f"model: the model {requested!r} does not exist (this server has "
                                       f"{', '.join(map(repr, self.pool.directories))})", "model_not_found"))
        return requested

    async def answer(self, job: Job) -> Answer:
        generator = await self._prepared(job)
        interrupt = Interrupt(job.deadline)
        answer = await run_in_threadpool(self._answer, generator, job, interrupt)
        if interrupt.fired:
            raise DeadlinePassed
        return answer

    async def stream(self, job: Job) -> _LocalStream:
        return _LocalStream(await self._prepared(job), job)

    async def aclose(self) -> None:
        pass

    async def _prepared(self, job: Job) -> LocalGenerator:
        """The job's model, loaded, once it has refused what the model cannot run (a 400 naming the field)."""
        generator = await run_in_threadpool(self.pool.get, job.model)
        await run_in_threadpool(_check_job, generator, job)
        return generator

    @staticmethod
    def _answer(generator: LocalGenerator, job: Job, interrupt: Interrupt) -> Answer:
        body = job.body
        if not job.chat and (body.echo or body.logprobs is not None):
            return _scored_completions(generator, body, interrupt)
        prompt = _local_prompt(generator, job)
        generations = [generator.generate(prompt, **body.sampling(), interrupt=interrupt) for _ in range(body.n)]
        return Answer([{"text": g.text, "finish_reason": g.finish_reason} for g in generations], _usage(generations))


def _check_job(generator: LocalGenerator, job: Job) -> None:
    body = job.body
    if job.chat:
        _check_prompts(generator, [_encode(generator, _chat_prompt(generator, [m.model_dump() for m in body.messages]))])
    else:
        _check_prompts(generator, [p if isinstance(p, list) else _encode(generator, p) for p in body.prompts()])


def _local_prompt(generator: LocalGenerator, job: Job) -> str:
    """The text the model continues: a chat's messages (PAS applied where it fits the context) in its template."""
    if not job.chat:
        return job.body.prompt

    def fits(messages: list[dict]) -> bool:
        return len(_encode(generator, _chat_prompt(generator, messages))) <= generator.context_length

    return _chat_prompt(generator, job.messages(fits))


class _LocalStream:
    def __init__(self, generator: LocalGenerator, job: Job):
        self.generator, self.job = generator, job
        self.interrupt = Interrupt(job.deadline)
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self._text = None

    async def start(self) -> None:
        def open_stream():
            prompt = _local_prompt(self.generator, self.job)
            return self.generator.stream(prompt, **self.job.body.sampling(), interrupt=self.interrupt)

        self._text = await run_in_threadpool(open_stream)

    async def pieces(self) -> AsyncIterator[str]:
        async for piece in iterate_in_threadpool(self._text):
            yield piece
        generation = self._text.generation
        self.finish_reason, self.usage = generation.finish_reason, _usage([generation])

    async def aclose(self) -> None:
        self.interrupt.cancel()  # a no-op after the end


class _SlotStream(StreamingResponse):
    """A streamed answer holding a slot. However the response ends (finished, failed, its client gone, even before
    its first event), its events are closed, its generation stopped and its slot freed, at once."""

    def __init__(self, events: AsyncIterator[str], slot: Slot, streamed: Streamed):
        super().__init__(events, media_type="text/event-stream")
        self.slot, self.streamed = slot, streamed

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
                await self.streamed.aclose()
            finally:
                self.slot.release()


@dataclass
class _Stream:
    """How one endpoint shapes a stream: ``opening(job)`` gives the opening chunk (or None), ``chunk(piece, finish,
    usage)`` each further one."""

    opening: Callable[[Job], dict | None]
    chunk: Callable[[str, str | None, dict | None], dict]
    include_usage: bool


def create_app(model_path: str | Path | None = None, model_name: str | None = None, trust_remote_code: bool = False,
               pas: PromptAugmenter | None = None, options: ServeOptions = ServeOptions(),
               upstream: str | None = None) -> FastAPI:
    """The server for ``model_path``: a model directory, or a run directory (its chat models, by stage name); or,
    with ``upstream`` (and no ``model_path``), for the OpenAI-compatible server at that base URL."""
    if (model_path is None) == (upstream is None):
        raise ValueError("create_app: a model_path or an upstream URL, one of the two")
    if upstream is not None:
        from finloom.llm.upstream import UpstreamBackend

        backend: Backend = UpstreamBackend(upstream, model_name)
    else:
        pool = ModelPool(served_models(Path(model_path), model_name),
                         ModelLoading(trust_remote_code=trust_remote_code), options.max_loaded)
        pool.get(pool.default)  # now: a broken model fails at start, and the first answer is not slowed by loading
        backend = LocalBackend(pool)
    return create_backend_app(backend, pas, options)


def create_backend_app(backend: Backend, pas: PromptAugmenter | None = None,
                       options: ServeOptions = ServeOptions()) -> FastAPI:
    """The server: requests validated, admitted, timed, augmented by PAS, logged and shaped here; ``backend``
    generates."""
    admission = Admission(options.max_concurrency, options.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await backend.aclose()

    app = FastAPI(title="finloom serve", version="1", lifespan=lifespan)
    app.state.backend = backend
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

    @app.exception_handler(BackendError)
    async def backend_failed(request: Request, error: BackendError) -> JSONResponse:
        if error.status >= 500:
            request.state.log["error"] = error.message[:500]
        response = _error(error.status, error.message, error.code, error.kind)
        response.headers.update(error.headers)
        return response

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, __: QueueFull) -> JSONResponse:
        response = _error(429, f"the server is busy: {admission.in_flight} requests are generating and "
                               f"{admission.queued} waiting (--max-queue {admission.max_queue}); retry later",
                          "queue_full", "rate_limit_error")
        response.headers["retry-after"] = "1"
        return response

    @app.exception_handler(WaitedTooLong)
    @app.exception_handler(DeadlinePassed)
    async def waited_too_long(_: Request, __: Exception) -> JSONResponse:
        return _error(504, f"request_timeout: no answer within {options.request_timeout:g} s (queueing included)",
                      "request_timeout", "timeout_error")

    def note(request: Request, usage: dict, finish: str | None = None, **texts) -> None:
        """Token counts (and, with ``log_prompts``, the texts) for the request's log line."""
        record = request.state.log
        record["prompt_tokens"] = usage["prompt_tokens"]
        record["completion_tokens"] = usage["completion_tokens"]
        if finish:
            record["finish_reason"] = finish
        if options.log_prompts:
            record.update(texts)

    def prompt_texts(job: Job) -> dict:
        return {"messages": job.answered} if job.chat else {"prompt": job.body.prompt}

    async def admitted(request: Request, body: ChatRequest | CompletionRequest, reply: Callable[[Job, Answer], dict],
                       stream: _Stream):
        """Answer ``body`` holding a slot: the backend refuses what its model cannot run, then answers (or streams,
        the slot kept until the stream ends); all of it before the deadline."""
        name = await backend.resolve(body.model)
        request.state.log["model"] = name
        job = Job(name, body, time.monotonic() + options.request_timeout, pas)
        slot = await admission.enter(options.request_timeout)
        streamed = None
        try:
            if body.stream:
                streamed = await backend.stream(job)
            else:
                answer = await backend.answer(job)
        finally:
            if streamed is None:
                slot.release()
        if streamed is not None:
            return _SlotStream(events(request, job, streamed, stream), slot, streamed)
        request.state.log["pas"] = job.added is not None
        note(request, answer.usage, **prompt_texts(job), completion=[choice["text"] for choice in answer.choices])
        return reply(job, answer)

    async def events(request: Request, job: Job, streamed: Streamed, stream: _Stream) -> AsyncIterator[str]:
        """The opening chunk (chat: the role and ``pas``), a chunk per text piece, the finishing chunk with usage,
        [DONE]; an error ends the stream with an error event instead."""
        pieces = []
        try:
            await streamed.start()
            request.state.log["pas"] = job.added is not None
            if options.log_prompts:
                request.state.log.update(prompt_texts(job))
            opening = stream.opening(job)
            if opening is not None:
                yield _sse(opening)
            async with contextlib.aclosing(streamed.pieces()) as texts:
                async for piece in texts:
                    pieces.append(piece)
                    yield _sse(stream.chunk(piece, None, None))
            usage, finish = streamed.usage, streamed.finish_reason
            yield _sse(stream.chunk("", finish, None if stream.include_usage else usage))
            if stream.include_usage:
                yield _sse({**stream.chunk("", None, usage), "choices": []})
            note(request, usage, finish, completion="".join(pieces))
            yield _sse("[DONE]")
        except BackendError as error:  # the status went out with the first byte: the error is the stream's last event
            request.state.log["error"] = error.message[:500]
            yield _sse(error_body(error.message, error.kind, error.code))
        except Exception as error:
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
    async def health() -> JSONResponse:
        """200 while the server can answer; 503 (with the reason) while its upstream cannot."""
        ok, fields = await backend.health()
        return JSONResponse(status_code=200 if ok else 503, content={
            "status": "ok" if ok else "unavailable", "pas": pas is not None, "in_flight": admission.in_flight,
            "queued": admission.queued, **fields})

    @app.get("/v1/models")
    async def models() -> dict:
        names, default = await backend.models()
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "finloom",
                                            "pas": pas is not None, "default": name == default} for name in names]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        if body.stream and body.n > 1:
            raise Rejected(_error(400, "n: a streamed response has one choice; set n to 1"))
        request_id, created = f"chatcmpl-{request.state.log['id']}", int(time.time())

        def reply(job: Job, answer: Answer) -> dict:
            return {"id": request_id, "object": "chat.completion", "created": created, "model": job.model,
                    "choices": [{"index": index, "message": {"role": "assistant", "content": choice["text"]},
                                 "finish_reason": choice["finish_reason"]}
                                for index, choice in enumerate(answer.choices)],
                    "usage": answer.usage, "pas": job.added}

        def chunk(piece: str, finish: str | None, usage: dict | None) -> dict:
            payload = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                       "model": request.state.log["model"],
                       "choices": [{"index": 0, "delta": {"content": piece} if piece else {}, "finish_reason": finish}]}
            return {**payload, "usage": usage} if usage else payload

        def opening(job: Job) -> dict:
            first = chunk("", None, None)
            first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            return {**first, "pas": job.added}

        return await admitted(request, body, reply,
                              _Stream(opening, chunk, bool(body.stream_options and body.stream_options.include_usage)))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        scored = body.echo or body.logprobs is not None
        if body.stream and (scored or body.n > 1):
            raise Rejected(_error(400, "stream: echo, logprobs and n > 1 are not streamed; set stream to false"))
        if not scored and not isinstance(body.prompt, str):
            raise Rejected(_error(400, "prompt: token or batched prompts are served with logprobs / echo only"))
        request_id, created = f"cmpl-{request.state.log['id']}", int(time.time())

        def reply(job: Job, answer: Answer) -> dict:
            return {"id": request_id, "object": "text_completion", "created": created, "model": job.model,
                    "choices": [{"index": index, "text": choice["text"],
                                 **({"logprobs": choice["logprobs"]} if "logprobs" in choice else {}),
                                 "finish_reason": choice["finish_reason"]}
                                for index, choice in enumerate(answer.choices)],
                    "usage": answer.usage}

        def chunk(piece: str, finish: str | None, usage: dict | None) -> dict:
            payload = {"id": request_id, "object": "text_completion", "created": created,
                       "model": request.state.log["model"], "choices": [{"index": 0, "text": piece, "finish_reason": finish}]}
            return {**payload, "usage": usage} if usage else payload

        return await admitted(request, body, reply,
                              _Stream(lambda job: None, chunk,
                                      bool(body.stream_options and body.stream_options.include_usage)))

    return app


def _scored_completions(generator: LocalGenerator, body: CompletionRequest, interrupt: Interrupt) -> Answer:
    """Greedy tokens with their log-probs; with ``echo``, the prompt's tokens and log-probs first."""
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for prompt in body.prompts():
        ids = prompt if isinstance(prompt, list) else _encode(generator, prompt)
        scored = generator.prompt_logprobs(ids, body.logprobs or 1, body.max_tokens, interrupt)
        logprobs = scored["logprobs"]
        if not body.echo:
            logprobs = {key: values[len(ids):] for key, values in logprobs.items()}
        choices.append({"text": scored["all_text"] if body.echo else scored["text"], "logprobs": logprobs,
                        "finish_reason": "length"})
        prompt_tokens += scored["prompt_tokens"]
        completion_tokens += scored["completion_tokens"]
    return Answer(choices, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens})
