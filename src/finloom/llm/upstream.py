"""The upstream backend of ``finloom serve --upstream URL``: an OpenAI-compatible server generates.

Such a server is typically vLLM on a GPU (``vllm serve RUN/align/model --port 8001``, then ``--upstream
http://127.0.0.1:8001/v1``), or another ``finloom serve``. The app in ``finloom.llm.serve`` keeps what finloom
adds: requests are validated (a 400 naming the field) before anything is forwarded, admitted to slots and the
queue, timed, complemented by the PAS model (which runs in this process), logged and shaped as finloom shapes
them. This module only forwards, over HTTP (httpx):

- a request's validated fields (not the fields this server ignores, nor ``pas``); a stream asks the upstream for
  ``stream_options.include_usage`` and passes its text on piece by piece as it comes;
- ``usage`` as the upstream counted it (a stream cut by the timeout has none yet: it counts the pieces passed on as
  completion tokens and the prompt as 0);
- an upstream's 4xx as the same status with its message; an upstream that cannot be reached, answers 5xx or
  anything but OpenAI's shapes: 502 naming the upstream, or, once a stream has started, an error event;
- the upstream's models (its default: the one it marks ``default``, else its first), or one name given by
  ``--model-name`` for the upstream's default model.

The upstream need not be up when the server starts (vLLM takes minutes to load): ``/health`` says whether it
answers, and requests get 502 until it does. A request cut by its deadline closes its upstream connection, which
stops the upstream's generation (vLLM aborts a request whose client has gone).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
from starlette.concurrency import run_in_threadpool

from finloom.llm.serve import Answer, BackendError, DeadlinePassed, Job, Rejected, _error

HEALTH_TIMEOUT = 5.0
"""Seconds ``/health`` waits for the upstream's model list."""
CONNECT_TIMEOUT = 10.0
"""Seconds to connect to the upstream; longer: it is unreachable (502)."""


class UpstreamBackend:
    """Generation by the OpenAI-compatible server at ``base_url`` (".../v1")."""

    def __init__(self, base_url: str, model_name: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=32))
        self._default: str | None = None
        """The upstream's default model, once its model list has been read."""

    def describe(self) -> str:
        return f"upstream {self.base_url}" + (f" as {self.model_name}" if self.model_name else "")

    async def models(self) -> tuple[list[str], str]:
        if self.model_name:
            return [self.model_name], self.model_name
        return await self._upstream_models()

    async def health(self) -> tuple[bool, dict]:
        try:
            names, default = await self._upstream_models(HEALTH_TIMEOUT)
        except BackendError as error:
            return False, {"model": self.model_name,
                           "upstream": {"url": self.base_url, "reachable": False, "error": error.message}}
        return True, {"model": self.model_name or default,
                      "upstream": {"url": self.base_url, "reachable": True, "models": names}}

    async def resolve(self, requested: str | None) -> str:
        if self.model_name:
            if requested not in (None, "default", self.model_name):
                raise Rejected(_error(404, f"model: the model {requested!r} does not exist (this server has "
                                           f"{self.model_name!r})", "model_not_found"))
            return self.model_name
        if requested in (None, "default"):
            return self._default or (await self._upstream_models())[1]
        return requested  # the upstream says whether it has it (a 404 passed on)

    async def answer(self, job: Job) -> Answer:
        payload = await self._payload(job)
        left = _left(job)
        try:
            response = await asyncio.wait_for(self._client.post(self._url(job), json=payload), left)
        except asyncio.TimeoutError:
            raise DeadlinePassed from None
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if not response.is_success:
            raise self._failed(response)
        reply = self._json(response)
        try:
            choices = sorted(reply["choices"], key=lambda choice: choice.get("index", 0))
            return Answer([self._choice(job, choice) for choice in choices], self._usage(reply))
        except (KeyError, TypeError, AttributeError):
            raise self._malformed("its reply") from None

    async def stream(self, job: Job) -> _UpstreamStream:
        payload = {**await self._payload(job), "stream": True, "stream_options": {"include_usage": True}}
        request, left = self._client.build_request("POST", self._url(job), json=payload), _left(job)
        try:
            response = await asyncio.wait_for(self._client.send(request, stream=True), left)
        except asyncio.TimeoutError:
            raise DeadlinePassed from None
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if not response.is_success:
            try:
                await response.aread()
            except httpx.TransportError as error:
                raise self._unreachable(error) from None
            finally:
                await response.aclose()
            raise self._failed(response)
        return _UpstreamStream(self, job, response)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, job: Job) -> str:
        return f"{self.base_url}/{'chat/completions' if job.chat else 'completions'}"

    async def _payload(self, job: Job) -> dict:
        """What is forwarded: the request's validated fields, the upstream's model name; a chat's messages with
        PAS's complement (PAS generates here, in a thread; the upstream's context is its own to check)."""
        body = job.body
        model = (self._default or (await self._upstream_models())[1]) if job.model == self.model_name else job.model
        payload = {"model": model, "max_tokens": body.max_tokens, "temperature": body.temperature,
                   "top_p": body.top_p, "n": body.n}
        if body.seed is not None:
            payload["seed"] = body.seed
        if job.chat:
            payload["messages"] = await run_in_threadpool(job.messages)
            _left(job)
        else:
            payload["prompt"] = body.prompt
            if body.echo:
                payload["echo"] = True
            if body.logprobs is not None:
                payload["logprobs"] = body.logprobs
        return payload

    async def _upstream_models(self, timeout: float = CONNECT_TIMEOUT) -> tuple[list[str], str]:
        """The upstream's model names and its default (remembered for requests that name none)."""
        url = f"{self.base_url}/models"
        try:
            response = await self._client.get(url, timeout=timeout)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if not response.is_success:
            raise BackendError(502, f"upstream {url} answered HTTP {response.status_code}: {_message(response)}",
                               "upstream_error")
        try:
            listed = self._json(response)["data"]
            names = [str(model["id"]) for model in listed]
        except (KeyError, TypeError):
            raise self._malformed("its model list") from None
        if not names:
            raise BackendError(502, f"upstream {url} lists no models", "upstream_error")
        self._default = next((str(model["id"]) for model in listed if model.get("default") is True), names[0])
        return names, self._default

    def _choice(self, job: Job, choice: dict) -> dict:
        text = (choice["message"].get("content") if job.chat else choice["text"]) or ""
        shaped = {"text": text, "finish_reason": choice.get("finish_reason")}
        if not job.chat and choice.get("logprobs") is not None:
            shaped["logprobs"] = choice["logprobs"]
        return shaped

    def _usage(self, reply: dict) -> dict:
        try:
            prompt, completion = int(reply["usage"]["prompt_tokens"]), int(reply["usage"]["completion_tokens"])
        except (KeyError, TypeError, ValueError):
            raise self._malformed("its token usage") from None
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _json(self, response: httpx.Response) -> dict:
        try:
            reply = response.json()
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise self._malformed(f"its reply to {response.request.url.path}")
        return reply

    def _unreachable(self, error: Exception) -> BackendError:
        return BackendError(502, f"upstream {self.base_url} cannot be reached ({type(error).__name__}: {error}); "
                                 "is it running?", "upstream_unreachable")

    def _failed(self, response: httpx.Response) -> BackendError:
        """An upstream's 4xx as the same status with its message; anything else it answers: 502."""
        status = response.status_code
        if 400 <= status < 500:
            error = _error_object(response)
            headers = {"retry-after": response.headers["retry-after"]} if "retry-after" in response.headers else None
            return BackendError(status, _message(response), _code(error.get("code")),
                                str(error.get("type") or "invalid_request_error"), headers)
        return BackendError(502, f"upstream {self.base_url} answered HTTP {status}: {_message(response)}",
                            "upstream_error")

    def _malformed(self, what: str) -> BackendError:
        return BackendError(502, f"upstream {self.base_url}: {what} is not in OpenAI's shape", "upstream_error")


class _UpstreamStream:
    """The upstream's SSE events as text pieces; its finishing reason and usage once they have all come."""

    def __init__(self, backend: UpstreamBackend, job: Job, response: httpx.Response):
        self.backend, self.job, self.response = backend, job, response
        self.finish_reason: str | None = None
        self.usage: dict | None = None

    async def start(self) -> None:
        pass  # PAS ran before the request was forwarded

    async def pieces(self) -> AsyncIterator[str]:
        lines, passed_on = self.response.aiter_lines(), 0
        while True:
            left = self.job.deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                line = await asyncio.wait_for(anext(lines), left)
            except asyncio.TimeoutError:  # cut: what the upstream counted so far is not known
                await self.aclose()
                self.finish_reason = "timeout"
                self.usage = {"prompt_tokens": 0, "completion_tokens": passed_on, "total_tokens": passed_on}
                return
            except StopAsyncIteration:
                break
            except httpx.TransportError as error:
                raise BackendError(502, f"upstream {self.backend.base_url}: the stream broke off "
                                        f"({type(error).__name__}: {error})", "upstream_error") from None
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                raise self.backend._malformed("an event of its stream") from None
            if not isinstance(event, dict):
                raise self.backend._malformed("an event of its stream")
            if "error" in event:
                error = event["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise BackendError(502, f"upstream {self.backend.base_url}: {message}", "upstream_error")
            if event.get("usage"):
                self.usage = self.backend._usage(event)
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") if self.job.chat else choice.get("text")
                if piece:
                    passed_on += 1
                    yield piece
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        if self.finish_reason is None:
            raise BackendError(502, f"upstream {self.backend.base_url}: the stream ended before its answer did",
                               "upstream_error")
        if self.usage is None:
            raise self.backend._malformed("its stream's token usage (asked with stream_options.include_usage)")

    async def aclose(self) -> None:
        await self.response.aclose()  # the upstream sees its client leave and stops generating


def _left(job: Job) -> float:
    """Seconds left before the job's deadline; none left: ``DeadlinePassed``."""
    left = job.deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed
    return left


def _error_object(response: httpx.Response) -> dict:
    """The error of an OpenAI-shaped error body ({"error": {...}}, or vLLM's older flat {"message", "type", ...})."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if isinstance(body, dict):
        error = body.get("error", body)
        return error if isinstance(error, dict) else {"message": error}
    return {}


def _message(response: httpx.Response) -> str:
    message = _error_object(response).get("message")
    return str(message)[:1000] if message else (response.text[:300] or response.reason_phrase)


def _code(code) -> str | None:
    return None if code is None else str(code)
