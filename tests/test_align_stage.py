"""The align stage around its trainers: which prompts train and which are held out per category, what each method
reports in the manifest, which conversations feed the KL-to-SFT term, and the errors of a data set that cannot train.

Each stage test re-runs the stage on a copy of the tiny run (the method's settings reaching the trainer are in
tests/test_wiring.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from collections import Counter

import pytest
import torch

from finloom.align.stage import prompt_rows, split_heldout, vllm_sampling
from finloom.errors import BadInput
from finloom.recipe import ChatSource
from finloom.stages import RunContext, model_stage_before, read_manifest
from finloom.training import load_log_history
from test_wiring import Caught, catch, copy_of_run

SHORT = {"align.train": {"max_steps": 2, "batch_size": 4, "seq_len": 96, "save_steps": 2, "logging_steps": 1}}


def _align(tiny_data, tiny_run, tmp_path, name: str, **overrides):
    """(run directory, runner) of a copy of the tiny run whose align stage trains two steps."""
    return copy_of_run(tiny_data, tiny_run, tmp_path, name, **SHORT, **overrides)[1:]


def _last(history: list[dict], key: str) -> float:
    return round([entry[key] for entry in history if key in entry][-1], 4)


def _rows(categories: dict[str, int]) -> list[dict]:
    return [{"id": f"{name}-{i}", "category": name} for name, count in categories.items() for i in range(count)]


@pytest.mark.parametrize(("share", "counts", "held"), [
    (0.2, {"mcq": 16, "constraints": 8, "single": 1}, {"mcq": 3, "constraints": 2}),  # round(3.2), round(1.6)
    (0.01, {"mcq": 16, "pair": 2}, {"mcq": 1, "pair": 1}),  # at least one where a category has two
    (0.5, {"mcq": 5}, {"mcq": 2}),  # round half to even
])
def test_each_category_holds_out_its_share(share, counts, held):
    rows = _rows(counts)
    train, heldout = split_heldout(rows, share, seed=1)
    assert {name: len(members) for name, members in heldout.items()} == held
    assert all(row["category"] == name for name, members in heldout.items() for row in members)
    held_ids = [row["id"] for members in heldout.values() for row in members]
    assert sorted(held_ids + [row["id"] for row in train]) == sorted(row["id"] for row in rows)
    assert Counter(row["category"] for row in train) == Counter(counts) - Counter(held)
    assert split_heldout(rows, share, seed=1) == (train, heldout)  # the seed fixes the draw
    assert any(split_heldout(rows, share, seed=seed)[1] != heldout for seed in range(2, 6))


def test_prompt_rows_carry_the_task_fields_and_a_default_category(tmp_path):
    path = tmp_path / "rl.jsonl"
    records = [{"id": "a", "category": "mcq", "answer": "B", "prompt": [{"role": "user", "content": "Pick one."}]},
               {"id": "b", "checks": [{"type": "max_words", "value": 3}], "prompt": "Be brief."},
               {"id": "c", "prompt": []}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    rows, rejects = prompt_rows([ChatSource(path=str(path))], Path)
    assert [row["id"] for row in rows] == ["a", "b"] and [reject["id"] for reject in rejects] == ["c"]
    assert rows[0]["prompt"] == records[0]["prompt"] and rows[1]["prompt"] == [{"role": "user", "content": "Be brief."}]
    assert [row["category"] for row in rows] == ["mcq", "general"]
    assert json.loads(rows[0]["reward_task"]) == {"category": "mcq", "answer": "B"}
    assert json.loads(rows[1]["reward_task"]) == {"checks": [{"type": "max_words", "value": 3}], "category": "general"}


def test_the_grpo_stage_reports_its_prompts_and_the_heldout_rewards_before_and_after(tiny_data, tiny_run, tmp_path):
    run_dir, runner = _align(tiny_data, tiny_run, tmp_path, "align_grpo_metrics",
                             **{"align.train.learning_rate": 0.05, "align.grpo.reweighting.eval_every": 1})
    (run_dir / "align" / "rewards.jsonl").write_text('{"left": "by an earlier run"}\n')
    assert runner.run(only="align", force=True) == {"align": "done"}
    metrics = read_manifest(run_dir, "align")["metrics"]
    rows = [json.loads(line) for line in (run_dir / "align" / "categories.jsonl").read_text().splitlines()]
    history = load_log_history(run_dir / "align" / "log_history.json")
    assert (metrics["method"], metrics["generation"]) == ("grpo", "hf")
    assert (metrics["prompts"], metrics["heldout_prompts"]) == (24 - 3 - 2, 3 + 2)
    assert metrics["heldout_reward_before"] == rows[0]["scores"] and metrics["heldout_reward_after"] == rows[-1]["scores"]
    assert [row["step"] for row in rows] == [0, 1, 2] and rows[-1]["final"]
    for name in ("reward", "kl", "kl_penalty", "sft_kl"):
        assert metrics[name] == _last(history, name), name
    logged = [json.loads(line) for line in (run_dir / "align" / "rewards.jsonl").read_text().splitlines()]
    assert logged and all("left" not in entry for entry in logged)  # a fresh run starts a fresh log


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_methods_report_their_data_and_last_logged_rewards(tiny_data, tiny_run, tmp_path, method):
    run_dir, runner = _align(tiny_data, tiny_run, tmp_path, f"align_{method}_metrics",
                             **{"align.method": method, "align.datasets": [{"path": "prefs.jsonl"}]})
    assert runner.run(only="align", force=True) == {"align": "done"}
    metrics = read_manifest(run_dir, "align")["metrics"]
    history = load_log_history(run_dir / "align" / "log_history.json")
    pairs = len((tiny_data / "prefs.jsonl").read_text().splitlines())
    assert metrics["method"] == method
    if method == "dpo":
        assert metrics["pairs"] == pairs
        assert metrics["reward_accuracy"] == _last(history, "rewards/accuracies")
    else:
        assert (metrics["answers"], metrics["good_answers"]) == (2 * pairs, pairs)
        assert metrics["kl"] == _last(history, "kl")
    assert metrics["reward_margin"] == _last(history, "rewards/margins")


def _conversations(path: Path, prefix: str, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{prefix} Q{i}"},
                                                     {"role": "assistant", "content": f"{prefix} A{i}"}]}) + "\n"
                            for i in range(count)), encoding="utf-8")


OWN = {"align.grpo.sft_datasets": [{"path": "own_sft.jsonl"}]}
PROMPTS = {"prompts.enabled": True, "prompts.sources": [{"path": "own_sft.jsonl"}]}  # its output is written below


@pytest.mark.parametrize(("extra", "expected"), [({}, 17 - 1), (PROMPTS, 17 - 1 + 2), (OWN, 3), ({**OWN, **PROMPTS}, 3)])
def test_the_sft_kl_reads_the_sft_stages_data_unless_given_its_own(tiny_data, tiny_run, tmp_path, monkeypatch, extra,
                                                                   expected):
    """The tiny recipe's sft.jsonl has 17 conversations, one without an answer; the prompt system's 2 conversations
    join them where it is on, and neither is read where the KL has its own data."""
    import finloom.align.stage as stage

    _conversations(tiny_data / "own_sft.jsonl", "own", 3)
    seen = catch(monkeypatch, stage, "FinloomGRPOTrainer")
    run_dir, runner = _align(tiny_data, tiny_run, tmp_path, "align_sft_rows", **extra)
    _conversations(run_dir / "prompts" / "sft.jsonl", "prompt system", 2)
    (run_dir / "prompts" / "manifest.json").write_text(json.dumps({"status": "done",
                                                                  "outputs": {"sft": "prompts/sft.jsonl"}}))
    with pytest.raises(Caught):
        runner.run(only="align", force=True)
    assert len((tiny_data / "sft.jsonl").read_text().splitlines()) == 17
    assert len(seen["sft_rows"]) == expected


def test_both_models_grow_to_a_tokenizer_with_more_tokens_than_their_embeddings(tiny_data, tiny_run, tmp_path,
                                                                                monkeypatch):
    """A tokenizer the chat template added tokens to (ChatML on a model without them) is longer than the model's
    embeddings; the policy and the reference grow to it before training. Here the input model is cut 3 rows short."""
    import finloom.align.stage as stage
    from finloom.llm.loading import load_causal_lm, load_tokenizer

    recipe, run_dir, runner = copy_of_run(tiny_data, tiny_run, tmp_path, "align_resize", **SHORT, **{
        "align.method": "dpo", "align.datasets": [{"path": "prefs.jsonl"}]})
    upstream = model_stage_before(recipe, "align")
    model_dir = run_dir / read_manifest(run_dir, upstream)["outputs"]["model"]
    model, tokenizer = load_causal_lm(model_dir), load_tokenizer(model_dir)
    model.resize_token_embeddings(len(tokenizer) - 3)
    model.save_pretrained(model_dir)
    seen = catch(monkeypatch, stage, "DPOTrainer")
    with pytest.raises(Caught):
        runner.run(only="align", force=True)
    for model in (seen["model"], seen["ref_model"]):
        assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_a_resumed_grpo_run_keeps_the_rewards_logged_before_it_and_a_fresh_one_starts_anew(tiny_data, tiny_run,
                                                                                            tmp_path, monkeypatch):
    import finloom.align.stage as stage

    recipe, run_dir, _ = copy_of_run(tiny_data, tiny_run, tmp_path, "align_rewards_log", **SHORT)
    log = run_dir / "align" / "rewards.jsonl"
    log.write_text('{"step": 1}\n', encoding="utf-8")
    catch(monkeypatch, stage, "FinloomGRPOTrainer")
    with pytest.raises(Caught):
        stage.run(recipe.align, RunContext(run_dir, recipe, "align", resume=True))
    assert log.read_text(encoding="utf-8") == '{"step": 1}\n'
    with pytest.raises(Caught):
        stage.run(recipe.align, RunContext(run_dir, recipe, "align"))
    assert not log.exists()


def test_data_that_cannot_train_names_the_field(tiny_data, tiny_run, tmp_path):
    (tiny_data / "rl_broken.jsonl").write_text('{"id": "x", "prompt": []}\n{"id": "y"}\n', encoding="utf-8")
    (tiny_data / "rl_single.jsonl").write_text(
        '{"id": "s", "category": "mcq", "answer": "A", "prompt": "A or B?"}\n'
        '{"id": "t", "category": "mcq", "answer": "B", "prompt": "B or A?"}\n', encoding="utf-8")
    run_dir, runner = _align(tiny_data, tiny_run, tmp_path, "align_broken",
                             **{"align.datasets": [{"path": "rl_broken.jsonl"}]})
    with pytest.raises(BadInput, match=r"align\.datasets: no usable prompts \(2 rejected, see .*rejects\.jsonl\)"):
        runner.run(only="align", force=True)
    assert len((run_dir / "align" / "rejects.jsonl").read_text().splitlines()) == 2
    run_dir, runner = _align(tiny_data, tiny_run, tmp_path / "all_held", "align_all_held",
                             **{"align.datasets": [{"path": "rl_single.jsonl"}],
                                "align.grpo.reweighting": {"holdout": 0.75}})  # round(1.5) of 2
    with pytest.raises(BadInput, match="align.datasets: every prompt was held out"):
        runner.run(only="align", force=True)


def test_an_rm_weight_scores_with_the_reward_stages_model(tiny_data, tiny_run, tmp_path, monkeypatch):
    import finloom.align.stage as stage
    from finloom.llm.reward_scorer import LocalRewardScorer

    seen = catch(monkeypatch, stage, "FinloomGRPOTrainer")
    run_dir, runner = _align(tiny_data, tiny_run, tmp_path, "align_rm", **{"align.grpo.rewards": {"rm": 0.5}})
    with pytest.raises(Caught):
        runner.run(only="align", force=True)
    reward = seen["reward_funcs"][0]
    assert reward.weights["rm"] == 0.5
    conversations = [[{"role": "user", "content": "What is a bond?"}, {"role": "assistant", "content": answer}]
                     for answer in ("A loan that pays interest.", "No idea.")]
    assert reward.scorer.score(conversations) == LocalRewardScorer(run_dir / "reward" / "model").score(conversations)


@pytest.mark.parametrize(("gpu", "installed", "auto"), [(True, True, True), (True, False, False),
                                                      (False, True, False), (False, False, False)])
def test_vllm_samples_where_asked_and_possible(gpu, installed, auto):
    """auto needs both a GPU and vLLM (vLLM alone, on a CPU machine with the gpu extra, is not enough); on without
    them is an error naming what is missing; off never samples with it."""
    assert vllm_sampling("auto", gpu, installed) is auto
    assert vllm_sampling("off", gpu, installed) is False
    if gpu and installed:
        assert vllm_sampling("on", gpu, installed) is True
    else:
        with pytest.raises(BadInput, match="align.grpo.vllm: on, but " + ("vLLM is not installed" if gpu
                                                                            else "no GPU is visible")):
            vllm_sampling("on", gpu, installed)


def test_the_stage_samples_with_hf_generate_here_and_logs_no_completion_tables(tiny_data, tiny_run, tmp_path,
                                                                              monkeypatch):
    import finloom.align.stage as stage

    monkeypatch.setattr(stage, "is_vllm_available", lambda: True)
    seen = catch(monkeypatch, stage, "FinloomGRPOTrainer")
    _, runner = _align(tiny_data, tiny_run, tmp_path, "align_vllm_auto")
    with pytest.raises(Caught):
        runner.run(only="align", force=True)
    assert seen["args"].use_vllm is False  # this machine has no GPU
    assert seen["args"].log_completions is False  # TRL's table of every completion would flood the console


@pytest.mark.parametrize("where", ["absolute", "zz_rm"])  # "zz_rm" sorts after "stage:reward", "/..." before
def test_a_given_reward_model_is_scored_with_not_the_reward_stages(tiny_data, tiny_run, tmp_path, monkeypatch, where):
    """align.grpo.reward_model names a directory (absolute, or relative to the recipe); the reward stage's model is
    only the default."""
    import finloom.align.stage as stage
    from finloom.llm.reward_scorer import LocalRewardScorer

    other = tmp_path / "other_rm" if where == "absolute" else tiny_data / where
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(tiny_run / "reward" / "model", other)
    scorer = LocalRewardScorer(other)
    with torch.no_grad():
        for parameter in scorer.model.parameters():
            parameter.mul_(-1.0)
    scorer.model.save_pretrained(other)
    seen = catch(monkeypatch, stage, "FinloomGRPOTrainer")
    _, runner = _align(tiny_data, tiny_run, tmp_path, "align_given_rm",
                       **{"align.grpo.rewards": {"rm": 0.5},
                          "align.grpo.reward_model": str(other) if where == "absolute" else where})
    with pytest.raises(Caught):
        runner.run(only="align", force=True)
    conversations = [[{"role": "user", "content": "What is a bond?"}, {"role": "assistant", "content": "A loan."}]]
    scores = seen["reward_funcs"][0].scorer.score(conversations)
    assert scores == LocalRewardScorer(other).score(conversations)
    assert scores != LocalRewardScorer(tiny_run / "reward" / "model").score(conversations)
