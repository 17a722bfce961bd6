"""Shared fixtures: a tiny corpus + recipe, and one completed tiny run reused by many tests.

The tiny data is written here (random words from two small vocabularies), so tests need neither
the network nor the bundled starter data, and one full pipeline run takes seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the finloom CLI sets it; before torch loads OpenMP
os.environ.setdefault("TQDM_DISABLE", "1")

import contextlib
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

FINANCE_WORDS = "bank loan interest deposit bond equity dividend capital risk insurance premium fund futures margin tax audit".split()
GENERAL_WORDS = "river mountain tree bird music football cooking history science planet ocean city school book garden rain".split()


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_tiny_data(folder: Path) -> None:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    general = [{"id": f"g{i}", "text": _sentence(rng, GENERAL_WORDS, 150)} for i in range(40)]
    general.append({"id": "short", "text": "Too short."})
    finance = [{"id": f"f{i}", "text": _sentence(rng, FINANCE_WORDS, 150)} for i in range(40)]
    finance.append(dict(finance[0], id="f0-copy"))
    _write_jsonl(folder / "general.jsonl", general)
    _write_jsonl(folder / "finance.jsonl", finance)
    with open(folder / "finance.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"id": "no-text"}) + "\n")
    _write_jsonl(folder / "general_heldout.jsonl", [{"text": _sentence(rng, GENERAL_WORDS, 200)} for _ in range(4)])
    _write_jsonl(folder / "finance_heldout.jsonl", [{"text": _sentence(rng, FINANCE_WORDS, 200)} for _ in range(4)])
    sft = [
        {"messages": [{"role": "user", "content": f"What is {w}?"},
                      {"role": "assistant", "content": f"{w} is a finance term. " + _sentence(rng, FINANCE_WORDS, 10)}]}
        for w in FINANCE_WORDS
    ]
    sft.append({"messages": [{"role": "user", "content": "no answer here"}]})
    _write_jsonl(folder / "sft.jsonl", sft)
    prefs = [
        {"prompt": [{"role": "user", "content": f"Explain {w}."}],
         "chosen": [{"role": "assistant", "content": f"{w} means " + _sentence(rng, FINANCE_WORDS, 8)}],
         "rejected": [{"role": "assistant", "content": "I do not know."}]}
        for w in FINANCE_WORDS * 2
    ]
    _write_jsonl(folder / "prefs.jsonl", prefs)
    mcq = [
        {"task_name": "Banking", "second_level": "Basics",
         "question": f"Which best describes {w}?\nA.{_sentence(rng, FINANCE_WORDS, 5)}\nB.{_sentence(rng, GENERAL_WORDS, 5)}"
                     f"\nC.{_sentence(rng, GENERAL_WORDS, 5)}\nD.{_sentence(rng, GENERAL_WORDS, 5)}",
         "answer": "A"}
        for w in FINANCE_WORDS
    ]
    mcq.append({"task_name": "CPA", "second_level": "Audit", "question": "Which are true?\nA．one\nB．two\nC．three\nD．four",
                "answer": "ABD"})
    _write_jsonl(folder / "fin_mcq.jsonl", mcq)
    rl = [{"id": f"rl-mcq-{i}", "category": "mcq", "answer": "AB"[i % 2],
           "prompt": [{"role": "user", "content": f"Which is {w}? A. {w} B. {GENERAL_WORDS[i]} Reply with the letter."}]}
          for i, w in enumerate(FINANCE_WORDS)]
    rl += [{"id": f"rl-short-{i}", "category": "constraints", "checks": [{"type": "max_words", "value": 4}],
            "prompt": [{"role": "user", "content": f"Define {w} in at most four words."}]}
           for i, w in enumerate(FINANCE_WORDS[:8])]
    rl.append({"id": "rl-broken", "prompt": []})
    _write_jsonl(folder / "rl.jsonl", rl)
    _write_jsonl(folder / "gen_mcq.jsonl", [
        {"task_name": "science", "second_level": "General",
         "question": f"Which describes {w}?\nA.{_sentence(rng, GENERAL_WORDS, 5)}\nB.{_sentence(rng, FINANCE_WORDS, 5)}",
         "answer": "A"}
        for w in GENERAL_WORDS
    ])


def tiny_recipe(**overrides) -> dict:
    recipe = {
        "name": "tiny",
        "seed": 7,
        "threads": 2,
        "model": {"scratch": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2,
                              "num_heads": 2, "num_kv_heads": 1, "max_position_embeddings": 256}},
        "data": {"general": [{"path": "general.jsonl"}], "finance": [{"path": "finance.jsonl"}],
                 "general_heldout": [{"path": "general_heldout.jsonl"}],
                 "finance_heldout": [{"path": "finance_heldout.jsonl"}],
                 # The tiny corpus is random words: no language model or quality rule would keep it.
                 "language": {"enabled": False}, "quality": {"enabled": False}, "mix": {"seq_len": 64}},
        "base": {"train": {"max_steps": 8, "batch_size": 4, "seq_len": 64, "save_steps": 4, "learning_rate": 1e-3}},
        "pretrain": {"eval_every": 4, "eval_max_tokens": 256,
                     "train": {"max_steps": 8, "batch_size": 4, "seq_len": 64, "save_steps": 4}},
        "sft": {"datasets": [{"path": "sft.jsonl"}], "train": {"max_steps": 4, "batch_size": 4, "seq_len": 128}},
        "reward": {"datasets": [{"path": "prefs.jsonl"}], "train": {"max_steps": 3, "batch_size": 4, "seq_len": 96}},
        "align": {"datasets": [{"path": "rl.jsonl"}],
                  "grpo": {"group_size": 2, "max_completion_tokens": 8, "top_k": 50,
                           "reweighting": {"eval_every": 2, "max_prompts": 3, "holdout": 0.2}},
                  "train": {"max_steps": 3, "batch_size": 4, "seq_len": 96, "save_steps": 2}},
        "eval": {"benchmarks": [{"name": "finance_mcq", "files": [{"path": "fin_mcq.jsonl"}]},
                                {"name": "general_mcq", "domain": "general", "files": [{"path": "gen_mcq.jsonl"}]}],
                 "perplexity_max_tokens": 256, "max_gen_tokens": 16},
    }
    for dotted, value in overrides.items():
        node = recipe
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return recipe


def write_recipe(folder: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def finloom_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``finloom ARGS`` in a fresh process; ``env`` adds to (not replaces) this process's environment."""
    return subprocess.run([sys.executable, "-m", "finloom", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


KEPT_RUN = "FINLOOM_TEST_KEPT_RUN"
"""A folder where ``tiny_data`` and ``tiny_run`` are built once and kept across pytest processes. Only for
benchmarks/mutation.py, which builds them with the unmutated tree and then runs the tests once per mutant: a
mutant of a stage is then tested where a test re-runs that stage, not by rebuilding the whole pipeline each time."""


def _kept(name: str) -> tuple[Path, Path] | None:
    """(folder, its done-marker) under FINLOOM_TEST_KEPT_RUN, if set; the marker lies beside the folder."""
    root = os.environ.get(KEPT_RUN)
    return (Path(root) / name, Path(root) / f"{name}.done") if root else None


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    kept = _kept("tiny_data")
    if kept and kept[1].exists():
        return kept[0]
    folder = kept[0] if kept else tmp_path_factory.mktemp("tiny_data")
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_data(folder)
    if kept:
        kept[1].touch()
    return folder


@pytest.fixture(scope="session")
def tiny_run(tiny_data) -> Path:
    """One complete tiny pipeline run, shared by tests that only read it."""
    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    run_dir = tiny_data / "runs" / "shared"
    kept = _kept("tiny_run")
    if kept and kept[1].exists():
        return run_dir
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(), "shared.yaml"))
    Runner(recipe, run_dir).run()
    if kept:
        kept[1].touch()
    return run_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(model_dir: Path, *options: str):
    """A real `finloom serve` process on loopback serving ``model_dir`` (with ``options``); yields its base URL.

    Its stderr (a JSON line per request) goes to a file: an unread pipe would fill and stall the server."""
    port = free_port()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([sys.executable, "-m", "finloom", "serve", str(model_dir), "--port", str(port),
                                    *options], stdout=subprocess.DEVNULL, stderr=stderr)
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            process.kill()
            process.wait(timeout=10)
            stderr.seek(0)
            raise RuntimeError(f"finloom serve did not start: {stderr.read().decode()[-2000:]}")
        try:
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def served_sft(tiny_run):
    """A real `finloom serve` process on loopback serving the tiny run's SFT model."""
    with serving(tiny_run / "sft" / "model") as base_url:
        yield base_url


class ScriptedChat(BaseHTTPRequestHandler):
    """A real OpenAI-compatible chat endpoint whose reply to each request is ``server.reply(prompt, body)`` (the
    last message's content and the whole request). It counts requests; ``server.fail_after`` makes every request
    after that many fail with HTTP 500, an outage."""

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.lock:
            self.server.requests += 1
            outage = self.server.fail_after is not None and self.server.requests > self.server.fail_after
        if outage:
            self.send_response(500)
            self.end_headers()
            return
        reply = self.server.reply(body["messages"][-1]["content"], body)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def scripted_chat(reply, fail_after: int | None = None):
    """A ``ScriptedChat`` server on loopback; yields the server (``server.url`` is its /v1 base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedChat)
    server.lock, server.requests, server.fail_after, server.reply = threading.Lock(), 0, fail_after, reply
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
