"""The forgetting experiment stage: every variant from the same start, evaluated alike, with a verdict."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from conftest import finloom_cli, tiny_recipe, write_recipe
from finloom.experiments.forgetting import current_eval_results, lambda_per_finance_token, summarise, verdict
from finloom.recipe import ForgettingSection, ForgettingVariant, ObjectiveSettings, load_recipe
from finloom.runner import Runner
from finloom.stages import read_manifest


def _seed(finance_ppl, general_ppl):
    return {"finance_ppl": finance_ppl, "general_ppl": general_ppl, "finance_nll": math.log(finance_ppl),
            "general_nll": math.log(general_ppl)}


def test_a_variant_summary_is_a_mean_with_its_interval_and_gain_shares_by_hand():
    start = _seed(100.0, 50.0)
    finance_only = [_seed(60.0, 70.0), _seed(64.0, 72.0)]
    row = summarise("self_constraint_full", [_seed(70.0, 50.5), _seed(66.0, 51.5)], start, finance_only, 4.0)
    assert row["seeds"] == 2 and row["lambda_per_finance_token"] == 4.0
    assert row["general_ppl_change"] == pytest.approx(0.02)  # (1% + 3%) / 2
    t = stats.t.ppf(0.975, 1)  # two seeds: one degree of freedom
    assert row["general_ppl_change_ci95"] == pytest.approx(round(t * 0.01 * math.sqrt(2) / math.sqrt(2), 4))
    assert row["finance_gain_share"] == pytest.approx(round(((30 / 38) + (34 / 38)) / 2, 4))
    finance_only_nats = math.log(100) - (math.log(60) + math.log(64)) / 2
    nats = [(math.log(100) - math.log(v)) / finance_only_nats for v in (70.0, 66.0)]
    assert row["finance_gain_share_nats"] == pytest.approx(round(sum(nats) / 2, 4))
    assert row["finance_gain_share_nats"] < row["finance_gain_share"]  # perplexity's convexity inflates the share
    single = summarise("replay_ce", [_seed(70.0, 52.0)], start, finance_only, None)
    assert "general_ppl_change_ci95" not in single and "lambda_per_finance_token" not in single


def test_lambda_per_finance_token_follows_the_mix():
    variant = ForgettingVariant(name="self_constraint_full", objective=ObjectiveSettings(kl_lambda=1.0))
    assert lambda_per_finance_token(variant, {"general": 0.8, "finance": 0.2}) == pytest.approx(4.0)
    assert lambda_per_finance_token(variant, {"general": 0.5, "finance": 0.5}) == pytest.approx(1.0)
    replay = ForgettingVariant(name="replay_ce", objective=ObjectiveSettings(type="ce"))
    assert lambda_per_finance_token(replay, {"general": 0.8, "finance": 0.2}) is None


def test_verdict_checks_each_target_with_numbers():
    rows = [
        {"variant": "start", "finance_ppl": 100.0, "general_ppl": 50.0},
        {"variant": "finance_only_ce", "finance_ppl": 60.0, "general_ppl": 70.0, "general_ppl_change": 0.4,
         "finance_gain_share": 1.0, "finance_gain_share_nats": 1.0},
        {"variant": "replay_ce", "finance_ppl": 70.0, "general_ppl": 52.0, "general_ppl_change": 0.04,
         "finance_gain_share": 0.75, "finance_gain_share_nats": 0.7},
        {"variant": "self_constraint_full", "finance_ppl": 63.0, "general_ppl": 50.5, "general_ppl_change": 0.01,
         "general_ppl_change_ci95": 0.015, "finance_gain_share": 0.925, "finance_gain_share_nats": 0.9},
        {"variant": "self_constraint_top500", "finance_ppl": 80.0, "general_ppl": 50.2, "general_ppl_change": 0.004,
         "general_ppl_change_ci95": 0.03, "finance_gain_share": 0.5, "finance_gain_share_nats": 0.44},
    ]
    checks = verdict(rows, ForgettingSection())
    full, top = checks["self_constraint_full"], checks["self_constraint_top500"]
    assert full["finance_gain_share"] == 0.925 and full["all_met"] is True and full["beats_replay"] is True
    assert full["resolved"] is True and top["resolved"] is False  # 1.5% < 2% tolerance, 3% is not
    assert top["finance_gain_share"] == 0.5 and top["finance_gain_enough"] is False and top["all_met"] is False
    assert top["general_within_tolerance"] is True
    lower = verdict([rows[0], rows[1], {**rows[3], "general_ppl": 45.0, "general_ppl_change": -0.1}], ForgettingSection())
    assert lower["self_constraint_full"]["general_within_tolerance"] is True  # general PPL falling is not forgetting


def test_forgetting_stage_trains_variants_reuses_pretrain_and_reports(tiny_data, tmp_path):
    recipe = tiny_recipe(**{"forgetting.enabled": True, "forgetting.seeds": 1})
    path = write_recipe(tiny_data, recipe, "forgetting.yaml")
    run_dir = tmp_path / "run"
    Runner(load_recipe(path), run_dir).run()
    manifest = read_manifest(run_dir, "forgetting")
    rows = {row["variant"]: row for row in manifest["metrics"]["rows"]}
    assert list(rows) == ["start", "finance_only_ce", "replay_ce", "self_constraint_full", "self_constraint_top500"]
    per_seed = json.loads((run_dir / "forgetting" / "results.json").read_text())["per_seed"]
    assert per_seed["self_constraint_full"][0]["reused"] == "pretrain stage"  # same objective, mix, budget as pretrain
    eval_results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert rows["start"]["finance_ppl"] == eval_results["base"]["finance_ppl"]["perplexity"]
    assert rows["self_constraint_full"]["general_ppl"] == eval_results["pretrain"]["general_ppl"]["perplexity"]
    for name in ("finance_only_ce", "replay_ce", "self_constraint_top500"):
        assert (run_dir / "forgetting" / name / "seed0" / "model" / "model.safetensors").exists()
        assert rows[name]["step_time_s"] > 0
        assert rows[name]["finance_ppl_change"] == pytest.approx(
            rows[name]["finance_ppl"] / rows["start"]["finance_ppl"] - 1, abs=1e-4)
    finance_only = json.loads((run_dir / "forgetting" / "finance_only_ce" / "seed0" / "model" / "config.json").read_text())
    assert finance_only["vocab_size"] == 400
    assert set(manifest["metrics"]["verdict"]) == {"self_constraint_full", "self_constraint_top500"}
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Forgetting experiment" in page and "Forgetting targets" in page

    # A finished variant is not trained again when the stage re-runs (e.g. after an interruption).
    marker = run_dir / "forgetting" / "replay_ce" / "seed0" / "result.json"
    before = marker.stat().st_mtime_ns
    manifest_path = run_dir / "forgetting" / "manifest.json"
    stored = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**stored, "status": "interrupted"}))
    done = finloom_cli("stage", "forgetting", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.stat().st_mtime_ns == before

    # The eval stage's numbers are reused only while they are of the models on disk.
    loaded = load_recipe(path)
    assert current_eval_results(run_dir, loaded) == eval_results
    without_eval = tiny_recipe(**{"forgetting.enabled": True, "eval.enabled": False})
    assert current_eval_results(run_dir, load_recipe(write_recipe(tiny_data, without_eval, "no_eval.yaml"))) == {}
    eval_manifest = run_dir / "eval" / "manifest.json"
    stale = json.loads(eval_manifest.read_text())
    stale["inputs"]["stages"]["pretrain"] = "an earlier pretrain"
    eval_manifest.write_text(json.dumps(stale))
    assert current_eval_results(run_dir, loaded) == {}
