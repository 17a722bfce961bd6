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


def _events(response: httpx.Response) -> list:
    """The JSON events of an SSE response; the stream must end with [DONE]."""
    payloads = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [json.loads(payload) for payload in payloads[:-1]]


def test_streaming_matches_non_streaming_usage_included(served_sft):
    body = {"messages": [{"role": "user", "content": "Explain margin."}], "max_tokens": 6, "temperature": 0}
    whole = httpx.post(f"{served_sft}/chat/completions", json=body, timeout=60).json()
    with httpx.stream("POST", f"{served_sft}/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = _events(response)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == whole["usage"]  # on the finishing chunk, and on no other
    assert all("usage" not in chunk for chunk in chunks[:-1])


def test_streamed_completion_with_include_usage_ends_with_a_usage_chunk(served_sft):
    body = {"prompt": "The bank", "max_tokens": 4}
    whole = httpx.post(f"{served_sft}/completions", json=body, timeout=60).json()
    with httpx.stream("POST", f"{served_sft}/completions", timeout=60,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        chunks = _events(response)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == whole["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]  # as OpenAI sends it
    assert all("usage" not in chunk for chunk in chunks[:-1])


def test_health_says_what_is_served(served_sft):
    health = httpx.get(served_sft.removesuffix("/v1") + "/health", timeout=10).json()
    assert health == {"status": "ok", "model": "shared/sft", "pas": False, "in_flight": 0, "queued": 0,
                      "loaded": ["shared/sft"]}


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("method", "path", "content", "status", "message"), [
    ("POST", "chat/completions", b'{"messages": [', 400, "body: invalid JSON"),
    ("POST", "chat/completions", b'{"messages": "\xff"}', 400,
     "body: There was an error parsing the body"),  # not UTF-8
    ("POST", "chat/completions", b"", 400, "body: Field required"),
    ("POST", "chat/completions", b"[1, 2]", 400, "body: Input should be a valid dictionary"),
    ("POST", "chat/completions", {}, 400, "messages: Field required"),
    ("POST", "chat/completions", {"messages": "hi"}, 400, "messages: Input should be a valid list"),
    ("POST", "chat/completions", {"messages": [None]}, 400, "messages.0: Input should be a valid dictionary"),
    ("POST", "chat/completions", {"messages": [{"role": "bot", "content": "hi"}]}, 400,
     "messages.0.role: Input should be 'system', 'user' or 'assistant'"),
    ("POST", "chat/completions", {"messages": [{"role": "user"}]}, 400, "messages.0.content: Field required"),
    ("POST", "chat/completions", {"messages": [{"role": "user", "content": None}]}, 400,
     "messages.0.content: Input should be a valid string"),
    ("POST", "chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}, 400,
     "messages.0.content: not valid Unicode text (a lone surrogate at character 0)"),
    ("POST", "chat/completions", {"messages": [*USER, {"role": "assistant", "content": "hello"}]}, 400,
     "messages: the last message must be the user's (it is the assistant's)"),
    ("POST", "chat/completions", {"messages": USER, "max_tokens": "many"}, 400, "max_tokens: Input should be a valid integer"),
    ("POST", "chat/completions", {"messages": USER, "max_tokens": 0}, 400, "max_tokens: Input should be greater than"),
    ("POST", "chat/completions", {"messages": USER, "temperature": float("nan")}, 400,
     "temperature: Input should be a finite number"),
    ("POST", "chat/completions", {"messages": USER, "model": 5}, 400, "model: Input should be a valid string"),
    ("POST", "chat/completions", {"messages": USER, "pas": "maybe"}, 400, "pas: Input should be a valid boolean"),
    ("POST", "chat/completions", {"messages": USER, "stream_options": 1}, 400, "stream_options: Input should be"),
    ("POST", "completions", {"prompt": 5}, 400, "prompt: expected text, a list of token ids, or a list of either"),
    ("POST", "completions", {"prompt": ["fine", "\udfff"], "echo": True}, 400, "prompt: not valid Unicode text"),
    ("POST", "completions", {"prompt": "hi", "echo": True, "stream": True}, 400, "stream: echo, logprobs and n > 1"),
    ("POST", "completions", {"prompt": [[1, 2], [3]]}, 400, "prompt: token or batched prompts are served with"),
    ("GET", "chat/completions", None, 405, "GET /v1/chat/completions: Method Not Allowed"),
    ("POST", "embeddings", {"input": "hi"}, 404, "POST /v1/embeddings: Not Found"),
])
def test_bad_requests_are_4xx_naming_the_field_never_500(served_sft, method, path, content, status, message):
    if isinstance(content, dict):
        content = json.dumps(content).encode()  # NaN as JSON's NaN, lone surrogates escaped as JSON has them
    reply = httpx.request(method, f"{served_sft}/{path}", content=content, timeout=60,
                          headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"].startswith(message), error["message"]
    assert error["type"] == "invalid_request_error"


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
        completed = client.complete("The bank", max_tokens=3)
    # the client's text is the server's own greedy completion of that prompt and length, three tokens long
    body = {"prompt": "The bank", "max_tokens": 3, "temperature": 0}
    served = httpx.post(f"{served_sft}/completions", json=body, timeout=60).json()
    assert served["usage"]["completion_tokens"] == 3 and completed == served["choices"][0]["text"]


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


@pytest.mark.parametrize(("path", "body", "field"), [
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**70}, "seed"),
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**70, "stream": True}, "seed"),
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 50}, "n"),
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": True}, "n"),
    ("completions", {"prompt": [5, 999999], "echo": True, "max_tokens": 1}, "prompt: token id 999999 is outside"),
    ("completions", {"prompt": [-3, 5], "logprobs": 1, "max_tokens": 1}, "prompt: token id -3 is outside"),
    ("completions", {"prompt": [], "logprobs": 1, "max_tokens": 1}, "prompt: empty"),
    ("completions", {"prompt": "", "max_tokens": 1}, "prompt: empty"),
    ("completions", {"prompt": "bank " * 40_000, "max_tokens": 1}, "longer than the model's context"),
])
def test_requests_the_model_cannot_run_get_400_naming_the_field(served_sft, path, body, field):
    reply = httpx.post(f"{served_sft}/{path}", json=body, timeout=120)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"]["message"]


def test_unknown_model_is_404_and_several_choices_are_served(served_sft):
    unknown = httpx.post(f"{served_sft}/chat/completions", timeout=60,
                         json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    two = httpx.post(f"{served_sft}/chat/completions", timeout=60, json={
        "model": "shared/sft", "messages": [{"role": "user", "content": "hi"}], "n": 2, "max_tokens": 3}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert 2 <= two["usage"]["completion_tokens"] <= 6  # both choices counted, each at most max_tokens


def test_serve_refuses_bad_arguments_in_one_line(tiny_run, tmp_path):
    import socket

    from conftest import finloom_cli

    missing = finloom_cli("serve", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "serve: no model directory at" in missing.stderr
    bad_port = finloom_cli("serve", str(tiny_run / "sft" / "model"), "--port", "99999")
    assert bad_port.returncode == 2 and "--port" in bad_port.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = finloom_cli("serve", str(tiny_run / "sft" / "model"), "--port", str(port))
    assert in_use.returncode == 2 and f"--port {port}: cannot listen on 127.0.0.1:{port}" in in_use.stderr
    for result in (missing, bad_port, in_use):
        assert "Traceback" not in result.stderr


def test_client_names_the_url_when_no_request_can_succeed(served_sft):
    from conftest import free_port
    from finloom.llm.client import EndpointUnusable

    refused = f"http://127.0.0.1:{free_port()}/v1"
    with LLMClient(ClientSection(base_url=refused, max_retries=1)) as client:
        with pytest.raises(EndpointUnusable, match=f"teacher: {refused}/chat/completions: cannot connect"):
            client.chat([{"role": "user", "content": "hi"}])
    with LLMClient(ClientSection(base_url=served_sft, model="gpt-9")) as client:
        with pytest.raises(EndpointUnusable, match="HTTP 404: no such model or path"):
            client.chat([{"role": "user", "content": "hi"}])


def test_a_prompt_the_judge_refuses_is_a_counted_failure_not_a_crash(served_sft):
    from finloom.llm.judge import ask_judge

    with LLMClient(ClientSection(base_url=served_sft)) as client:
        verdicts = ask_judge(client, ["Rate this: fine.", "bank " * 40_000], lambda i, reply: reply or None,
                             retries=2, max_tokens=3)
    assert verdicts[1].failed and len(verdicts[1].replies) == 1  # refused once, not asked again
    assert "longer than the model's context" in verdicts[1].replies[0]
    assert len(verdicts[0].replies) >= 1


class _RefusingHandler(BaseHTTPRequestHandler):
    """An endpoint that refuses the key, as a hosted API does: 401 with an OpenAI-style error body."""

    def do_POST(self):  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_refused_key_is_one_clear_error_naming_the_url_and_status():
    from finloom.llm.client import EndpointUnusable

    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        with LLMClient(ClientSection(base_url=url, max_retries=3), role="eval.endpoints.hosted") as client:
            with pytest.raises(EndpointUnusable) as error:
                client.chat([{"role": "user", "content": "hi"}])
    finally:
        server.shutdown()
    assert str(error.value) == (f"eval.endpoints.hosted: {url}/chat/completions: HTTP 401: the API key was refused "
                                "(model 'default'): Incorrect API key provided")
