"""Every stage from the model shapes users start from (``families.py``: Llama-3 base, Qwen2.5, Mistral).

Each runs data -> pretrain -> sft -> reward -> align -> eval, then serve; the assistant masks must cover
exactly the assistant turns (decoded and compared) and serve must use the template saved with the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_port, tiny_recipe, write_recipe
from families import FAMILIES, family_model
from finloom.llm.chat_template import PLAIN_TEMPLATE, tokenize_with_assistant_mask
from finloom.llm.loading import load_tokenizer
from finloom.recipe import load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest

def _record(line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {}
    if "messages" in record:
        return {"text": " ".join(message["content"] for message in record["messages"])}
    return record


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_run(request, tiny_data, tmp_path_factory):
    name = request.param
    texts = [record["text"] for path in ("general.jsonl", "finance.jsonl", "sft.jsonl")
             for line in (tiny_data / path).read_text().splitlines() if line.startswith("{")
             for record in [_record(line)] if "text" in record]
    folder = tmp_path_factory.mktemp(f"family_{name}")
    model_dir = family_model(name, texts, folder / "model")
    recipe = tiny_recipe(**{"model": {"hf": str(model_dir)}, "pretrain.train": {"max_steps": 2, "batch_size": 2,
                                                                                "seq_len": 64, "save_steps": 2}})
    del recipe["base"]
    recipe["eval"]["benchmarks"] = recipe["eval"]["benchmarks"][:1]
    recipe["eval"]["max_items"] = 6
    path = write_recipe(tiny_data, recipe, f"family_{name}.yaml")
    run_dir = folder / "run"
    states = Runner(load_recipe(path), run_dir).run()
    return name, run_dir, states


def test_every_stage_runs_from_the_family(family_run):
    name, run_dir, states = family_run
    assert states == {stage: "done" for stage in ("data", "pretrain", "sft", "reward", "align", "eval", "report")}
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert set(results) == {"start", "pretrain", "sft", "align"}
    assert results["sft"]["finance_mcq_gen"]["items"] == 6  # the chat models answered through their template


def test_the_template_is_saved_and_the_assistant_mask_is_exact(family_run):
    name, run_dir, _ = family_run
    tokenizer = load_tokenizer(run_dir / "sft" / "model")
    expected = FAMILIES[name]["template"] or PLAIN_TEMPLATE
    assert tokenizer.chat_template == expected
    assert read_manifest(run_dir, "sft")["metrics"]["chat_template"].startswith(
        "plain" if FAMILIES[name]["template"] is None else "the model's own")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a bond?"},
                {"role": "assistant", "content": "A debt security."}, {"role": "user", "content": "And equity?"},
                {"role": "assistant", "content": "Ownership in a company."}]
    row = tokenize_with_assistant_mask(tokenizer, messages, 512)
    masked = tokenizer.decode([t for t in row["labels"] if t != -100])
    end = FAMILIES[name]["eos"]
    assert masked == f"A debt security.{end}Ownership in a company.{end}"
    generation = json.loads((run_dir / "sft" / "model" / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids(end) in (eos if isinstance(eos, list) else [eos])
    if FAMILIES[name]["bos"]:
        assert row["input_ids"].count(tokenizer.bos_token_id) <= 1  # no second BOS from the tokenizer


def test_serve_uses_the_saved_template(family_run):
    name, run_dir, _ = family_run
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "finloom", "serve", str(run_dir / "align" / "model"), "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    messages = [{"role": "user", "content": "What is a bond?"}]
    try:
        deadline = time.time() + 120
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                                   json={"messages": messages, "max_tokens": 4})
                break
            except httpx.TransportError:
                assert time.time() < deadline and server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert reply.status_code == 200, reply.text
    tokenizer = load_tokenizer(run_dir / "align" / "model")
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert reply.json()["usage"]["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_chatml_asked_for_on_a_model_without_its_tokens_adds_them_and_resizes(tmp_path):
    from finloom.llm.chat_template import ensure_chat_template, resize_for_template, stop_at_end_of_turn
    from finloom.llm.loading import load_causal_lm

    folder = family_model("llama3_base", ["a bond is debt and a share is equity"] * 20, tmp_path / "model")
    tokenizer, model = load_tokenizer(folder), load_causal_lm(folder)
    before = len(tokenizer)
    assert ensure_chat_template(tokenizer, "chatml") == "the template 'chatml'"
    assert len(tokenizer) == before + 2
    resize_for_template(model, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    row = tokenize_with_assistant_mask(tokenizer, [{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello."}], 64)
    assert tokenizer.decode([t for t in row["labels"] if t != -100]) == "Hello.<|im_end|>"
    stop_at_end_of_turn(model, tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
