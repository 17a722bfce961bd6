"""End to end through the CLI on the bundled starter data: a scaled-down quickstart (<= 3 min).

Same stages, same data files and same code path as `finloom run recipes/quickstart.yaml`; only
the model is smaller and the step counts lower.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from conftest import finloom_cli, free_port

QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"


def small_quickstart(folder: Path) -> Path:
    recipe = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    recipe["name"] = "quickstart-small"
    recipe["model"]["scratch"] = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 176, "num_layers": 2,
                                  "num_heads": 4, "num_kv_heads": 2, "max_position_embeddings": 512,
                                  "tokenizer_max_chars": 300_000}
    for stage, steps in (("base", 150), ("pretrain", 80), ("sft", 60), ("reward", 10), ("align", 10)):
        recipe[stage]["train"].update(max_steps=steps, batch_size=6 if stage == "align" else 8, save_steps=20)
    recipe["prefs"]["max_prompts"] = 20
    recipe["pas"]["train"].update(max_steps=20, batch_size=8, save_steps=20)
    recipe["pas"]["selection"]["max_prompts"] = 6
    recipe["pas"]["eval"].update(max_items=4, max_tokens=16)
    recipe["eval"].update(perplexity_max_tokens=4096)
    for benchmark in recipe["eval"]["benchmarks"]:
        benchmark["max_items"] = 60 if benchmark.get("kind", "mcq") == "mcq" else 8
    path = folder / "quickstart-small.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def test_quickstart_small_end_to_end(tmp_path):
    recipe = small_quickstart(tmp_path)
    run_dir = tmp_path / "run"
    first = finloom_cli("run", str(recipe), "--run-dir", str(run_dir), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    stages = ("data", "base", "pretrain", "prompts", "sft", "merge", "prefs", "reward", "align", "pas", "eval", "report")
    for stage in stages:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["status"] == "done", stage
    # sft trained on exactly the set the prompts stage built
    kept = json.loads((run_dir / "prompts" / "manifest.json").read_text())["metrics"]["kept"]
    sft = json.loads((run_dir / "sft" / "manifest.json").read_text())["metrics"]
    assert sft["conversations"] == kept
    # packed: fewer rows than conversations, and more of each batch is real tokens than unpacked batches would hold
    assert sft["packing"] and sft["packed_rows"] < kept
    assert sft["token_utilisation"]["packed"] > sft["token_utilisation"]["unpacked"]
    merge = json.loads((run_dir / "merge" / "manifest.json").read_text())["metrics"]
    assert [(i["label"], i["evaluated_as"]) for i in merge["inputs"]] == [("sft@checkpoint-40", None),
                                                                         ("sft@checkpoint-60", "sft")]
    assert merge["method"] == "model_stock" and merge["base"] == "pretrain"
    # prefs: pairs from the merged model's own answers to 20 of the RL prompts, scored by their checks alone
    prefs = json.loads((run_dir / "prefs" / "manifest.json").read_text())["metrics"]
    assert prefs["prompts"] == 20 and prefs["modes"] == {"verified": 20} and prefs["rejected"] == 0
    assert prefs["pairs"] + sum(prefs["dropped"].values()) == 20 and prefs["pairs"] > 0
    reward = json.loads((run_dir / "reward" / "manifest.json").read_text())["metrics"]
    heldout = [json.loads(line) for line in (run_dir / "reward" / "heldout_rewards.jsonl").read_text().splitlines()]
    total = 300 + prefs["pairs"]  # the bundled pairs and the built ones
    assert reward["built_pairs"] == prefs["pairs"] and reward["scored_pairs"] == 120 + prefs["pairs"]
    assert len(heldout) == reward["eval_pairs"]
    assert (reward["eval_pairs"] + reward["eval_pairs_too_long"] + reward["train_pairs"] + reward["train_pairs_too_long"]
            == total)
    assert reward["eval_accuracy"] == round(sum(r["reward_chosen"] > r["reward_rejected"] for r in heldout) / len(heldout), 4)
    assert reward["scored_answers"] == 2 * sum(r["score_chosen"] is not None for r in heldout) > 0
    assert reward["score_spearman"] is not None
    assert set(reward["by_source"]) <= {"starter:preferences.jsonl", "stage:prefs"}
    # align: GRPO with the held-out reward of each category before and after, as the report shows it
    align = json.loads((run_dir / "align" / "manifest.json").read_text())["metrics"]
    categories = [json.loads(line) for line in (run_dir / "align" / "categories.jsonl").read_text().splitlines()]
    assert align["method"] == "grpo" and [c["step"] for c in categories] == [0, 10]
    assert set(align["heldout_reward_before"]) == {"mcq", "calculation", "constraints"}
    assert align["heldout_reward_after"] == categories[-1]["scores"]

    # pas: the bundled pairs (all pass the rules) and what the tiny teacher wrote and its critique kept, counted
    pas = json.loads((run_dir / "pas" / "manifest.json").read_text())["metrics"]
    generated = pas["generated"]
    assert pas["given"] == {"read": 300, "kept": 300, "rejected": 0, "rejected_by": {}}
    assert generated["asked"] == 6 and generated["read"] == generated["kept"] + sum(generated["dropped"].values())
    assert pas["pairs"] == 300 + generated["kept"] and pas["train_steps"] == 20
    assert pas["eval"]["items"] == 4 and len((run_dir / "pas" / "eval.jsonl").read_text().splitlines()) == 4

    funnel = json.loads((run_dir / "data" / "manifest.json").read_text())["metrics"]["funnel"]
    assert funnel["removed"]["exact_duplicate"] >= 30  # the starter corpora plant 17 exact copies each
    assert funnel["input_records"] == funnel["read"] + funnel["rejected"]

    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert list(results) == ["base", "pretrain", "sft", "sft@checkpoint-40", "merge", "align"]
    # Continual pre-training on the finance mix must lower finance perplexity below the general base's.
    assert results["pretrain"]["finance_ppl"]["perplexity"] < results["base"]["finance_ppl"]["perplexity"]
    for model in results.values():
        assert model["finance_mcq"]["items"] == 60 and model["general_mcq"]["items"] == 60
    for chat_model in ("sft", "sft@checkpoint-40", "merge", "align"):  # chat models also answer by generation, and do the generated benchmarks
        assert results[chat_model]["finance_mcq_gen"]["items"] == 60
        assert results[chat_model]["finance_calc"]["items"] == 8 and results[chat_model]["scenarios"]["items"] == 8
    assert "finance_calc" not in results["base"]
    judged = results["align"]["scenarios"]  # judged by the run's own align model (teacher: stage:align)
    rows = [json.loads(line) for line in (run_dir / "eval" / "align" / "scenarios_judge.jsonl").read_text().splitlines()]
    assert judged["judge_failures"] == sum(r["judge_failed"] for r in rows) and len(rows) == 8
    assert judged["usable_rate"] == round(sum(r["usable"] for r in rows) / 8, 4)
    assert judged["rule_checked"] == 8 and judged["rule_pass_rate"] == round(sum(r["rule_passed"] for r in rows) / 8, 4)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Evaluation by stage" in page and "data:image/png;base64," in page
    assert "Data funnel by step" in page and "Prompt selection (SFT set)" in page
    assert "Model merging (model_stock)" in page and "input: sft@checkpoint-40" in page
    assert "Reward model: accuracy and calibration" in page and "Preference pairs built" in page
    assert "Online RL (GRPO): held-out reward by category" in page
    assert "PAS: training pairs" in page and "PAS: answers with vs without" in page

    second = finloom_cli("run", str(recipe), "--run-dir", str(run_dir))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("up to date, skipped") == len(stages)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "finloom", "serve", str(run_dir / "sft" / "model"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "What is deposit insurance?"}], "max_tokens": 16}
        deadline = time.time() + 60
        while True:
            try:
                reply = httpx.post(url, json=body, timeout=60)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "finloom serve did not come up"
                time.sleep(0.3)
        assert reply.status_code == 200
        payload = reply.json()
        assert payload["choices"][0]["message"]["role"] == "assistant"
        assert isinstance(payload["choices"][0]["message"]["content"], str)
        assert 1 <= payload["usage"]["completion_tokens"] <= 16
    finally:
        server.terminate()
        server.wait(timeout=10)
