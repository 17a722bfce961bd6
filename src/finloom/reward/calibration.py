"""How far a reward model can be trusted, from its rewards on held-out pairs.

Accuracy says whether it orders a pair's answers as the data does; that is all Bradley-Terry trains. The
scores say more where pairs carry them: the correlation of rewards with the absolute scores (is a better
answer rewarded more, across prompts?) and their mean absolute error (is the reward's level the score's,
which only the squared-error term asks for). The distribution per source shows a source the model rewards
differently from the others.
"""

from __future__ import annotations

import statistics

from scipy.stats import pearsonr, spearmanr


def calibration(rows: list[dict]) -> dict:
    """``eval_accuracy``, ``score_pearson``, ``score_spearman``, ``score_mae`` (None under 3 scored answers) and
    ``by_source`` from rows of ``reward_chosen``, ``reward_rejected``, ``score_chosen``, ``score_rejected``
    (None without scores) and ``source``."""
    pairs = [(r["reward_chosen"], r["score_chosen"]) for r in rows] + [(r["reward_rejected"], r["score_rejected"]) for r in rows]
    scored = [(reward, score) for reward, score in pairs if score is not None]
    rewards, scores = [p[0] for p in scored], [p[1] for p in scored]
    enough = len(scored) >= 3 and len(set(scores)) > 1 and len(set(rewards)) > 1
    by_source: dict[str, dict] = {}
    for source in sorted({r["source"] for r in rows}):
        mine = [r for r in rows if r["source"] == source]
        answers = [r["reward_chosen"] for r in mine] + [r["reward_rejected"] for r in mine]
        by_source[source] = {"pairs": len(mine), "accuracy": _accuracy(mine),
                             "reward_mean": round(statistics.fmean(answers), 4),
                             "reward_std": round(statistics.pstdev(answers), 4),
                             "chosen_mean": round(statistics.fmean(r["reward_chosen"] for r in mine), 4),
                             "rejected_mean": round(statistics.fmean(r["reward_rejected"] for r in mine), 4)}
    return {
        "eval_accuracy": _accuracy(rows),
        "scored_answers": len(scored),
        "score_pearson": round(float(pearsonr(rewards, scores).statistic), 4) if enough else None,
        "score_spearman": round(float(spearmanr(rewards, scores).statistic), 4) if enough else None,
        "score_mae": round(statistics.fmean(abs(r - s) for r, s in scored), 4) if scored else None,
        "by_source": by_source,
    }


def _accuracy(rows: list[dict]) -> float:
    return round(sum(r["reward_chosen"] > r["reward_rejected"] for r in rows) / len(rows), 4)
