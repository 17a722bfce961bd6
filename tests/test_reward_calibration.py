"""The reward model's calibration on held-out pairs: accuracy, correlation and error of rewards vs scores, per source.

Apart from tests/test_reward.py so that it imports no torch: mutation testing runs it once per mutant."""

from __future__ import annotations

import pytest

from finloom.reward.calibration import calibration


def test_calibration_from_heldout_rewards():
    rows = [{"source": "a", "reward_chosen": 0.9, "reward_rejected": 0.1, "score_chosen": 0.8, "score_rejected": 0.2},
            {"source": "a", "reward_chosen": 0.4, "reward_rejected": 0.6, "score_chosen": 0.6, "score_rejected": 0.3},
            {"source": "b", "reward_chosen": 2.0, "reward_rejected": 1.0, "score_chosen": None, "score_rejected": None}]
    result = calibration(rows)
    assert result["eval_accuracy"] == round(2 / 3, 4) and result["scored_answers"] == 4
    assert result["score_spearman"] == pytest.approx(0.8)  # ranks: rewards 4,1,2,3 vs scores 4,1,3,2
    assert result["score_mae"] == pytest.approx((0.1 + 0.1 + 0.2 + 0.3) / 4)
    assert result["by_source"]["b"] == {"pairs": 1, "accuracy": 1.0, "reward_mean": 1.5, "reward_std": 0.5,
                                        "chosen_mean": 2.0, "rejected_mean": 1.0}
    assert result["by_source"]["a"]["accuracy"] == 0.5
