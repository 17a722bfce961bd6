"""The report's figures, each returned as base64 PNG for inline embedding (the page needs no network)."""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from finloom.training import load_log_history  # noqa: E402

FINANCE, GENERAL = "#dc2626", "#2563eb"


def png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def loss_curves(run_dir: Path, stages: list[str]) -> str | None:
    curves = {}
    for stage in stages:
        history = load_log_history(run_dir / stage / "log_history.json")
        points = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
        if points:
            curves[stage] = points
    if not curves:
        return None
    figure, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3), squeeze=False)
    for axis, (stage, points) in zip(axes[0], curves.items()):
        axis.plot([p[0] for p in points], [p[1] for p in points], color="#2563eb")
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return png(figure)


def eval_plots(results: dict, domains: dict[str, str]) -> str | None:
    """Held-out perplexity and the first finance and general MCQ benchmark's accuracy (with chance) by model."""
    models = list(results)
    mcq = {d: next((n for n, dom in domains.items() if dom == d and any("chance" in results[m].get(n, {})
                                                                      for m in models)), None)
           for d in ("finance", "general")}
    if not models:
        return None
    figure, (ppl_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label, color in (("finance_ppl", "finance", "#dc2626"), ("general_ppl", "general", "#2563eb")):
        values = [results[m].get(key, {}).get("perplexity") for m in models]
        if any(v is not None for v in values):
            ppl_axis.plot(models, values, marker="o", label=label, color=color)
    ppl_axis.set_title("Held-out perplexity by stage (lower is better)")
    ppl_axis.set_yscale("log")
    ppl_axis.legend()
    ppl_axis.grid(alpha=0.3)
    width = 0.38
    for offset, (key, label, color) in enumerate(
        ((mcq["finance"], mcq["finance"], FINANCE), (mcq["general"], mcq["general"], GENERAL))
    ):
        if key is None:
            continue
        values = [results[m].get(key, {}).get("accuracy") or 0 for m in models]
        positions = [i + (offset - 0.5) * width for i in range(len(models))]
        acc_axis.bar(positions, values, width, label=label, color=color)
        chance = [results[m].get(key, {}).get("chance") for m in models]
        if all(c is not None for c in chance):
            acc_axis.hlines(chance, [p - width / 2 for p in positions], [p + width / 2 for p in positions],
                            colors="black", linestyles="dashed", label="chance" if offset == 0 else None)
    acc_axis.set_xticks(range(len(models)), models)
    acc_axis.set_title("MCQ accuracy by stage")
    acc_axis.set_ylim(0, 1)
    acc_axis.legend()
    acc_axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return png(figure)


def funnel_plot(steps: list[dict]) -> str:
    labels = ["input"] + [step["step"] for step in steps]
    counts = [steps[0]["in"]] + [step["kept"] for step in steps]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(labels) + 1))
    axis.barh(labels[::-1], counts[::-1], color="#2563eb")
    for y, count in enumerate(counts[::-1]):
        axis.text(count, y, f" {count:,}", va="center", fontsize=8)
    axis.set_xlabel("documents remaining")
    axis.set_title("Documents remaining after each step")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return png(figure)


def heldout_curves(run_dir: Path) -> str | None:
    history = load_log_history(run_dir / "pretrain" / "log_history.json")
    series = {domain: [(e["step"], e[f"eval_{domain}_ppl"]) for e in history if f"eval_{domain}_ppl" in e]
              for domain in ("finance", "general")}
    if not any(series.values()):
        return None
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for domain, color in (("finance", "#dc2626"), ("general", "#2563eb")):
        if series[domain]:
            axis.plot([p[0] for p in series[domain]], [p[1] for p in series[domain]], marker="o", color=color,
                      label=f"{domain} held-out PPL")
    axis.set_xlabel("pretrain step")
    axis.set_ylabel("perplexity")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return png(figure)


def forgetting_plot(rows: list[dict]) -> str | None:
    """General perplexity change against the finance gain (in nats) per variant, with 95% intervals over seeds;
    self-constraint variants joined in order of lambda per finance token: the lambda curve."""
    points = [r for r in rows if r["variant"] != "start" and r.get("general_ppl_change") is not None
              and r.get("finance_gain_share_nats") is not None]
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for row in points:
        x, y = row["finance_gain_share_nats"] * 100, row["general_ppl_change"] * 100
        axis.errorbar(x, y, xerr=(row.get("finance_gain_share_nats_ci95") or 0) * 100,
                      yerr=(row.get("general_ppl_change_ci95") or 0) * 100, fmt="o", capsize=3)
        axis.annotate(row["variant"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    curve = sorted((r for r in points if r.get("lambda_per_finance_token") is not None),
                   key=lambda r: r["lambda_per_finance_token"])
    if len(curve) > 1:
        axis.plot([r["finance_gain_share_nats"] * 100 for r in curve], [r["general_ppl_change"] * 100 for r in curve],
                  color="grey", linewidth=0.8, linestyle="--", label="self-constraint, by lambda")
        axis.legend(fontsize=8)
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_xlabel("finance gain, share of finance-only CE's (% of nats)  - higher is better")
    axis.set_ylabel("general perplexity change vs start (%)  - lower is better")
    axis.set_title("Forgetting: finance learned vs general lost (95% intervals over seeds)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return png(figure)


def mix_search_plot(result: dict) -> str:
    from finloom.experiments.mix_search import predict

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, domain in zip(axes, ("finance", "general")):
        for ratio, curve in result["curves"].items():
            (line,) = axis.plot(curve["tokens"], curve[f"{domain}_loss"], "o", label=f"finance share {ratio}")
            fit = result["fits"][ratio][domain]
            grid = [curve["tokens"][0] * (result["target_tokens"] / curve["tokens"][0]) ** (i / 40) for i in range(41)]
            axis.plot(grid, [predict(fit, t) for t in grid], "-", color=line.get_color(), alpha=0.6)
        axis.axhline(result["start"][f"{domain}_loss"], color="black", linestyle=":", label="start model")
        axis.axvline(result["target_tokens"], color="grey", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("tokens")
        axis.set_ylabel(f"held-out {domain} loss")
        axis.set_title(f"{domain}: points and L(D) = E + A D^-alpha")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return png(figure)


def stage_timeline(manifests: dict[str, dict]) -> str | None:
    """When each stage ran, as bars on one time axis (minutes from the first start)."""
    spans = []
    for stage, manifest in manifests.items():
        if manifest.get("started_at") and manifest.get("finished_at"):
            spans.append((stage, datetime.fromisoformat(manifest["started_at"]),
                          datetime.fromisoformat(manifest["finished_at"])))
    if not spans:
        return None
    origin = min(start for _, start, _ in spans)
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(spans) + 1))
    for row, (stage, start, end) in enumerate(reversed(spans)):
        left = (start - origin).total_seconds() / 60
        width = max((end - start).total_seconds() / 60, 0.02)
        axis.barh(row, width, left=left, color=GENERAL)
        axis.text(left + width, row, f" {width:.1f} min", va="center", fontsize=8)
    axis.set_yticks(range(len(spans)), [stage for stage, _, _ in reversed(spans)])
    axis.set_xlabel("minutes since the run started")
    axis.set_title("Stage timeline")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return png(figure)


def domain_accuracy(results: dict, benchmarks: dict[str, str]) -> str | None:
    """Mean accuracy of the finance and of the general benchmarks, per model: gains should not cost the other side."""
    models = list(results)
    series = {}
    for domain in ("finance", "general"):
        names = [name for name, d in benchmarks.items() if d == domain]
        values = []
        for model in models:
            scores = [results[model][n]["accuracy"] for n in names
                      if n in results[model] and results[model][n].get("accuracy") is not None]
            values.append(sum(scores) / len(scores) if scores else None)
        if any(v is not None for v in values):
            series[domain] = values
    if not series:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for domain, values in series.items():
        axis.plot(models, [v if v is not None else math.nan for v in values], marker="o", label=f"{domain} benchmarks",
                  color=FINANCE if domain == "finance" else GENERAL)
    axis.set_ylim(0, 1)
    axis.set_ylabel("mean accuracy (log-likelihood)")
    axis.set_title("Finance vs general across stages")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return png(figure)


def certification_bars(results: dict, benchmark: str) -> str | None:
    """Accuracy per certification (sub-task) of one benchmark, one bar per model."""
    tasks = sorted({t for r in results.values() for t in r.get(benchmark, {}).get("by_task", {})})
    models = [m for m in results if benchmark in results[m]]
    if not tasks or not models:
        return None
    figure, axis = plt.subplots(figsize=(max(6.5, 0.6 * len(tasks) * len(models) / 2), 3.6))
    width = 0.8 / len(models)
    for offset, model in enumerate(models):
        values = [results[model][benchmark]["by_task"].get(task) or 0 for task in tasks]
        axis.bar([i + offset * width - 0.4 + width / 2 for i in range(len(tasks))], values, width, label=model)
    axis.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title(f"{benchmark}: accuracy by certification")
    axis.legend(fontsize=7, ncols=min(len(models), 4))
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return png(figure)


def scenario_radar(results: dict, benchmark: str) -> str | None:
    """Usable rate per scenario family, one polygon per model (models that were judged)."""
    judged = {m: r[benchmark]["by_family"] for m, r in results.items()
              if r.get(benchmark, {}).get("by_family")}
    families = sorted({f for by_family in judged.values() for f in by_family})
    if len(families) < 3:
        return None
    angles = [2 * math.pi * i / len(families) for i in range(len(families))] + [0.0]
    figure = plt.figure(figsize=(5.5, 5.5))
    axis = figure.add_subplot(projection="polar")
    for model, by_family in judged.items():
        values = [by_family.get(f) or 0 for f in families]
        axis.plot(angles, values + values[:1], label=model)
        axis.fill(angles, values + values[:1], alpha=0.1)
    axis.set_xticks(angles[:-1], [f.replace("_", " ") for f in families], fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_title(f"{benchmark}: usable rate by scenario family")
    axis.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.25, -0.1))
    figure.tight_layout()
    return png(figure)


def tag_distribution(distribution: dict[str, dict[str, int]]) -> str | None:
    """One bar chart per tag dimension: how many kept prompts carry each value."""
    dimensions = [d for d, counts in distribution.items() if counts]
    if not dimensions:
        return None
    columns = 3
    rows = math.ceil(len(dimensions) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
    for axis, dimension in zip(axes.flat, dimensions):
        counts = sorted(distribution[dimension].items(), key=lambda item: item[1])[-12:]
        axis.barh([value for value, _ in counts], [count for _, count in counts], color=FINANCE)
        axis.set_title(dimension, fontsize=10)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3, axis="x")
    for axis in list(axes.flat)[len(dimensions):]:
        axis.axis("off")
    figure.suptitle("Kept prompts by tag (at most 12 values per dimension)")
    figure.tight_layout()
    return png(figure)


def reward_calibration(rows: list[dict]) -> str | None:
    """Held-out rewards against the pairs' absolute scores (chosen and rejected answers), and the reward margin
    of every held-out pair: a calibrated reward model puts the points on a rising line and most margins above 0."""
    if not rows:
        return None
    figure, (scatter, margins) = plt.subplots(1, 2, figsize=(8, 3))
    for key, colour, label in (("chosen", FINANCE, "chosen"), ("rejected", GENERAL, "rejected")):
        points = [(r[f"score_{key}"], r[f"reward_{key}"]) for r in rows if r[f"score_{key}"] is not None]
        if points:
            scatter.scatter([p[0] for p in points], [p[1] for p in points], s=12, color=colour, label=label, alpha=0.7)
    scatter.set_xlabel("absolute score (normalised)")
    scatter.set_ylabel("reward")
    scatter.set_title("reward vs score (scored pairs)")
    if scatter.collections:
        scatter.legend(fontsize=8)
    scatter.grid(alpha=0.3)
    margins.hist([r["reward_chosen"] - r["reward_rejected"] for r in rows], bins=20, color="#6b7280")
    margins.axvline(0, color="black", linewidth=1)
    margins.set_xlabel("reward(chosen) - reward(rejected)")
    margins.set_title("held-out pair margins")
    figure.tight_layout()
    return png(figure)


def rl_curves(history: list[dict], categories: list[dict]) -> str | None:
    """Online RL at a glance: the reward and each of its components per logged step, the KL terms, and the
    held-out reward and sampling weight of every prompt category at each evaluation."""
    steps = [entry for entry in history if "reward" in entry]
    if not steps and not categories:
        return None
    figure, (rewards, kls, heldout, weights) = plt.subplots(1, 4, figsize=(16, 3.2))
    names = sorted({key for entry in steps for key in entry if key.startswith("rewards/") and key.count("/") == 1})
    rewards.plot([e["step"] for e in steps], [e["reward"] for e in steps], color="black", linewidth=2, label="reward")
    for name in names:
        points = [(e["step"], e[name]) for e in steps if name in e]
        rewards.plot([p[0] for p in points], [p[1] for p in points], label=name.removeprefix("rewards/"), alpha=0.8)
    rewards.set_title("training reward (sampled answers)")
    for key, label in (("kl", "KL (top-k, per token)"), ("kl_penalty", "KL penalty (per answer)"),
                       ("sft_kl", "KL on SFT data")):
        points = [(e["step"], e[key]) for e in history if key in e]
        if points:
            kls.plot([p[0] for p in points], [p[1] for p in points], label=label)
    kls.set_title("KL to the pre-RL model")
    for axis, field, title in ((heldout, "scores", "held-out reward by category"),
                               (weights, "weights", "prompt sampling weight by category")):
        for name in sorted({n for row in categories for n in row[field]}):
            points = [(row["step"], row[field][name]) for row in categories if name in row[field]]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        axis.set_title(title)
    for axis in (rewards, kls, heldout, weights):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    return png(figure)


def pas_comparison(evaluation: dict) -> str | None:
    """The scenario rates with and without PAS side by side, and the share of pairwise wins."""
    rates = [(label, key) for label, key in (("rule-checked pass", "rule_pass_rate"), ("judged usable", "usable_rate"))
             if evaluation.get("without", {}).get(key) is not None]
    if not rates and evaluation.get("win_rate") is None:
        return None
    figure, axis = plt.subplots(figsize=(6, 3))
    for offset, (side, colour) in enumerate((("without", "#999999"), ("with", "#2a7ab0"))):
        axis.bar([n + offset * 0.38 for n in range(len(rates))], [evaluation[side][key] for _, key in rates], 0.38,
                 label=f"{side} PAS", color=colour)
    labels = [label for label, _ in rates]
    if evaluation.get("win_rate") is not None:
        axis.bar([len(rates) + 0.19], [evaluation["win_rate"]], 0.38, color="#2a7ab0")
        labels.append("pairwise win rate (with)")
    axis.set_xticks([n + 0.19 for n in range(len(labels))], labels)
    axis.set_ylim(0, 1)
    axis.axhline(0.5, color="black", linewidth=0.5, linestyle=":")
    axis.legend(fontsize=8)
    axis.set_title("scenario answers with vs without PAS")
    figure.tight_layout()
    return png(figure)
