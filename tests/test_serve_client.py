"""`finloom serve` answers real HTTP requests; the LLM client talks to it (no mocks), with retries."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from finloom.llm.client import LLMClient, LLMError
from finloom.recipe import ClientSection


def test_models_and_chat_completion(served_sft):
    models = httpx.get(f"{served_sft}/models").json()
    assert models["data"][0]["id"] == "shared/sft"
    body = {"messages": [{"role": "user", "content": "What is a bond?"}], "max_tokens": 6}
    reply = httpx.post(f"{served_sft}/chat/completions", json=body, timeout=60).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert 1 <= reply["usage"]["completion_tokens"] <= 6
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]


def test_streaming_matches_non_streaming(served_sft):
    body = {"messages": [{"role": "user", "content": "Explain margin."}], "max_tokens": 6, "temperature": 0}
    whole = httpx.post(f"{served_sft}/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]["content"]
    pieces, done = [], False
    with httpx.stream("POST", f"{served_sft}/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[len("data: "):]
            if payload == "[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            assert chunk["object"] == "chat.completion.chunk"
            pieces.append(chunk["choices"][0]["delta"].get("content", ""))
    assert done
    assert "".join(pieces) == whole


def test_completions_and_bad_request(served_sft):
    reply = httpx.post(f"{served_sft}/completions", json={"prompt": "The bank", "max_tokens": 4}, timeout=60).json()
    assert reply["object"] == "text_completion" and reply["usage"]["completion_tokens"] <= 4
    bad = httpx.post(f"{served_sft}/chat/completions", json={"messages": []}, timeout=60)
    assert bad.status_code == 400
    assert "messages" in bad.json()["error"]["message"]


def test_client_against_real_server(served_sft):
    with LLMClient(ClientSection(base_url=served_sft, concurrency=2)) as client:
        direct = client.chat([{"role": "user", "content": "What is a bond?"}], max_tokens=5)
        many = client.chat_many([[{"role": "user", "content": "What is a bond?"}]] * 3, max_tokens=5)
        assert many == [direct] * 3
        assert isinstance(client.complete("The bank", max_tokens=3), str)


def test_local_backend_gives_same_greedy_answer(served_sft, tiny_run):
    messages = [{"role": "user", "content": "What is a bond?"}]
    with LLMClient(ClientSection(base_url=served_sft)) as remote:
        expected = remote.chat(messages, max_tokens=5)
    local = LLMClient(ClientSection(local_model=str(tiny_run / "sft" / "model")))
    assert local.chat(messages, max_tokens=5) == expected


class _FlakyHandler(BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then a valid chat completion."""

    failures = 2
    seen = 0

    def do_POST(self):  # noqa: N802 (http.server API)
        type(self).seen += 1
        self.rfile.read(int(self.headers["content-length"]))
        if type(self).seen <= type(self).failures:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    _FlakyHandler.seen = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_client_retries_then_succeeds(flaky_server):
    with LLMClient(ClientSection(base_url=flaky_server, max_retries=3)) as client:
        assert client.chat([{"role": "user", "content": "hi"}]) == "ok"
    assert _FlakyHandler.seen == 3


def test_client_gives_up_after_max_retries(flaky_server):
    with LLMClient(ClientSection(base_url=flaky_server, max_retries=1)) as client:
        with pytest.raises(LLMError, match="failed after 2 attempts"):
            client.chat([{"role": "user", "content": "hi"}])


def test_api_key_comes_from_environment(monkeypatch, flaky_server):
    from finloom.errors import BadInput

    monkeypatch.delenv("FINLOOM_TEST_KEY", raising=False)
    with pytest.raises(BadInput, match="FINLOOM_TEST_KEY is not set"):
        LLMClient(ClientSection(base_url=flaky_server, api_key_env="FINLOOM_TEST_KEY"))
