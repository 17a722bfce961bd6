"""The reward model's calibration on held-out pairs: accuracy, correlation and error of rewards vs scores, per source.

Apart from tests/test_reward.py so that it imports no torch: mutation testing runs it once per mutant."""

from __future__ import annotations

import math

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


def pair(reward_chosen, reward_rejected, score_chosen=None, score_rejected=None, source="a"):
    return {"source": source, "reward_chosen": reward_chosen, "reward_rejected": reward_rejected,
            "score_chosen": score_chosen, "score_rejected": score_rejected}


def pearson_by_hand(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return cov / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))


def test_every_statistic_is_rounded_to_four_places_and_ties_are_misordered():
    """Values whose 3rd, 4th and 5th place roundings all differ; sources equal to, not the same object as, each
    other (as read from a file); a tied pair counts as wrongly ordered."""
    news = ["".join(["news", ".jsonl"]) for _ in range(3)]
    rows = [pair(0.7, 0.2, 0.9, 0.3, news[0]), pair(0.1, 0.45, 0.4, 0.6, news[1]), pair(0.8, 0.35, 0.7, 0.2, news[2]),
            pair(0.5, 0.5, source="tied")]
    result = calibration(rows)
    rewards, scores = [0.7, 0.1, 0.8, 0.2, 0.45, 0.35], [0.9, 0.4, 0.7, 0.3, 0.6, 0.2]  # chosen, then rejected
    assert result["eval_accuracy"] == 0.5 and result["scored_answers"] == 6
    assert result["score_pearson"] == round(pearson_by_hand(rewards, scores), 4) == 0.7897
    # ranks: rewards 5,1,6,2,4,3 vs scores 6,3,5,2,4,1: squared rank differences sum to 10, 1 - 6 * 10 / (6 * 35)
    assert result["score_spearman"] == 0.7143
    assert result["score_mae"] == 0.1667  # (0.2 + 0.3 + 0.1 + 0.1 + 0.15 + 0.15) / 6
    assert result["by_source"] == {
        "news.jsonl": {"pairs": 3, "accuracy": 0.6667, "reward_mean": 0.4333,  # 2.6 / 6
                       "reward_std": round(math.sqrt(sum((r - 2.6 / 6) ** 2 for r in rewards) / 6), 4),
                       "chosen_mean": 0.5333, "rejected_mean": 0.3333},  # 1.6 / 3, 1.0 / 3
        "tied": {"pairs": 1, "accuracy": 0.0, "reward_mean": 0.5, "reward_std": 0.0, "chosen_mean": 0.5,
                 "rejected_mean": 0.5},
    }
    assert result["by_source"]["news.jsonl"]["reward_std"] == 0.2511


@pytest.mark.parametrize("rows, computed", [
    ([pair(0.9, 0.1, 0.8, 0.2)], False),  # 2 scored answers
    ([pair(0.9, 0.1, 0.8, 0.2), pair(0.5, 0.3, 0.6, None)], True),  # 3: the least with a correlation
    ([pair(0.9, 0.1, 0.5, 0.5), pair(0.6, 0.3, 0.5, 0.5)], False),  # every score the same
    ([pair(0.5, 0.5, 0.8, 0.2), pair(0.5, 0.5, 0.6, 0.3)], False),  # every reward the same
    ([pair(1.0, 0.0, 0.8, 0.2), pair(1.0, 0.0, 0.2, 0.2)], True),  # two different rewards, two different scores
], ids=["one-scored-pair", "three-scored-answers", "constant-scores", "constant-rewards", "two-values-each"])
def test_correlations_need_three_scored_answers_and_varying_rewards_and_scores(rows, computed):
    result = calibration(rows)
    scored = [(r["reward_chosen"], r["score_chosen"]) for r in rows] + [(r["reward_rejected"], r["score_rejected"])
                                                                        for r in rows]
    rewards, scores = zip(*[(reward, score) for reward, score in scored if score is not None])
    assert result["scored_answers"] == len(scores)
    assert result["score_mae"] == round(sum(abs(r - s) for r, s in zip(rewards, scores)) / len(scores), 4)
    if computed:
        assert result["score_pearson"] == round(pearson_by_hand(rewards, scores), 4)
        assert result["score_spearman"] is not None
    else:
        assert result["score_pearson"] is None and result["score_spearman"] is None


def test_without_scores_only_accuracy_and_rewards():
    result = calibration([pair(0.9, 0.1), pair(0.2, 0.4)])
    assert result["eval_accuracy"] == 0.5 and result["scored_answers"] == 0
    assert result["score_pearson"] is None and result["score_spearman"] is None and result["score_mae"] is None
    assert result["by_source"]["a"]["reward_mean"] == 0.4
