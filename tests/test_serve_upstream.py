"""`finloom serve --upstream URL`: another OpenAI-compatible server generates (vLLM on a GPU; here a real
`finloom serve` of the tiny SFT model), the front keeps what finloom adds. Real servers over real HTTP, no mocks:
the upstream is a `finloom serve` process (or, where a test needs to hold it, the same app in this process), the
front a `finloom serve --upstream` process or its app in this process when a test hands it a PAS object.

Greedy answers make the front comparable with the upstream asked directly. No test depends on how fast the machine
is: a PAS that waits for the test to open a gate holds a slot for as long as the test needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from types import SimpleNamespace

import httpx
import pytest

from conftest import finloom_cli, free_port, serving
from finloom.llm.serve import ServeOptions, create_app
from finloom.pas.augment import Augmenter
from tests.test_serve_features import (AppendingPAS, BrokenPAS, GatedPAS, in_thread, running, sse_events,
                                       wait_for_health, wait_for_log)

ASK = [{"role": "user", "content": "What is a bond?"}]
GREEDY_CHAT = {"messages": ASK, "max_tokens": 6, "temperature": 0}


@contextlib.contextmanager
def front_process(*options: str):
    """A real `finloom serve` process started with ``options`` (--upstream ...) and no PATH; yields its root URL and
    a function giving what it printed so far. Ready once /health answers, whatever it says."""
    port = free_port()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([sys.executable, "-m", "finloom", "serve", "--port", str(port), *options],
                                   stdout=stdout, stderr=stderr)

        def output() -> str:
            text = ""
            for handle in (stdout, stderr):
                handle.seek(0)
                text += handle.read().decode()
            return text

        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(f"{url}/health", timeout=30)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.time() > deadline:
                    process.kill()
                    process.wait(timeout=10)
                    raise RuntimeError(f"finloom serve did not start: {output()[-2000:]}") from None
                time.sleep(0.3)
        try:
            yield SimpleNamespace(url=url, output=output)
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def upstream(tiny_run, tmp_path_factory):
    """`finloom serve` of the tiny SFT model, logging each request it gets to a file; (its /v1 URL, the log)."""
    log = tmp_path_factory.mktemp("upstream") / "requests.jsonl"
    with serving(tiny_run / "sft" / "model", "--log-file", str(log)) as base_url:
        yield base_url, log


@pytest.fixture(scope="module")
def front(upstream, tmp_path_factory):
    """`finloom serve --upstream` in front of ``upstream``; (its root URL, its request log)."""
    log = tmp_path_factory.mktemp("front") / "requests.jsonl"
    with front_process("--upstream", upstream[0], "--log-file", str(log)) as server:
        yield server.url, log


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/{path}", json=body, timeout=120)


def streamed(url: str, path: str, body: dict) -> list:
    with httpx.stream("POST", f"{url}/{path}", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response)


def test_chat_and_completions_come_back_as_the_upstream_answers_them(upstream, front):
    upstream_url, (url, log) = upstream[0], front
    direct, through = post(upstream_url, "chat/completions", GREEDY_CHAT).json(), \
        post(f"{url}/v1", "chat/completions", GREEDY_CHAT).json()
    assert direct["usage"]["completion_tokens"] >= 1
    assert through["choices"] == direct["choices"] and through["usage"] == direct["usage"]
    assert through["object"] == "chat.completion" and through["model"] == "shared/sft" and through["pas"] is None
    assert through["id"].startswith("chatcmpl-") and through["id"] != direct["id"]  # the front's own id, as logged

    for body in ({"prompt": "The bank", "max_tokens": 5, "temperature": 0},
                 {"prompt": "The bank pays", "max_tokens": 2, "echo": True, "logprobs": 2},  # as harnesses score
                 {"prompt": [[5, 6, 7], [8, 9]], "max_tokens": 1, "logprobs": 1}):
        direct, through = post(upstream_url, "completions", body).json(), post(f"{url}/v1", "completions", body).json()
        assert through["object"] == "text_completion" and through["model"] == "shared/sft"
        assert through["choices"] == direct["choices"] and through["usage"] == direct["usage"]

    lines = wait_for_log(log, 4)
    assert [(line["route"], line["status"], line["model"]) for line in lines] == [
        ("/v1/chat/completions", 200, "shared/sft")] + [("/v1/completions", 200, "shared/sft")] * 3
    assert lines[-1]["prompt_tokens"] == through["usage"]["prompt_tokens"]
    assert lines[-1]["completion_tokens"] == through["usage"]["completion_tokens"]


def test_streams_pass_the_upstreams_pieces_on_and_end_with_usage(upstream, front):
    upstream_url, url = upstream[0], front[0]
    whole = post(upstream_url, "chat/completions", GREEDY_CHAT).json()
    direct, events = streamed(upstream_url, "chat/completions", GREEDY_CHAT), streamed(f"{url}/v1", "chat/completions",
                                                                                      GREEDY_CHAT)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and chunks[0]["pas"] is None

    def pieces(chunks: list) -> list[str]:
        return [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]

    assert len(pieces(chunks)) > 1 and pieces(chunks) == pieces(direct[:-1])  # piece by piece, as they came
    assert "".join(pieces(chunks)) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == whole["usage"]  # on the finishing chunk, and on no other
    assert all("usage" not in chunk for chunk in chunks[:-1])

    body = {"prompt": "The bank", "max_tokens": 4, "temperature": 0}
    whole = post(upstream_url, "completions", body).json()
    events = streamed(f"{url}/v1", "completions", {**body, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == whole["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]  # as OpenAI sends it


def test_models_health_and_the_chat_page_are_the_fronts(upstream, front):
    upstream_url, url = upstream[0], front[0]
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert [(m["id"], m["default"], m["pas"], m["owned_by"]) for m in models] == [("shared/sft", True, False, "finloom")]
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json() == {
        "status": "ok", "model": "shared/sft", "pas": False, "in_flight": 0, "queued": 0,
        "upstream": {"url": upstream_url, "reachable": True, "models": ["shared/sft"]}}
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "/v1/chat/completions" in page.text

    with running(create_app(upstream=upstream_url, model_name="analyst")) as named:
        assert [m["id"] for m in httpx.get(f"{named}/v1/models").json()["data"]] == ["analyst"]
        reply = post(f"{named}/v1", "chat/completions", {**GREEDY_CHAT, "model": "analyst"}).json()
        assert reply["model"] == "analyst"
        assert reply["choices"] == post(upstream_url, "chat/completions", GREEDY_CHAT).json()["choices"]
        assert httpx.get(f"{named}/health").json()["model"] == "analyst"
        other = post(f"{named}/v1", "chat/completions", {**GREEDY_CHAT, "model": "shared/sft"})
        assert other.status_code == 404 and "this server has 'analyst'" in other.json()["error"]["message"]


def test_a_bad_request_is_a_400_naming_the_field_and_never_reaches_the_upstream(upstream, front):
    (upstream_url, upstream_log), url = upstream, front[0]

    def mark() -> int:
        """A request of its own to the upstream, once the upstream has logged it: the log's length."""
        route = f"/v1/mark-{uuid.uuid4().hex}"
        assert httpx.get(upstream_url.removesuffix("/v1") + route).status_code == 404
        deadline = time.monotonic() + 60
        while True:
            lines = [json.loads(line) for line in upstream_log.read_text().splitlines()]
            if lines and lines[-1]["route"] == route or time.monotonic() > deadline:
                assert lines[-1]["route"] == route
                return len(lines)
            time.sleep(0.02)

    before = mark()
    for path, body, field in [
        ("chat/completions", {"messages": []}, "messages: List should have at least 1 item"),
        ("chat/completions", {"messages": ASK, "temperature": 5}, "temperature: "),
        ("chat/completions", {"messages": [{"role": "assistant", "content": "Hi."}]},
         "messages: the last message must be the user's"),
        ("chat/completions", {"messages": ASK, "stream": True, "n": 2}, "n: a streamed response has one choice"),
        ("completions", {"prompt": "The bank", "max_tokens": 0}, "max_tokens: "),
        ("completions", {"prompt": [1, 2]}, "prompt: token or batched prompts are served with logprobs / echo only"),
    ]:
        reply = post(f"{url}/v1", path, body)
        assert reply.status_code == 400 and reply.json()["error"]["message"].startswith(field), (body, reply.text)
    broken = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", timeout=60,
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["message"].startswith("body: invalid JSON")
    assert mark() == before + 1  # only the second mark reached it


def test_an_upstreams_4xx_is_passed_on_with_its_message(upstream, front):
    upstream_url, url = upstream[0], front[0]
    for path, body in [("chat/completions", {**GREEDY_CHAT, "model": "nope"}),
                       ("chat/completions", {**GREEDY_CHAT, "model": "nope", "stream": True}),
                       ("completions", {"prompt": [99999], "max_tokens": 1, "logprobs": 1})]:
        direct, through = post(upstream_url, path, body), post(f"{url}/v1", path, body)
        assert direct.status_code in (400, 404)
        assert through.status_code == direct.status_code
        assert through.json()["error"]["message"] == direct.json()["error"]["message"]


def test_a_down_upstream_is_a_502_never_a_500_and_health_says_so(tmp_path):
    down, log = f"http://127.0.0.1:{free_port()}/v1", tmp_path / "requests.jsonl"
    with front_process("--upstream", down, "--log-file", str(log)) as server:
        url = server.url
        health = httpx.get(f"{url}/health", timeout=60)
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["upstream"]["reachable"] is False
        assert f"upstream {down} cannot be reached" in health.json()["upstream"]["error"]
        replies = [post(f"{url}/v1", "chat/completions", GREEDY_CHAT),
                   post(f"{url}/v1", "chat/completions", {**GREEDY_CHAT, "model": "named", "stream": True}),
                   post(f"{url}/v1", "completions", {"prompt": "The bank", "model": "named"}),
                   httpx.get(f"{url}/v1/models", timeout=60)]
        for reply in replies:
            assert reply.status_code == 502, reply.text
            assert reply.json()["error"]["code"] == "upstream_unreachable"
            assert reply.json()["error"]["message"].startswith(f"upstream {down} cannot be reached (ConnectError")
        lines = wait_for_log(log, 4)
        printed = server.output()
    assert [line["status"] for line in lines] == [502] * 4 and all("cannot be reached" in line["error"] for line in lines)
    assert f"listening on {url} (upstream {down}; chat page at /)" in printed
    assert f"the upstream {down} does not answer yet" in printed


def test_an_upstreams_5xx_is_a_502_and_a_broken_stream_ends_with_an_error_event(tiny_run):
    with running(create_app(tiny_run / "sft" / "model", pas=BrokenPAS())) as broken:  # its chat answers 500
        with running(create_app(upstream=f"{broken}/v1")) as url:
            reply = post(f"{url}/v1", "chat/completions", GREEDY_CHAT)
            events = streamed(f"{url}/v1", "chat/completions", GREEDY_CHAT)  # its 200 went out before the error
            assert post(f"{url}/v1", "completions", {"prompt": "The bank", "max_tokens": 2}).status_code == 200
    assert reply.status_code == 502 and reply.json()["error"] == {
        "message": f"upstream {broken}/v1 answered HTTP 500: internal error; the server log has the details",
        "type": "upstream_error", "code": "upstream_error"}
    assert events[-1] == {"error": {"message": f"upstream {broken}/v1: internal error while generating; the server "
                                               "log has the details", "type": "upstream_error", "code": "upstream_error"}}


def test_pas_runs_in_the_front_and_the_upstream_answers_the_augmented_prompt(upstream):
    upstream_url = upstream[0]
    augmented = [{"role": "user", "content": "What is a bond? Answer in one sentence."}]
    by_hand = post(upstream_url, "chat/completions", {**GREEDY_CHAT, "messages": augmented}).json()
    plain = post(upstream_url, "chat/completions", GREEDY_CHAT).json()
    with running(create_app(upstream=upstream_url, pas=AppendingPAS())) as url:
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["pas"] is True
        with_pas = post(f"{url}/v1", "chat/completions", GREEDY_CHAT).json()
        without = post(f"{url}/v1", "chat/completions", {**GREEDY_CHAT, "pas": False}).json()
        events = streamed(f"{url}/v1", "chat/completions", GREEDY_CHAT)
    assert with_pas["pas"] == {"complement": "Answer in one sentence.", "category": "definition"}
    assert with_pas["choices"] == by_hand["choices"] and with_pas["usage"] == by_hand["usage"]
    assert without["pas"] is None and without["choices"] == plain["choices"] and without["usage"] == plain["usage"]
    assert events[0]["pas"] == with_pas["pas"]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == \
        by_hand["choices"][0]["message"]["content"]


def test_serve_upstream_loads_its_pas_model_here(upstream, tiny_run, tmp_path):
    """--pas with --upstream: the PAS model loads in the front. The stand-in (the SFT model with a pas.json; the
    pas stage's model would cost a stage run) writes only blanks, so it declines: the upstream answers the prompt
    as it came. The previous test shows a complement reaching the upstream."""
    pas_dir = tmp_path / "pas_model"
    shutil.copytree(tiny_run / "sft" / "model", pas_dir)
    (pas_dir / "pas.json").write_text(json.dumps({"categories": ["uncategorised"], "serve_categories": None}))
    assert Augmenter(pas_dir).augment(ASK[0]["content"]) is None
    with front_process("--upstream", upstream[0], "--pas", str(pas_dir)) as server:
        assert httpx.get(f"{server.url}/health", timeout=60).json()["pas"] is True
        assert httpx.get(f"{server.url}/v1/models", timeout=60).json()["data"][0]["pas"] is True
        reply = post(f"{server.url}/v1", "chat/completions", GREEDY_CHAT).json()
        printed = server.output()
    assert f"listening on {server.url} (upstream {upstream[0]}; chat page at /; PAS {pas_dir})" in printed
    direct = post(upstream[0], "chat/completions", GREEDY_CHAT).json()
    assert reply["pas"] is None and reply["choices"] == direct["choices"] and reply["usage"] == direct["usage"]


def test_a_full_queue_is_429_while_the_front_holds_its_slots(upstream):
    pas = GatedPAS()
    app = create_app(upstream=upstream[0], pas=pas, options=ServeOptions(max_concurrency=1, max_queue=1))
    with running(app) as url:
        try:
            holder, held = in_thread(lambda: post(f"{url}/v1", "chat/completions", GREEDY_CHAT))
            wait_for_health(url, in_flight=1, queued=0)  # holding its slot while its PAS waits
            waiting, waited = in_thread(lambda: post(f"{url}/v1", "chat/completions", GREEDY_CHAT))
            wait_for_health(url, in_flight=1, queued=1)
            refused = post(f"{url}/v1", "chat/completions", GREEDY_CHAT)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "queue_full"
            assert "--max-queue 1" in refused.json()["error"]["message"]
        finally:
            pas.gate.set()
        holder.join(timeout=120)
        waiting.join(timeout=120)
        wait_for_health(url, in_flight=0, queued=0)
    for reply in (held[0], waited[0]):
        assert reply.status_code == 200 and reply.json()["pas"] == {"complement": "Be brief.", "category": "test"}
        assert reply.json()["usage"]["completion_tokens"] >= 1


def test_past_its_timeout_a_request_is_504(upstream):
    pas = GatedPAS()
    app = create_app(upstream=upstream[0], pas=pas,
                     options=ServeOptions(max_concurrency=1, max_queue=1, request_timeout=1))
    with running(app) as url:
        try:
            holder, held = in_thread(lambda: post(f"{url}/v1", "chat/completions", GREEDY_CHAT))
            wait_for_health(url, in_flight=1)
            queued = post(f"{url}/v1", "chat/completions", GREEDY_CHAT)  # no slot comes before its deadline
            assert queued.status_code == 504 and queued.json()["error"]["code"] == "request_timeout"
            pas.gate.set()  # the held request arrived first: its deadline has passed too, so it is not forwarded
            holder.join(timeout=120)
        finally:
            pas.gate.set()
        wait_for_health(url, in_flight=0, queued=0)
    assert held[0].status_code == 504 and "no answer within 1 s" in held[0].json()["error"]["message"]


def test_a_stream_the_upstream_has_not_answered_by_the_deadline_ends_in_timeout(tiny_run):
    pas = GatedPAS()  # the upstream's: its stream has started (status 200) and waits on its PAS
    with running(create_app(tiny_run / "sft" / "model", pas=pas)) as held_upstream:
        try:
            with running(create_app(upstream=f"{held_upstream}/v1", options=ServeOptions(request_timeout=1))) as url:
                events = streamed(f"{url}/v1", "chat/completions", {**GREEDY_CHAT, "max_tokens": 200})
                wait_for_health(url, in_flight=0)
        finally:
            pas.gate.set()
        wait_for_health(held_upstream, in_flight=0, queued=0)  # the front left: the upstream stopped
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "timeout"
    assert events[-2]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_serve_takes_a_path_or_an_upstream(tmp_path):
    both = finloom_cli("serve", str(tmp_path), "--upstream", "http://127.0.0.1:9/v1")
    assert both.returncode == 2 and "serve: give PATH or --upstream, not both" in both.stderr
    neither = finloom_cli("serve")
    assert neither.returncode == 2 and "serve: give PATH (a model or run directory), or --upstream URL" in neither.stderr
    bad = finloom_cli("serve", "--upstream", "localhost:8001")
    assert bad.returncode == 2 and "--upstream: 'localhost:8001' is not an http(s) base URL" in bad.stderr
    assert "Traceback" not in both.stderr + neither.stderr + bad.stderr
    help_text = subprocess.run([sys.executable, "-m", "finloom", "serve", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}).stdout
    assert "--upstream" in help_text and "vllm serve" in help_text and "no PATH" in help_text
