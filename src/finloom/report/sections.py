"""The report's sections, each built from what one stage recorded: the data funnel, evaluation, studies."""

from __future__ import annotations

from finloom.eval.results import headline
from finloom.report import plots
from finloom.report.page import Sections, table
from finloom.stages import MODEL_STAGES


def summary(manifests: dict[str, dict], results: dict) -> dict:
    """What the run did and whether it worked, in a few numbers: documents in and kept; the final model against the
    start model on finance and general (MCQ accuracy with its chance level, held-out perplexity); the forgetting
    verdict where the study ran; the run's wall time."""
    out: dict = {}
    funnel = manifests.get("data", {}).get("metrics", {}).get("funnel")
    if funnel:
        out["documents"] = {"read": funnel["read"], "rejected": funnel["rejected"],
                            "kept_for_training": sum(v for k, v in funnel["kept"].items() if not k.endswith("_heldout"))}
    model_stages = [stage for stage in MODEL_STAGES if stage in results]
    start = "start" if "start" in results else (model_stages[0] if model_stages else None)
    final = model_stages[-1] if model_stages else None
    if start and final and start != final:
        out["models"] = {"start": start, "final": final}
        for domain in ("finance", "general"):
            mcq = next((name for name, value in results[final].items() if isinstance(value, dict)
                        and value.get("domain") == domain and "chance" in value and not name.endswith("_gen")), None)
            entry = {}
            if mcq:
                before, after = results[start].get(mcq, {}), results[final][mcq]
                entry.update(benchmark=mcq, start_accuracy=before.get("accuracy"), final_accuracy=after["accuracy"],
                             chance=after["chance"])
            ppl = f"{domain}_ppl"
            if ppl in results[final] and ppl in results[start]:
                before, after = results[start][ppl]["perplexity"], results[final][ppl]["perplexity"]
                entry.update(start_perplexity=before, final_perplexity=after, perplexity_change=round(after / before - 1, 4))
            if entry:
                out[domain] = entry
    verdict = manifests.get("forgetting", {}).get("metrics", {}).get("verdict", {})
    if verdict and "note" not in verdict:
        out["forgetting"] = {name: check["all_met"] for name, check in verdict.items()}
    spans = [(m["started_at"], m["finished_at"]) for m in manifests.values() if m.get("started_at") and m.get("finished_at")]
    if spans:
        from datetime import datetime

        first, last = min(s for s, _ in spans), max(f for _, f in spans)
        out["wall_time_s"] = round((datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds(), 1)
    return out


def summary_section(facts: dict) -> Sections:
    rows = []
    if "documents" in facts:
        d = facts["documents"]
        rows.append(["documents", f"{d['read']} read, {d['rejected']} rejected, {d['kept_for_training']} kept for training"])
    for domain in ("finance", "general"):
        entry = facts.get(domain)
        if not entry:
            continue
        parts = []
        if "benchmark" in entry:
            change = (entry["final_accuracy"] - entry["start_accuracy"]) if entry["start_accuracy"] is not None else None
            parts.append(f"{entry['benchmark']} {entry['start_accuracy']} -> {entry['final_accuracy']}"
                         + (f" ({change:+.3f})" if change is not None else "") + f", chance {entry['chance']}")
        if "final_perplexity" in entry:
            parts.append(f"perplexity {entry['start_perplexity']:.4g} -> {entry['final_perplexity']:.4g} "
                         f"({entry['perplexity_change']:+.1%})")
        rows.append([f"{domain}: {facts['models']['start']} -> {facts['models']['final']}", "; ".join(parts)])
    if "forgetting" in facts:
        met = [name for name, ok in facts["forgetting"].items() if ok]
        rows.append(["forgetting targets", f"met by {', '.join(met)}" if met else
                     f"met by none of {len(facts['forgetting'])} self-constraint variants (see below)"])
    if "wall_time_s" in facts:
        rows.append(["wall time", f"{facts['wall_time_s'] / 60:.1f} min"])
    if not rows:
        return []
    return [("Summary", table(["", ""], rows), None,
             "What the run did and whether it worked; every number is read from the stage manifests below.")]


def data_sections(metrics: dict) -> Sections:
    """(heading, table, plot, note) for the data stage: funnel, steps, sources, mixes, classifiers."""
    sections = []
    funnel, tokens = metrics.get("funnel"), metrics.get("tokens", {})
    if funnel:
        rows = [["input records", funnel.get("input_records"), None], ["read", funnel["read"], None],
                ["rejected (malformed input)", funnel["rejected"], None]]
        rows += [[f"removed: {reason}", count, tokens.get("removed", {}).get(reason)]
                 for reason, count in funnel["removed"].items()]
        rows += [[f"kept: {domain}", count, tokens.get("kept", {}).get(domain)] for domain, count in funnel["kept"].items()]
        note = ("Every input record is read or rejected (rejects.jsonl); every document read is kept or removed with "
                "its reason (removed/REASON.jsonl).")
        overlap = metrics.get("heldout_overlap")
        if overlap:
            heldout = {d: tokens.get("kept", {}).get(f"{d}_heldout") for d in ("general", "finance")}
            note += (f" Held-out text left for perplexity: {heldout['general']} general and {heldout['finance']} finance "
                     f"tokens, after {overlap['removed']} of {overlap['checked']} held-out documents were removed for "
                     f"sharing more than {overlap['threshold']:.0%} of their n-grams with the training text "
                     f"(largest share found: {overlap['max_share_found']:.1%}).")
        sections.append(("Data funnel", table(["", "documents", "tokens"], rows), None, note))
    steps = metrics.get("steps")
    if steps:
        rows = [[s["step"], s["in"], s["kept"], ", ".join(f"{k}={v}" for k, v in s["removed"].items()) or "—",
                 ", ".join(f"{k}={v}" for k, v in s.get("set_aside", {}).items()) or "—", s["chars_kept"]]
                for s in steps]
        sections.append(("Data funnel by step", table(["step", "in", "kept", "removed (reason=count)",
                                                        "set aside", "characters kept"], rows),
                         plots.funnel_plot(steps), ""))
    sources = metrics.get("sources")
    if sources:
        by_source = tokens.get("by_source", {})
        rows = [[s["source"], s["kept"], ", ".join(f"{k}={v}" for k, v in s["removed"].items()) or "—",
                 by_source.get(s["source"], {}).get("kept"), by_source.get(s["source"], {}).get("removed")]
                for s in sources]
        sections.append(("Data by source", table(["source", "kept", "removed (reason=count)", "tokens kept",
                                                   "tokens removed"], rows), None, ""))
    mixes = metrics.get("mixes")
    if mixes:
        rows = [[name, mix["tokens"], mix["blocks"], ", ".join(f"{d}={v:.3f}" for d, v in mix["shares"].items()),
                 ", ".join(f"{d}={v:.2f}" for d, v in mix["epochs"].items())] for name, mix in mixes.items()]
        sections.append(("Token mixes", table(["mix", "tokens", "blocks", "realised share", "epochs of the data"],
                                               rows), None,
                         "Shares are by tokens; a domain with epochs above 1 is repeated, below 1 sub-sampled."))
    classifiers = metrics.get("classifiers")
    if classifiers:
        rows = [[name, ", ".join(values.get("labels", [])), values.get("n_train"),
                 values.get("heldout", {}).get("accuracy"), values.get("heldout", {}).get("macro_f1")]
                for name, values in classifiers.items()]
        sections.append(("Data classifiers", table(["classifier", "labels", "examples", "held-out accuracy",
                                                     "macro F1"], rows), None,
                         "Trained in the data stage from the labelled files the recipe names."))
    return sections


def _with_interval(row: dict, key: str, percent: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    interval = row.get(f"{key}_ci95")
    scale, unit = (100, "%") if percent else (1, "")
    text = f"{value * scale:+.1f}{unit}" if percent else f"{value:.4g}"
    return text + (f" ± {interval * scale:.1f}{unit}" if interval is not None and percent else
                   f" ± {interval:.3g}" if interval is not None else "")


def forgetting_sections(metrics: dict) -> Sections:
    rows = metrics["rows"]
    cells = [[r["variant"], r.get("seeds"), r.get("lambda_per_finance_token"), _with_interval(r, "finance_ppl"),
              _with_interval(r, "general_ppl"), _with_interval(r, "general_ppl_change", percent=True),
              _with_interval(r, "finance_gain_share", percent=True),
              _with_interval(r, "finance_gain_share_nats", percent=True), r.get("finance_mcq"), r.get("general_mcq"),
              r.get("step_time_s")] for r in rows]
    sections = [("Forgetting experiment", table(
        ["variant", "seeds", "lambda per finance token", "finance PPL", "general PPL", "general PPL change",
         "finance gain share (PPL)", "finance gain share (nats)", "finance MCQ", "general MCQ", "step time (s)"],
        cells), plots.forgetting_plot(rows),
        "Every variant starts from the same model at the same token budget; means over the seeds (data orders) with "
        "95% intervals. Finance gain share: the variant's finance improvement as a share of finance-only CE's, in "
        "perplexity and in nats (log perplexity). Lambda per finance token: the KL weight scaled by the mix's "
        "general / finance share, comparable across mixes.")]
    checks = metrics.get("verdict", {})
    if checks and "note" not in checks:
        rows = [[name, c["general_ppl_change"], c.get("general_ppl_change_ci95"), c["general_within_tolerance"],
                 c.get("resolved"), c["finance_gain_share"], c.get("finance_gain_share_nats"), c["finance_gain_enough"],
                 c.get("beats_replay"), c["all_met"]] for name, c in checks.items()]
        sections.append(("Forgetting targets", table(
            ["variant", "general PPL change", "± 95%", "within tolerance", "interval narrower than it",
             "share of finance-only gain", "in nats", "gain enough", "beats replay", "all targets met"], rows), None,
            "'Interval narrower than it': the seeds resolve the 2% target only when the 95% interval of the general "
            "change is narrower than the tolerance."))
    return sections


def mix_search_sections(result: dict) -> Sections:
    rows = [[ratio, p["finance_loss"], p["general_loss"], p.get("finance_mcq"),
             result["fits"][ratio]["finance"]["alpha"], result["fits"][ratio]["general"]["alpha"]]
            for ratio, p in result["predictions"].items()]
    choice = result["recommendation"]
    note = (f"Short runs of {result['steps']} steps per finance share, fitted and extrapolated to "
            f"{result['target_tokens']:,} tokens. Recommended finance share: {choice['ratio']}"
            + ("" if choice["within_general_budget"] else f" ({choice['note']})")
            + f"; general-loss budget {result['general_budget']:.0%} over the start model.")
    return [("Mix search (scaling laws)", table(
        ["finance share", "predicted finance loss", "predicted general loss", "predicted finance MCQ",
         "finance alpha", "general alpha"], rows), plots.mix_search_plot(result), note)]


def eval_columns(results: dict) -> list[str]:
    """Every result key any model has, benchmarks first (in first-seen order), perplexities last."""
    keys: list[str] = []
    for per_model in results.values():
        keys += [k for k in per_model if k not in keys]
    return [k for k in keys if not k.endswith("_ppl")] + [k for k in keys if k.endswith("_ppl")]


def eval_sections(results: dict) -> Sections:
    columns = eval_columns(results)
    rows = [[model] + [headline(per_model).get(column) for column in columns] for model, per_model in results.items()]
    domains = {name: value.get("domain") for per_model in results.values() for name, value in per_model.items()
               if isinstance(value, dict) and value.get("domain") and not name.endswith("_gen")}
    sections = [("Evaluation by stage", table(["model"] + columns, rows), plots.domain_accuracy(results, domains),
                 "Accuracy (MCQ by log-likelihood; _gen: answered by generation), usable rate (scenarios) and "
                 "held-out perplexity, every model on the same sets: finance gains should not cost general ability.")]
    chance_rows = [[model] + [per_model.get(c, {}).get("chance") for c in columns if c in domains]
                   for model, per_model in results.items()]
    if any(v is not None for row in chance_rows for v in row[1:]):
        sections.append(("Chance levels", table(["model"] + [c for c in columns if c in domains], chance_rows), None,
                         "Random guessing on the same questions (multi-answer questions have many letter sets)."))
    ppl = plots.eval_plots(results, domains)
    if ppl:
        sections.append(("Perplexity and MCQ accuracy by stage", None, ppl, ""))
    for name in [c for c in columns if any(results[m].get(c, {}).get("by_task") for m in results)]:
        if any(len(results[m].get(name, {}).get("by_task", {})) > 1 for m in results):
            tasks = sorted({t for r in results.values() for t in r.get(name, {}).get("by_task", {})})
            rows = [[task] + [results[m].get(name, {}).get("by_task", {}).get(task) for m in results] for task in tasks]
            sections.append((f"{name} by certification", table(["certification"] + list(results), rows),
                             plots.certification_bars(results, name), ""))
    for name in [c for c in columns if any("usable_rate" in results[m].get(c, {}) or
                                           "responded_rate" in results[m].get(c, {}) for m in results)]:
        rows = [[model, r.get("rule_pass_rate"), r.get("usable_rate"), r.get("pass_rate"), r.get("csr"), r.get("isr"),
                 r.get("psr"), r.get("judge_failures"), r.get("responded_rate"), r.get("judge", "")]
                for model, per_model in results.items() if (r := per_model.get(name))]
        sections.append((f"{name}: scenarios, rule-checked and judged", table(
            ["model", "rule-checked pass", "judged usable", "judged pass", "CSR", "ISR", "PSR", "judge failures",
             "answered", "note"], rows),
            plots.scenario_radar(results, name),
            "Rule-checked pass: every machine-verifiable check of the scenario holds (length, table or list, language, "
            "risk warning, required figures, no invented tickers, no forbidden promises), scored by rules without a "
            "judge. Judged usable: weighted dimension score >= 3 (basic) or >= 4 (high-stakes) and no dimension at "
            "-1. Judged pass (= ISR over judged answers): every checklist item met; a judgement that never parsed is "
            "counted as a failure, neither usable nor passing."))
        families = sorted({f for per_model in results.values() for f in per_model.get(name, {}).get("rule_by_family", {})})
        if families:
            rows = [[family] + [per_model.get(name, {}).get("rule_by_family", {}).get(family) for per_model in results.values()]
                    for family in families]
            sections.append((f"{name}: rule-checked pass rate by scenario family", table(["family", *results], rows),
                             None, "Scored by rules alone, so it means something even when the judge is a tiny model."))
    return sections


def merge_sections(metrics: dict, results: dict) -> Sections:
    """The merged model beside each of its inputs, on every benchmark eval ran."""
    if not metrics:
        return []
    shown = [(f"input: {e['label']}" + (f" (= {e['evaluated_as']})" if e.get("evaluated_as") not in (None, e["label"])
                                          and not e["label"].startswith("stage:") else ""),
              e.get("evaluated_as") or e["label"]) for e in metrics.get("inputs", [])]
    shown = [(name, key) for name, key in [*shown, ("merged", "merge")] if key in results]
    columns = eval_columns({key: results[key] for _, key in shown})
    rows = [[name] + [headline(results[key]).get(column) for column in columns] for name, key in shown]
    weights = metrics.get("weights")
    inputs = ", ".join(e["label"] + (f" (weight {w:g})" if weights else "")
                       for e, w in zip(metrics.get("inputs", []), weights or [None] * len(metrics.get("inputs", []))))
    base = f" over base {metrics['base']}" if metrics.get("base") else ""
    return [(f"Model merging ({metrics.get('method')})", table(["model"] + columns, rows) if rows else None, None,
             f"Merged {inputs}{base}; later stages start from the merged model.")]


def reward_sections(metrics: dict, heldout: list[dict]) -> Sections:
    """The reward model's held-out accuracy and calibration, overall and per data source."""
    if not metrics or metrics.get("eval_accuracy") is None:
        return []
    rows = [["pairwise accuracy", metrics["eval_accuracy"]], ["scored answers", metrics.get("scored_answers")],
            ["Pearson (reward, score)", metrics.get("score_pearson")],
            ["Spearman (reward, score)", metrics.get("score_spearman")],
            ["mean |reward - score|", metrics.get("score_mae")]]
    sources = [[source, v["pairs"], v["accuracy"], v["reward_mean"], v["reward_std"], v["chosen_mean"], v["rejected_mean"]]
               for source, v in metrics.get("by_source", {}).items()]
    loss = ("Bradley-Terry alone" if not metrics.get("score_alpha")
            else f"Bradley-Terry + {metrics['score_alpha']:g} x squared error to the scores")
    too_long = (metrics.get("train_pairs_too_long") or 0) + (metrics.get("eval_pairs_too_long") or 0)
    note = (f"On {metrics.get('eval_pairs')} held-out pairs; trained with {loss} on {metrics.get('train_pairs')} pairs "
            f"({metrics.get('scored_pairs')} of all pairs with scores; {too_long} longer than train.seq_len left out). Accuracy checks the order of a pair's rewards; the correlations and the error check their level "
            "against the absolute scores, which Bradley-Terry alone leaves free.")
    return [("Reward model: accuracy and calibration", table(["", "value"], rows), plots.reward_calibration(heldout), note),
            ("Reward by data source", table(["source", "pairs", "accuracy", "mean reward", "std", "mean chosen",
                                             "mean rejected"], sources), None, "")]


def prefs_sections(metrics: dict) -> Sections:
    """The preference builder's funnel: prompts read, dropped by reason, pairs kept; how answers were scored."""
    if not metrics:
        return []
    rows = [["prompts read", metrics.get("read")], ["rejected (malformed or unverifiable)", metrics.get("rejected")]]
    if metrics.get("not_sampled"):
        rows.append(["not in the max_prompts sample", metrics["not_sampled"]])
    rows += [[f"dropped: {reason}", count] for reason, count in (metrics.get("dropped") or {}).items()]
    rows.append(["pairs kept", metrics.get("pairs")])
    modes = ", ".join(f"{mode} {count}" for mode, count in (metrics.get("modes") or {}).items())
    note = (f"{metrics.get('answers')} answers sampled, {metrics.get('near_duplicates')} near duplicates removed "
            f"(ROUGE-L); prompts scored by {modes}; {metrics.get('judge_failures')} judgements never parsed (counted, "
            "not dropped silently). read = rejected + not sampled + kept + dropped; every answer, score and judge reply is in "
            "prefs/decisions.jsonl.")
    return [("Preference pairs built", table(["", "prompts"], rows), None, note)]


def align_sections(metrics: dict, categories: list[dict], history: list[dict]) -> Sections:
    """GRPO or PPO: held-out reward per category before and after RL, and the curves of reward, KL and weights."""
    if metrics.get("method") not in ("grpo", "ppo") or not categories:
        return []
    before, after = categories[0]["scores"], categories[-1]["scores"]
    rows = [[name, before.get(name), after.get(name),
             None if before.get(name) is None or after.get(name) is None else round(after[name] - before[name], 4),
             categories[-2]["weights"].get(name) if len(categories) > 1 else None]
            for name in sorted(set(before) | set(after))]
    note = (f"Held-out prompts of each category ({metrics.get('heldout_prompts')} in all, never trained on) answered "
            f"greedily by the SFT model (step {categories[0]['step']}) and by the policy after RL (step "
            f"{categories[-1]['step']}), scored by the same reward combination as training. "
            f"{metrics.get('prompts')} training prompts; answers sampled by {metrics.get('generation')}. The KL to "
            "the SFT model is exact over its top-k tokens and sits in the per-token reward; the SFT-data KL replaces "
            "the pre-training loss. The last weight is the prompt sampler's share for the category when training ended.")
    sections = [(f"Online RL ({metrics['method'].upper()}): held-out reward by category",
                 table(["category", "before (SFT)", "after RL", "change", "last sampling weight"], rows),
                 plots.rl_curves(history, categories), note)]
    first, last = categories[0].get("examples") or {}, categories[-1].get("examples") or {}
    shown = [[name, before["prompt"], f"{before['reply']} ({before['reward']:.2f})",
              f"{after['reply']} ({after['reward']:.2f})"]
             for name in sorted(first) for before, after in zip(first[name], last.get(name, []))]
    if shown:
        sections.append(("Online RL: held-out answers before and after", table(
            ["category", "prompt", "SFT answer (reward)", "after RL (reward)"], shown), None,
            "The first held-out prompts of each category, answered greedily; texts cut at 160 characters."))
    return sections
