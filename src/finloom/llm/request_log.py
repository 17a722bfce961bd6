"""One JSON line per request to ``finloom serve`` (stderr or a file), and the server's catch-all for errors.

The line is written when the response has ended, streams included, so it carries the token counts and the
real duration: ``id``, ``route``, ``status``, ``model``, ``prompt_tokens``, ``completion_tokens``, ``ms``,
``pas`` (whether PAS changed the prompt), ``finish_reason`` for a stream ("disconnected": its client left) and
``error`` where there is one; with ``--log-prompts`` also ``messages`` / ``prompt`` and ``completion`` (texts stay
out by default: they may be confidential). ``/health`` is not logged: probes would flood the log. Handlers add
their fields to ``request.state.log``. An unexpected error becomes a short OpenAI-shaped 500 and an ``error``
field in the line (its traceback on stderr), never an HTML page or a dropped connection.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def line_writer(log_file: Path | None) -> Callable[[str], None]:
    """Appends each line to ``log_file`` (opened per line: nothing to close, safe to rotate), else to stderr."""
    if log_file is None:
        return lambda line: print(line, file=sys.stderr, flush=True)

    def append(line: str) -> None:
        with open(log_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    return append


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code}}


class RequestLog:
    """ASGI middleware: the request's log record in ``scope["state"]["log"]``, one line when it ends."""

    def __init__(self, app: ASGIApp, write: Callable[[str], None], unlogged: frozenset[str] = frozenset()):
        self.app = app
        self.write = write
        self.unlogged = unlogged

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.unlogged:
            await self.app(scope, receive, send)
            return
        record = {"id": uuid.uuid4().hex, "route": scope["path"], "status": None, "model": None,
                  "prompt_tokens": None, "completion_tokens": None, "ms": None, "pas": False}
        scope.setdefault("state", {})["log"] = record
        started = time.monotonic()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            record["error"] = f"{type(error).__name__}: {error}"[:500]
            traceback.print_exc(file=sys.stderr)
            if record["status"] is None:
                await _send_json(sending, 500, error_body("internal error; the server log has the details",
                                                          "server_error"))
        finally:
            record["ms"] = round((time.monotonic() - started) * 1000, 1)
            self.write(json.dumps(record, ensure_ascii=False))


async def _send_json(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
