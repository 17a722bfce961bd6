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


def _tiny_llama(positions: int):
    tokenizer = train_tokenizer(["a bond is debt and a share is equity; 债券是债务，股票是权益。"] * 30, 320)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=positions, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def tiny_lm():
    return _tiny_llama(64)


def _requests(kind: str, pairs: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(pairs)]


PAIRS = [("a bond is", " debt"), ("a share is", " equity and more"), ("债券是", "债务"),
         ("a bond is debt and a share is equity " * 4, " debt")]  # the last one is truncated from the left


def _with_bos(tokenizer):
    """The tokenizer as Llama's and Mistral's behave: BOS added to every encoding by the post-processor."""
    from tokenizers.processors import TemplateProcessing

    bos = tokenizer.eos_token  # the scratch vocabulary's <|endoftext|> stands in for <s>
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))])
    tokenizer.bos_token = bos
    return tokenizer


@pytest.mark.parametrize("bos", [False, True], ids=["no_bos", "bos"])
def test_scores_equal_lm_eval_hf_model_from_its_directory(tmp_path, bos):
    """finloom's in-memory model scores exactly as `lm_eval --model hf --model_args pretrained=DIR`, also with a
    tokenizer that adds BOS (FinloomLM once encoded without special tokens: up to 4 nats apart)."""
    from lm_eval.models.huggingface import HFLM

    from finloom.eval import harness
    from finloom.recipe import STARTER_DATA_DIR

    model, tokenizer = _tiny_llama(1024)  # room for the bundled questions' longest options
    if bos:
        tokenizer = _with_bos(tokenizer.__class__.from_pretrained(_save(model, tokenizer, tmp_path / "plain")))
        assert tokenizer("a bond")["input_ids"][0] == tokenizer.bos_token_id
    directory = _save(model, tokenizer, tmp_path / "model")
    prepared = harness.prepare("finance_mcq", "mcq", "flame", [STARTER_DATA_DIR / "eval_finance_mcq.jsonl"], "cloze",
                               tmp_path / "work", 24)
    rows = {}
    for name, lm in (("finloom", FinloomLM(model, tokenizer, batch_size=4)),
                     ("lm_eval_hf", HFLM(pretrained=str(directory), batch_size=4, device="cpu"))):
        samples = harness.evaluate(lm, prepared.subtasks, tmp_path / "work")
        rows[name] = {r["id"] + r["template"]: r for r in harness.per_question(prepared, samples, prepared.subtasks)}
    assert rows["finloom"].keys() == rows["lm_eval_hf"].keys() and len(rows["finloom"]) == 24
    for key, row in rows["finloom"].items():
        assert row["loglikelihoods"] == pytest.approx(rows["lm_eval_hf"][key]["loglikelihoods"], abs=1e-5)
        assert row["prediction"] == rows["lm_eval_hf"][key]["prediction"]


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


def test_generation_equals_lm_eval_and_keeps_to_the_task_budget(tiny_lm):
    """Replies equal HFLM's own, batched or not; and a model whose generation config asks for 128 new tokens
    still writes at most the task's max_gen_toks (HFLM's max_length loses to the config's max_new_tokens)."""
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny_lm
    prompts = [("a bond is", {"until": ["\n\n"], "max_gen_toks": 8}), ("债券", {"until": ["\n\n"], "max_gen_toks": 8}),
               ("a share is equity and a bond", {"until": ["\n\n"], "max_gen_toks": 8})]
    batched = FinloomLM(model, tokenizer, batch_size=3).generate_until(_requests("generate_until", prompts))
    single = FinloomLM(model, tokenizer, batch_size=1).generate_until(_requests("generate_until", prompts))
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3).generate_until(_requests("generate_until", prompts))
    assert batched == single == theirs and all(isinstance(text, str) for text in batched)

    model.generation_config.max_new_tokens = 128
    model.generation_config.eos_token_id = None  # nothing ends a reply early
    try:
        [reply] = FinloomLM(model, tokenizer, batch_size=1).generate_until(_requests("generate_until", [
            ("a bond is", {"until": ["\x00never"], "max_gen_toks": 5})]))
    finally:
        model.generation_config.max_new_tokens = None
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    # 5 tokens were asked for (re-encoding the text may split it into a few more); 128 were allowed by the config
    assert 1 <= len(tokenizer(reply, add_special_tokens=False)["input_ids"]) <= 12


def test_stage_results_are_consistent_with_per_question_rows(tiny_run):
    results = json.loads((tiny_run / "eval" / "results.json").read_text())
    assert list(results) == ["base", "pretrain", "sft", "align"]
    source = (tiny_run.parents[1] / "fin_mcq.jsonl").read_text(encoding="utf-8").splitlines()
    answers = {str(number): json.loads(line)["answer"] for number, line in enumerate(source)}  # ids are line numbers
    for label, per_model in results.items():
        rows = [json.loads(line) for line in (tiny_run / "eval" / label / "finance_mcq.jsonl").read_text().splitlines()]
        summary = per_model["finance_mcq"]
        assert summary["items"] == len(rows) == 17
        # each row is scored by its own prediction against the key (the summary alone is recomputed from "correct")
        assert [r["answer"] for r in rows] == [answers[r["id"]] for r in rows]
        assert all(r["correct"] == (r["prediction"] == r["answer"]) for r in rows)
        assert summary["accuracy"] == round(sum(r["correct"] for r in rows) / len(rows), 4)
        assert summary["chance"] == round(sum(1 / r["choices"] for r in rows) / len(rows), 4)
        assert set(summary["by_task"]) == {"Banking", "CPA"}
        assert any(r["multi"] for r in rows) and all(len(r["loglikelihoods"]) == r["choices"] for r in rows)
        assert per_model["finance_ppl"]["perplexity"] > 1
    assert "finance_mcq_gen" in results["sft"] and "finance_mcq_gen" not in results["base"]  # chat models generate
    generated = [json.loads(line) for line in (tiny_run / "eval" / "sft" / "finance_mcq_gen.jsonl").read_text().splitlines()]
    assert all(isinstance(r["prediction"], str) and "parsed" in r for r in generated)
    assert all(r["correct"] == (r["extracted"] == r["answer"]) for r in generated)  # scored from what was read


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
    generated = [json.loads(line) for line in (tmp_path / "served" / "finance_mcq_gen.jsonl").read_text().splitlines()]
    assert all(row["correct"] == (row["extracted"] == row["answer"]) for row in generated)  # scored from the reply
    assert results["finance_mcq_gen"]["accuracy"] == round(sum(r["extracted"] == r["answer"] for r in generated) / 17, 4)
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
    assert missing.returncode == 2 and "--model: no model directory at" in missing.stderr


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


def _suite(tmp_path, *benchmarks: str) -> Path:
    recipe = tmp_path / "suite.yaml"
    recipe.write_text("name: suite\neval:\n  benchmarks:\n" + "".join(f"    - {b}\n" for b in benchmarks), encoding="utf-8")
    return recipe


def test_eval_command_reports_rejects_and_refuses_a_benchmark_with_no_item(tiny_run, tmp_path):
    from conftest import finloom_cli

    records = tmp_path / "mcq.jsonl"
    records.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"task_name": "CPA", "question": "某项说法正确的是（ ）。 A.甲 B.乙 C.丙 D.丁", "answer": "B"},
        {"task_name": "CPA", "question": "A.一\nB.二", "answer": "A"},
        {"task_name": "CPA", "question": "Q?\nA.x\nB.y", "answer": "E"}]) + "\n{broken\n", encoding="utf-8")
    out = tmp_path / "out"
    done = finloom_cli("eval", "--model", str(tiny_run / "sft" / "model"), "--chat", "--out", str(out),
                       "--recipe", str(_suite(tmp_path, f"{{name: mine, files: [{{path: {records}}}]}}")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mine: 3 records rejected" in done.stderr and "1 x no question stem" in done.stderr
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == sorted([
        "no question stem", "answer 'E' is not among the options AB",
        "bad JSON: Expecting property name enclosed in double quotes"])
    generated = [json.loads(line) for line in (out / "sft" / "mine_gen.jsonl").read_text().splitlines()]
    assert len(generated) == 1 and "extracted" in generated[0]  # what the scorer read, beside the raw reply

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"question": "A.一\nB.二", "answer": "A"}) + "\n", encoding="utf-8")
    refused = finloom_cli("eval", "--model", str(tiny_run / "sft" / "model"), "--out", str(tmp_path / "out2"),
                          "--recipe", str(_suite(tmp_path, f"{{name: hollow, files: [{{path: {empty}}}]}}")))
    assert refused.returncode == 2 and "eval.benchmarks.hollow: no usable item" in refused.stderr
    assert "1 x no question stem" in refused.stderr and "Traceback" not in refused.stderr


def test_eval_command_names_the_problem_with_a_model_or_an_endpoint(tmp_path):
    from conftest import finloom_cli, free_port

    (tmp_path / "hollow").mkdir()
    hollow = finloom_cli("eval", "--model", str(tmp_path / "hollow"))
    assert hollow.returncode == 2 and f"--model: {tmp_path / 'hollow'} has no config.json" in hollow.stderr
    url = f"http://127.0.0.1:{free_port()}/v1"
    refused = finloom_cli("eval", "--model", url, "--suite", "finance", "--max-items", "2", "--out", str(tmp_path / "o"))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"--model: {url}/chat/completions: cannot connect" in refused.stderr
    assert refused.stderr.count("\n") <= 2 and "Traceback" not in refused.stderr


def test_an_unknown_endpoint_model_is_one_clear_line(served_sft, tmp_path):
    from conftest import finloom_cli

    done = finloom_cli("eval", "--model", served_sft, "--api-model", "gpt-9", "--suite", "finance", "--max-items", "2",
                       "--out", str(tmp_path / "o"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{served_sft}/chat/completions: HTTP 404: no such model or path on this endpoint" in done.stderr
