"""The one client every stage uses to reach a strong LLM (teacher, judge, critic).

Backends: any OpenAI-compatible HTTP endpoint (vLLM, TGI, ``finloom serve``, a hosted API), or a
local HF model directory run in-process. HTTP calls get a timeout, retries with exponential
backoff on transport errors, 429 and 5xx, and a concurrency limit; the API key is read from an
environment variable named in the recipe, never from the recipe itself.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from finloom.errors import BadInput
from finloom.recipe import ClientSection

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """The endpoint failed after every retry, or answered with something that is not a completion."""


class LLMRequestRejected(LLMError):
    """The endpoint refused this one request (400, 413, 422: e.g. a prompt longer than its context); others may pass."""


class EndpointUnusable(BadInput):
    """No request can succeed: the endpoint refuses connections, the key is refused, or the model or path is unknown."""


REJECTED_STATUS = {400, 413, 422}
UNUSABLE_STATUS = {401: "the API key was refused", 403: "the API key was refused",
                   404: "no such model or path on this endpoint"}


class LLMClient:
    def __init__(self, config: ClientSection, role: str = "teacher"):
        """``role`` is the recipe field the endpoint comes from, named in errors (``teacher``, ``eval.endpoints.X``)."""
        self.config = config
        self.role = role
        self.requests = 0
        """Completions asked for so far (retries of one request count once): what a resumed stage re-asks shows here."""
        self._count_lock = threading.Lock()
        self._local = None
        self._http = None
        if config.local_model:
            from finloom.llm.generation import LocalGenerator

            self._local = LocalGenerator(config.local_model)
        else:
            headers = {}
            if config.api_key_env:
                key = os.environ.get(config.api_key_env)
                if not key:
                    raise BadInput(f"{role}.api_key_env: environment variable {config.api_key_env} is not set")
                headers["Authorization"] = f"Bearer {key}"
            self._http = httpx.Client(
                base_url=config.base_url.rstrip("/"),
                headers=headers,
                timeout=config.timeout_s,
                limits=httpx.Limits(max_connections=config.concurrency),
            )

    def close(self) -> None:
        if self._http:
            self._http.close()

    def __enter__(self) -> "LLMClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chat(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0, **extra) -> str:
        """The assistant's reply to ``messages``."""
        self._count()
        if self._local:
            prompt = self._local.chat_prompt(messages)
            return self._local.generate(prompt, max_tokens=max_tokens, temperature=temperature, **extra).text
        body = {"model": self.config.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, **extra}
        response = self._post("/chat/completions", body)
        try:
            return response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise LLMError(f"unexpected chat response: {str(response)[:300]}") from error

    def complete(self, prompt: str, max_tokens: int = 256, temperature: float = 0.0, **extra) -> str:
        self._count()
        if self._local:
            return self._local.generate(prompt, max_tokens=max_tokens, temperature=temperature, **extra).text
        body = {"model": self.config.model, "prompt": prompt, "max_tokens": max_tokens,
                "temperature": temperature, **extra}
        response = self._post("/completions", body)
        try:
            return response["choices"][0]["text"]
        except (KeyError, IndexError, TypeError) as error:
            raise LLMError(f"unexpected completion response: {str(response)[:300]}") from error

    def _count(self) -> None:
        with self._count_lock:
            self.requests += 1

    def chat_many(self, conversations: list[list[dict]], keep_rejected: bool = False,
                  **params) -> list[str | LLMRequestRejected]:
        """Replies in input order, at most ``concurrency`` requests in flight. With ``keep_rejected``, a request
        the endpoint refuses (``LLMRequestRejected``) takes its reply's place instead of ending the batch."""
        def ask(messages: list[dict]) -> str | LLMRequestRejected:
            try:
                return self.chat(messages, **params)
            except LLMRequestRejected as error:
                if not keep_rejected:
                    raise
                return error

        workers = 1 if self._local else self.config.concurrency
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(ask, conversations))

    def _post(self, path: str, body: dict) -> dict:
        delay = 0.5
        last_error: Exception | None = None
        url = f"{self.config.base_url.rstrip('/')}{path}"
        for attempt in range(self.config.max_retries + 1):
            try:
                response = self._http.post(path, json=body)
                status = response.status_code
                if status in UNUSABLE_STATUS:
                    raise EndpointUnusable(f"{self.role}: {url}: HTTP {status}: {UNUSABLE_STATUS[status]} "
                                           f"(model {self.config.model!r}): {_message(response)}")
                if status in REJECTED_STATUS:
                    raise LLMRequestRejected(f"{url}: HTTP {status}: {_message(response)}")
                if status not in RETRY_STATUS:
                    if status >= 400:
                        raise LLMError(f"{url}: HTTP {status}: {_message(response)}")
                    return response.json()
                last_error = LLMError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
                retry_after = response.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(retry_after))
            except httpx.TransportError as error:
                last_error = error
            if attempt < self.config.max_retries:
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        if isinstance(last_error, httpx.ConnectError):
            raise EndpointUnusable(f"{self.role}: {url}: cannot connect after {self.config.max_retries + 1} attempts "
                                   f"({last_error}); is the server running?")
        raise LLMError(f"{url}: failed after {self.config.max_retries + 1} attempts: {last_error}")


def _message(response: httpx.Response) -> str:
    """The error message of an OpenAI-style error body, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
