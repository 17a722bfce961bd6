"""The lm-eval engine: FinloomLM equals lm-eval's HFLM, batched generation is exact, stage results add up,
API models and the scenario judge run against a real local server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from transformers import LlamaConfig, LlamaForCausalLM

from finloom.eval.lm import FinloomLM
from finloom.llm.scratch import train_tokenizer


@pytest.fixture(scope="module")
def tiny_lm():
    tokenizer = train_tokenizer(["a bond is debt and a share is equity; 债券是债务，股票是权益。"] * 30, 320)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id))
    return model.eval(), tokenizer


def _requests(kind: str, pairs: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(pairs)]


PAIRS = [("a bond is", " debt"), ("a share is", " equity and more"), ("债券是", "债务"),
         ("a bond is debt and a share is equity " * 4, " debt")]  # the last one is truncated from the left


def test_loglikelihoods_equal_lm_eval_hflm(tiny_lm):
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny_lm
    ours = FinloomLM(model, tokenizer, batch_size=3).loglikelihood(_requests("loglikelihood", PAIRS))
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, max_length=64).loglikelihood(
        _requests("loglikelihood", PAIRS))
    for (ours_score, ours_greedy), (their_score, their_greedy) in zip(ours, theirs):
        assert ours_score == pytest.approx(their_score, abs=1e-4)
        assert ours_greedy == their_greedy


def test_loglikelihood_matches_hand_computation(tiny_lm):
    model, tokenizer = tiny_lm
    context, continuation = "a bond is", " debt"
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_context = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    expected = sum(logprobs[i - 1, whole[i]].item() for i in range(n_context, len(whole)))
    [(score, _)] = FinloomLM(model, tokenizer).loglikelihood(_requests("loglikelihood", [(context, continuation)]))
    assert score == pytest.approx(expected, abs=1e-5)


def test_batched_generation_equals_one_at_a_time(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = [("a bond is", {"until": ["\n\n"], "max_gen_toks": 8}), ("债券", {"until": ["\n\n"], "max_gen_toks": 8}),
               ("a share is equity and a bond", {"until": ["\n\n"], "max_gen_toks": 8})]
    batched = FinloomLM(model, tokenizer, batch_size=3).generate_until(_requests("generate_until", prompts))
    single = FinloomLM(model, tokenizer, batch_size=1).generate_until(_requests("generate_until", prompts))
    assert batched == single and all(isinstance(text, str) for text in batched)


def test_stage_results_are_consistent_with_per_question_rows(tiny_run):
    results = json.loads((tiny_run / "eval" / "results.json").read_text())
    assert list(results) == ["base", "pretrain", "sft", "align"]
    for label, per_model in results.items():
        rows = [json.loads(line) for line in (tiny_run / "eval" / label / "finance_mcq.jsonl").read_text().splitlines()]
        summary = per_model["finance_mcq"]
        assert summary["items"] == len(rows) == 17
        assert summary["accuracy"] == round(sum(r["correct"] for r in rows) / len(rows), 4)
        assert summary["chance"] == round(sum(1 / r["choices"] for r in rows) / len(rows), 4)
        assert set(summary["by_task"]) == {"Banking", "CPA"}
        assert any(r["multi"] for r in rows) and all(len(r["loglikelihoods"]) == r["choices"] for r in rows)
        assert per_model["finance_ppl"]["perplexity"] > 1
    assert "finance_mcq_gen" in results["sft"] and "finance_mcq_gen" not in results["base"]  # chat models generate
    generated = [json.loads(line) for line in (tiny_run / "eval" / "sft" / "finance_mcq_gen.jsonl").read_text().splitlines()]
    assert all(isinstance(r["prediction"], str) and "parsed" in r for r in generated)


def test_endpoint_and_scenario_judge_against_a_real_server(tiny_data, tiny_run, served_sft, tmp_path):
    """The served SFT model is both an API model under test and the scenario judge; its judge replies do not
    parse, which must be retried and counted."""
    from conftest import tiny_recipe, write_recipe
    from finloom.eval.evaluator import Evaluator
    from finloom.recipe import load_recipe

    scenarios = tmp_path / "scenarios.jsonl"
    scenarios.write_text("".join(json.dumps({
        "id": f"s{i}", "family": family, "task": "Explain", "prompt": f"Explain {topic} to a client.",
        "high_stakes": family == "risk_control", "weights": {"accuracy": 60, "clarity": 40},
        "checklist": ["Defines the term"]}) + "\n" for i, (family, topic) in enumerate(
            [("knowledge_theory", "a bond"), ("risk_control", "margin calls"), ("customer_service", "a deposit")])),
        encoding="utf-8")
    recipe = tiny_recipe(**{
        "teacher": {"base_url": served_sft, "max_retries": 1},
        "eval.benchmarks": [{"name": "finance_mcq", "files": [{"path": "fin_mcq.jsonl"}]},
                            {"name": "scenarios", "kind": "scenario", "files": [{"path": str(scenarios)}]}],
        "eval.endpoints": [{"name": "served", "base_url": served_sft, "concurrency": 2}],
        "eval.scenarios": {"judge_retries": 1, "judge_max_tokens": 24, "max_gen_tokens": 16},
    })
    loaded = load_recipe(write_recipe(tiny_data, recipe, "endpoint.yaml"))
    evaluator = Evaluator(loaded.eval, tmp_path / "work", loaded.resolve, seed=loaded.seed, judge=loaded.teacher)
    results = evaluator.run_endpoint(loaded.eval.endpoints[0], tmp_path / "served")
    assert results["finance_mcq_gen"]["items"] == 17 and "finance_mcq" not in results  # no log-probs from the API
    assert 0 <= results["finance_mcq_gen"]["accuracy"] <= 1
    judged = results["scenarios"]
    assert judged["items"] == 3 and judged["judge_failures"] <= 3
    rows = [json.loads(line) for line in (tmp_path / "served" / "scenarios_judge.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["judge_prompt"].startswith("You are a strict reviewer") for r in rows)
    for row in rows:
        assert 1 <= len(row["judge_replies"]) <= 2  # asked once, again only if the reply did not parse
        assert row["judge_failed"] == ("scores" not in row)
    assert judged["judge_failures"] == sum(r["judge_failed"] for r in rows)
    assert set(judged["by_family"]) == {"knowledge_theory", "risk_control", "customer_service"}


def test_eval_command_on_a_model_directory_with_local_files(tiny_run, tmp_path):
    """`finloom eval` on a stage model: a CSV folder in FinanceIQ's layout (one sub-task per file) and a
    saved HF dataset in MMLU's layout, from a recipe's eval section."""
    import csv

    from datasets import Dataset

    from conftest import finloom_cli

    folder = tmp_path / "financeiq" / "test"
    folder.mkdir(parents=True)
    for name, rows in (("银行从业", [("存款保险的作用是？", "保护存款人", "提高利率", "发行货币", "征税", "A")] * 3),
                       ("证券从业", [("股票属于？", "债权", "所有权凭证", "保险", "期货", "B")] * 2)):
        with open(folder / f"{name}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Question", "A", "B", "C", "D", "Answer"])
            writer.writerows(rows)
    Dataset.from_list([{"question": "2 + 2 = ?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}] * 4
                      ).save_to_disk(str(tmp_path / "mmlu_local"))
    recipe = tmp_path / "suite.yaml"
    recipe.write_text(
        "name: suite\n"  # an eval-only recipe: the model is --model
        "eval:\n  benchmarks:\n"
        f"    - {{name: financeiq, layout: columns, files: [{{path: {tmp_path / 'financeiq'}}}]}}\n"
        f"    - {{name: mmlu, domain: general, layout: mmlu, files: [{{path: {tmp_path / 'mmlu_local'}}}]}}\n",
        encoding="utf-8")
    out = tmp_path / "out"
    done = finloom_cli("eval", "--model", str(tiny_run / "base" / "model"), "--suite", "all", "--recipe", str(recipe),
                       "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["base"]
    assert results["financeiq"]["items"] == 5 and set(results["financeiq"]["by_task"]) == {"银行从业", "证券从业"}
    assert results["mmlu"]["items"] == 4 and results["mmlu"]["by_task"] == {"math": results["mmlu"]["accuracy"]}
    finance_only = finloom_cli("eval", "--model", str(tiny_run / "base" / "model"), "--suite", "finance", "--recipe",
                               str(recipe), "--out", str(tmp_path / "finance"))
    assert finance_only.returncode == 0
    assert list(json.loads((tmp_path / "finance" / "results.json").read_text())["base"]) == ["financeiq"]
    missing = finloom_cli("eval", "--model", str(tmp_path / "nope"), "--recipe", str(recipe))
    assert missing.returncode == 2 and "no such model directory" in missing.stderr


def test_api_log_likelihoods_equal_local_ones(tiny_data, tiny_run, served_sft, tmp_path):
    """The served SFT model through lm-eval's local-completions (echo + logprobs) scores the MCQ exactly as
    the eval stage scored the same model in-process."""
    from conftest import tiny_recipe, write_recipe
    from finloom.eval.evaluator import Evaluator
    from finloom.recipe import load_recipe

    recipe = tiny_recipe(**{"eval.endpoints": [{"name": "served", "base_url": served_sft, "chat": False,
                                                "logprobs": True, "tokenizer": str(tiny_run / "sft" / "model")}],
                            "eval.benchmarks": [{"name": "finance_mcq", "files": [{"path": "fin_mcq.jsonl"}],
                                                 "scoring": "cloze"}]})
    loaded = load_recipe(write_recipe(tiny_data, recipe, "logprobs.yaml"))
    results = Evaluator(loaded.eval, tmp_path / "work", loaded.resolve, seed=loaded.seed).run_endpoint(
        loaded.eval.endpoints[0], tmp_path / "served")
    remote = {(r["id"], r["template"]): r for r in map(json.loads, (tmp_path / "served" / "finance_mcq.jsonl")
                                                       .read_text().splitlines())}
    local = {(r["id"], r["template"]): r for r in map(json.loads, (tiny_run / "eval" / "sft" / "finance_mcq.jsonl")
                                                      .read_text().splitlines())}
    assert remote.keys() == local.keys() and results["finance_mcq"]["items"] == 17
    for key, row in local.items():
        assert remote[key]["prediction"] == row["prediction"]
        assert remote[key]["loglikelihoods"] == pytest.approx(row["loglikelihoods"], abs=1e-4)


def test_stage_judge_outside_a_run_is_a_clear_error(tmp_path):
    from finloom.errors import BadInput
    from finloom.recipe import load_recipe
    from finloom.stages import resolve_teacher

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "quickstart.yaml")  # teacher: stage:align
    with pytest.raises(BadInput, match="teacher.local_model: stage:align: no model of stage 'align' outside a run"):
        resolve_teacher(recipe, None)
    with pytest.raises(BadInput, match="no model of stage 'align' in this run"):
        resolve_teacher(recipe, tmp_path / "run")
    (tmp_path / "run" / "align" / "model").mkdir(parents=True)
    (tmp_path / "run" / "align" / "manifest.json").write_text(json.dumps(
        {"status": "done", "outputs": {"model": "align/model"}}))
    assert resolve_teacher(recipe, tmp_path / "run").local_model == str(tmp_path / "run" / "align" / "model")
