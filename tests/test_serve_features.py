"""What users of a shared `finloom serve` endpoint rely on: slots and a bounded queue (429), request timeouts
(504, or a stream ending with finish_reason "timeout"), /health, JSON request logs, the PAS hook, a run's models
by stage, the catch-all for errors. Real servers over real HTTP: `finloom serve` processes, or the same app in
this process when a test hands it a PAS object.

No test depends on how fast the machine is: a PAS that waits for the test to open a gate holds a slot for as long
as the test needs, and the test waits for states (/health counts, a 504) rather than for time to pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from conftest import finloom_cli, free_port, serving
from finloom.llm.serve import ServeOptions, create_app

ASK = [{"role": "user", "content": "What is a bond?"}]


class GatedPAS:
    """A PAS model that answers only once the test opens its gate: while it waits, its request holds a slot."""

    def __init__(self):
        self.gate = threading.Event()

    def augment(self, prompt: str) -> dict:
        assert self.gate.wait(timeout=120), "the test never opened the gate"
        return {"complement": "Be brief.", "category": "test", "prompt": f"{prompt} Be brief."}


class AppendingPAS:
    """A PAS model that complements questions (prompts ending in "?") with one fixed sentence, and nothing else."""

    def __init__(self, complement: str = "Answer in one sentence."):
        self.complement = complement

    def augment(self, prompt: str) -> dict | None:
        if not prompt.endswith("?"):
            return None
        return {"complement": self.complement, "category": "definition", "prompt": f"{prompt} {self.complement}"}


class BrokenPAS:
    """A PAS model with a bug: an unexpected error inside a request."""

    def augment(self, prompt: str) -> dict:
        raise RuntimeError("the PAS model crashed")


@contextlib.contextmanager
def running(app):
    """A real HTTP server on loopback for an app built in this process; yields its root URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for_health(url: str, **expected) -> dict:
    """/health once it shows ``expected`` (in_flight=1, queued=0...); a state, so no guess at how long it takes."""
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if all(health[key] == value for key, value in expected.items()) or time.monotonic() > deadline:
            assert {key: health[key] for key in expected} == expected
            return health
        time.sleep(0.02)


def sse_events(response: httpx.Response) -> list:
    """The JSON events of an SSE response, then "[DONE]" if it came."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def in_thread(call) -> tuple[threading.Thread, list]:
    """Run ``call`` in a thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def test_a_stream_holds_its_slot_and_a_full_queue_is_429(tiny_run):
    pas = GatedPAS()
    app = create_app(tiny_run / "sft" / "model", pas=pas, options=ServeOptions(max_concurrency=1, max_queue=1))
    with running(app) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "shared/sft", "pas": True,
                                                     "in_flight": 0, "queued": 0, "loaded": ["shared/sft"]}
        body = {"messages": ASK, "max_tokens": 4, "stream": True}
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as stream:
                assert stream.status_code == 200  # the stream has started and waits on its PAS
                wait_for_health(url, in_flight=1, queued=0)
                waiting, waiting_reply = in_thread(lambda: httpx.post(
                    f"{url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 2}, timeout=120))
                wait_for_health(url, in_flight=1, queued=1)
                refused = httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK}, timeout=120)
                assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["code"] == "queue_full"
                assert "--max-queue 1" in refused.json()["error"]["message"]
                pas.gate.set()
                events = sse_events(stream)
        finally:
            pas.gate.set()
        waiting.join(timeout=120)
        assert waiting_reply[0].status_code == 200
        wait_for_health(url, in_flight=0, queued=0)
    assert events[0]["pas"] == {"complement": "Be brief.", "category": "test"}
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length") and events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] >= 1 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_past_its_timeout_is_504_or_a_stream_ending_in_timeout(tiny_run, stream):
    pas = GatedPAS()
    app = create_app(tiny_run / "sft" / "model", pas=pas,
                     options=ServeOptions(max_concurrency=1, max_queue=1, request_timeout=1))
    body = {"messages": ASK, "max_tokens": 200, "stream": stream}
    with running(app) as url:
        try:
            with contextlib.ExitStack() as stack:
                if stream:
                    held = stack.enter_context(httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120))
                else:
                    holder, held_reply = in_thread(lambda: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120))
                wait_for_health(url, in_flight=1)
                # Queued behind the held slot: no slot comes before its deadline.
                queued = httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 2}, timeout=120)
                assert queued.status_code == 504 and queued.json()["error"]["code"] == "request_timeout"
                pas.gate.set()  # the held request arrived first: its deadline has passed too
                if stream:
                    events = sse_events(held)
                else:
                    holder.join(timeout=120)
        finally:
            pas.gate.set()
        wait_for_health(url, in_flight=0, queued=0)
    if stream:
        assert held.status_code == 200 and events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "timeout"
        assert events[-2]["usage"]["completion_tokens"] <= 1  # cut at its first token, not run to 200
    else:
        assert held_reply[0].status_code == 504
        assert "no answer within 1 s" in held_reply[0].json()["error"]["message"]


def test_clients_that_leave_free_their_slots(tiny_run, tmp_path):
    pas, log = GatedPAS(), tmp_path / "requests.jsonl"
    app = create_app(tiny_run / "sft" / "model", pas=pas, options=ServeOptions(max_concurrency=1, log_file=log))
    body = {"messages": ASK, "max_tokens": 200, "stream": True}
    with running(app) as url:
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as stream:
                assert stream.status_code == 200
                wait_for_health(url, in_flight=1)
            # leaves while queued: no answer can come before the gate opens, so its read timeout fires
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/chat/completions", json=body, timeout=httpx.Timeout(120, read=0.5))
            wait_for_health(url, in_flight=1, queued=1)
        finally:
            pas.gate.set()  # the first one's PAS work ends; then its slot comes free and its generation stops
        wait_for_health(url, in_flight=0, queued=0)  # the second one's too, though nobody reads its stream
        assert "disconnected" in [line.get("finish_reason") for line in wait_for_log(log, 2)]
        reply = httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 2}, timeout=120)
        assert reply.status_code == 200


def test_pas_complements_the_last_user_message(tiny_run, tmp_path):
    log = tmp_path / "requests.jsonl"
    app = create_app(tiny_run / "sft" / "model", pas=AppendingPAS(), options=ServeOptions(log_file=log))
    turns = [{"role": "user", "content": "What is a loan?"}, {"role": "assistant", "content": "A loan."},
             {"role": "user", "content": "What is a bond?"}]
    augmented = [*turns[:2], {"role": "user", "content": "What is a bond? Answer in one sentence."}]

    def ask(messages, **extra) -> dict:
        body = {"messages": messages, "max_tokens": 6, "temperature": 0, **extra}
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()

    with running(app) as url:
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["pas"] is True
        with_pas, by_hand = ask(turns), ask(augmented, pas=False)
        without = ask(turns, pas=False)
        declined = ask([{"role": "user", "content": "Tell me about bonds."}])
    assert with_pas["pas"] == {"complement": "Answer in one sentence.", "category": "definition"}
    assert with_pas["choices"] == by_hand["choices"] and with_pas["usage"] == by_hand["usage"]
    assert without["pas"] is None and without["usage"]["prompt_tokens"] < with_pas["usage"]["prompt_tokens"]
    assert declined["pas"] is None
    assert [json.loads(line)["pas"] for line in log.read_text().splitlines()] == [False, True, False, False, False]


def test_an_unexpected_error_is_a_short_500_and_a_log_line(tiny_run, tmp_path):
    log = tmp_path / "requests.jsonl"
    app = create_app(tiny_run / "sft" / "model", pas=BrokenPAS(), options=ServeOptions(log_file=log))
    with running(app) as url:
        plain = httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK}, timeout=120)
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={"messages": ASK, "stream": True},
                          timeout=120) as stream:
            events = sse_events(stream)
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK, "pas": False, "max_tokens": 2},
                          timeout=120).status_code == 200  # the server lives on
    assert plain.status_code == 500
    assert plain.json() == {"error": {"message": "internal error; the server log has the details",
                                      "type": "server_error", "code": None}}
    assert events == [{"error": {"message": "internal error while generating; the server log has the details",
                                 "type": "server_error", "code": None}}]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["status"], line.get("error")) for line in lines] == [
        (500, "RuntimeError: the PAS model crashed"), (200, "RuntimeError: the PAS model crashed"), (200, None)]


def test_a_chat_template_that_refuses_the_messages_is_400(tiny_run, tmp_path):
    model = tmp_path / "strict"
    shutil.copytree(tiny_run / "sft" / "model", model)
    (model / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    with running(create_app(model)) as url:
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                           json={"messages": [{"role": "system", "content": "Be brief."}, *ASK]})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == ("messages: the model's chat template refuses them "
                                                "(System role not supported)")


def wait_for_log(path: Path, count: int) -> list[dict]:
    """The first ``count`` lines of a request log: each is written just after its response has gone out."""
    deadline = time.monotonic() + 60
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) >= count, lines
            return [json.loads(line) for line in lines[:count]]
        time.sleep(0.02)


@pytest.fixture(scope="module")
def served_run(tiny_run, tmp_path_factory):
    """`finloom serve RUN` on the tiny run: its chat models by stage, one loaded at a time, logged to a file."""
    log = tmp_path_factory.mktemp("serve_log") / "requests.jsonl"
    with serving(tiny_run, "--max-loaded", "1", "--log-file", str(log)) as base_url:
        yield base_url.removesuffix("/v1"), log


def test_a_run_directory_serves_each_chat_stage_by_name(served_run):
    url, _ = served_run
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert [(m["id"], m["default"], m["pas"]) for m in models] == [("sft", False, False), ("align", True, False)]
    asked = {name: httpx.post(f"{url}/v1/chat/completions", timeout=120,
                              json={"model": name, "messages": ASK, "max_tokens": 2}).json()
             for name in ("sft", "default", "align")}
    assert [asked[name]["model"] for name in asked] == ["sft", "align", "align"]
    assert httpx.get(f"{url}/health").json()["loaded"] == ["align"]  # --max-loaded 1: sft left for align
    unknown = httpx.post(f"{url}/v1/chat/completions", json={"model": "merge", "messages": ASK}, timeout=120)
    assert unknown.status_code == 404 and "this server has 'sft', 'align'" in unknown.json()["error"]["message"]


def test_request_log_has_counts_but_no_text_by_default(served_run):
    url, log = served_run
    before = len(log.read_text().splitlines()) if log.exists() else 0
    question = [{"role": "user", "content": "What is a zebra coupon?"}]
    reply = httpx.post(f"{url}/v1/chat/completions", json={"model": "sft", "messages": question, "max_tokens": 3},
                       timeout=120).json()
    line = wait_for_log(log, before + 1)[-1]
    assert set(line) == {"id", "route", "status", "model", "prompt_tokens", "completion_tokens", "ms", "pas"}
    assert (line["id"], line["route"], line["status"], line["model"]) == (
        reply["id"].removeprefix("chatcmpl-"), "/v1/chat/completions", 200, "sft")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (reply["usage"]["prompt_tokens"],
                                                                  reply["usage"]["completion_tokens"])
    assert "zebra" not in log.read_text()


def test_log_prompts_puts_the_texts_in_the_log_and_the_server_says_where_it_listens(tiny_run, tmp_path):
    log, port = tmp_path / "requests.jsonl", free_port()
    process = subprocess.Popen([sys.executable, "-m", "finloom", "serve", str(tiny_run / "sft" / "model"), "--port",
                                str(port), "--log-file", str(log), "--log-prompts"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == (f"finloom serve: listening on http://127.0.0.1:{port} "
                                             "(models shared/sft; chat page at /)\n")
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, status="ok")
        body = {"messages": [{"role": "user", "content": "What is a zebra coupon?"}], "max_tokens": 3, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
            streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in sse_events(response)[:-1])
        line = wait_for_log(log, 1)[0]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert line["messages"] == body["messages"] and line["completion"] == streamed
    assert line["finish_reason"] in ("stop", "length") and line["completion_tokens"] >= 1


def test_serve_help_explains_every_option():
    help_text = subprocess.run([sys.executable, "-m", "finloom", "serve", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}).stdout
    for option, words in [("--max-concurrency", "generating at once"), ("--max-queue", "429"),
                          ("--request-timeout", "504"), ("--max-loaded", "least recently used"),
                          ("--log-file", "JSON line"), ("--log-prompts", "completion texts"),
                          ("--host", "no authentication"), ("--model-name", "/v1/models"), ("--port", "Port")]:
        assert option in help_text and words in help_text, option
    assert "run directory" in help_text


def test_a_directory_that_is_neither_a_model_nor_a_run_is_one_line(tmp_path):
    result = finloom_cli("serve", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"serve: {tmp_path} is neither a model directory (no config.json) nor a run" in result.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")


def chat_in_browser(url: str, model: str, turns: list[tuple[str, bool | None]]) -> list[dict]:
    """Chat through the page at ``url`` in headless Chromium: pick ``model``, greedy, 8 tokens; each turn is
    (text, PAS on?) (None: the page shows no PAS toggle). What the page shows for each turn."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    shown = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            page.select_option("#model", model)
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "8")
            for index, (text, pas) in enumerate(turns):
                assert page.is_visible("#pas") == (pas is not None)
                if pas is not None:
                    page.set_checked("#pas", pas)
                page.fill("#prompt", text)
                page.press("#prompt", "Enter")
                answer = page.locator(".msg.assistant").nth(index)
                sync_api.expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
                user = page.locator(".msg.user").nth(index)
                shown.append({"answer": answer.locator(".text").text_content(),
                              "meta": answer.locator(".meta").text_content(),
                              "complement": user.locator(".complement").all_text_contents(),
                              "markup": user.locator(".complement b").count()})
        finally:
            browser.close()
    return shown


def greedy(url: str, model: str, messages: list[dict], **extra) -> str:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 8, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()["choices"][0]["message"]["content"]


@needs_browser
def test_chat_page_streams_the_same_answer_as_a_direct_request(served_run):
    url, _ = served_run
    first, second = "What is a bond?", "And equity?"
    shown = chat_in_browser(url, "sft", [(first, None), (second, None)])
    expected_first = greedy(url, "sft", [{"role": "user", "content": first}])
    expected_second = greedy(url, "sft", [{"role": "user", "content": first},
                                          {"role": "assistant", "content": expected_first},
                                          {"role": "user", "content": second}])
    assert [turn["answer"] for turn in shown] == [expected_first, expected_second]  # the second saw the history
    assert "8 completion tokens" in shown[0]["meta"] and shown[0]["complement"] == []


@needs_browser
def test_chat_page_shows_the_pas_complement_as_text(tiny_run):
    complement = "Answer in <b>one</b> sentence."
    with running(create_app(tiny_run, pas=AppendingPAS(complement))) as url:
        shown = chat_in_browser(url, "align", [("What is a bond?", True), ("What is a loan?", False)])
        with_pas = greedy(url, "align", [{"role": "user", "content": "What is a bond?"}])
        without = greedy(url, "align", [{"role": "user", "content": "What is a bond?"},
                                        {"role": "assistant", "content": with_pas},
                                        {"role": "user", "content": "What is a loan?"}], pas=False)
    assert shown[0]["complement"] == [f"PAS (definition): {complement}"] and shown[0]["markup"] == 0
    assert [turn["answer"] for turn in shown] == [with_pas, without] and shown[1]["complement"] == []
