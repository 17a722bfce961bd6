"""Mix search: power-law fits, the recommendation rule, writing the ratio back, the command end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import finloom_cli
from finloom.experiments.mix_search import apply_ratio, fit_power_law, predict, recommend


def test_power_law_fit_recovers_known_parameters():
    tokens = [1e4, 3e4, 1e5, 3e5, 1e6]
    losses = [2.0 + 40.0 * t ** -0.45 for t in tokens]
    fit = fit_power_law(tokens, losses)
    assert fit["form"] == "E + A*D^-alpha"
    assert fit["E"] == pytest.approx(2.0, abs=0.02) and fit["alpha"] == pytest.approx(0.45, abs=0.02)
    assert predict(fit, 1e7) == pytest.approx(2.0 + 40.0 * 1e7 ** -0.45, rel=1e-3)
    two_points = fit_power_law([1e4, 1e5], [4.0, 3.0])  # too few points for three parameters: log-log line
    assert two_points["form"] == "A*D^-alpha" and predict(two_points, 1e5) == pytest.approx(3.0, rel=1e-6)


def test_recommendation_respects_the_general_budget():
    predictions = {0.1: {"finance_loss": 3.0, "general_loss": 2.00}, 0.3: {"finance_loss": 2.6, "general_loss": 2.03},
                   0.5: {"finance_loss": 2.4, "general_loss": 2.20}}
    assert recommend(predictions, start_general_loss=2.0, general_budget=0.01) == {"ratio": 0.1,
                                                                                  "within_general_budget": True}
    assert recommend(predictions, 2.0, 0.02)["ratio"] == 0.3
    assert recommend(predictions, 2.0, 0.15)["ratio"] == 0.5
    fallback = recommend(predictions, 1.5, 0.02)
    assert fallback["ratio"] == 0.1 and fallback["within_general_budget"] is False


def test_apply_ratio_rewrites_the_mix_and_keeps_a_backup(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ndata:\n  mix:\n    mixes:\n      pretrain: {shares: {general: 0.5, finance: 0.5}}\n")
    apply_ratio(path, 0.3)
    assert yaml.safe_load(path.read_text())["data"]["mix"]["mixes"]["pretrain"]["shares"] == {"general": 0.7,
                                                                                             "finance": 0.3}
    assert "0.5" in (tmp_path / "r.yaml.bak").read_text()


def test_mix_search_command_end_to_end(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    done = finloom_cli("pretrain", "mix-search", "--run-dir", str(run_dir), "--ratio", "0.2", "--ratio", "0.6",
                       "--steps", "8", "--eval-points", "4", "--mcq-items", "6", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recommended finance share" in done.stderr
    result = json.loads((run_dir / "mix_search" / "results.json").read_text())
    assert set(result["curves"]) == {"0.2", "0.6"}
    for ratio, curve in result["curves"].items():
        assert len(curve["tokens"]) == 4 and np.all(np.diff(curve["tokens"]) > 0)
        # the finance MCQ accuracy of this ratio's own model, over the 6 items --mcq-items asked for
        [rows] = [[json.loads(line) for line in path.read_text().splitlines()]
                  for path in (run_dir / "mix_search" / f"ratio_{float(ratio):g}" / "eval").glob("*.jsonl")]
        assert len(rows) == 6 and curve["finance_mcq"] == round(sum(r["correct"] for r in rows) / 6, 4)
    assert result["recommendation"]["ratio"] in (0.2, 0.6)
    assert result["metric_fit"]["points"] == 3  # start model + one per ratio
    report = finloom_cli("report", str(run_dir))
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Mix search (scaling laws)" in (run_dir / "report.html").read_text(encoding="utf-8")
    bad = finloom_cli("pretrain", "mix-search", "--run-dir", str(run_dir), "--ratio", "0.2")
    assert bad.returncode == 2 and "at least two distinct finance shares" in bad.stderr
