"""The report: self-contained HTML with inline plots and the per-stage tables, plus Markdown."""

from __future__ import annotations

import re

from conftest import finloom_cli


def test_report_is_self_contained_with_plots_and_tables(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    assert "<table>" in page and "Evaluation by stage" in page and "Data funnel" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    # timeline, funnel, finance vs general, perplexity + MCQ, certification bars (finance_mcq and its generated
    # answers), held-out curves during CPT, the reward model's calibration, the GRPO curves, loss curves
    assert len(images) == 10
    assert "Reward model: accuracy and calibration" in page and "Reward by data source" in page
    assert "Online RL (GRPO): held-out reward by category" in page
    assert "Data funnel by step" in page and "Data by source" in page and "Token mixes" in page
    assert not re.search(r"(src|href)=['\"]https?://", page)
    markdown = (tiny_run / "report.md").read_text(encoding="utf-8")
    header = "| model | finance_mcq | general_mcq | finance_mcq_gen | general_mcq_gen | finance_ppl | general_ppl |"
    assert header in markdown
    for model in ("base", "pretrain"):  # base models: no generated answers
        assert re.search(rf"^\| {model} \| [0-9.]+ \| [0-9.]+ \| — \| — \| [0-9.]+ \| [0-9.]+ \|$", markdown, re.M)
    for model in ("sft", "align"):
        assert re.search(rf"^\| {model} (\| [0-9.]+ ){{6}}\|$", markdown, re.M), model
    card = (tiny_run / "model_card.md").read_text(encoding="utf-8")
    assert "# Model card: shared / align" in card and "| general.jsonl |" in card and "## Evaluation" in card


def test_status_and_report_commands(tiny_run):
    status = finloom_cli("status", str(tiny_run), env={"COLUMNS": "200"})  # wide enough for no row to wrap
    assert status.returncode == 0, status.stderr
    shown = status.stderr + status.stdout
    for stage in ("data", "base", "pretrain", "sft", "reward", "align", "eval", "report"):  # each stage, and its state
        assert re.search(rf"^\W {stage} +\W done +\W", shown, re.M), stage
    # the data funnel by hand (tests/test_data_stage.py): 90 read, 40 + 40 + 4 + 4 kept, 2 malformed lines
    assert "read=90 kept=88 rejected=2" in shown
    rebuilt = finloom_cli("report", str(tiny_run))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tiny_run / "report.html").stat().st_size > 10_000
    skipped = finloom_cli("stage", "report", "--run-dir", str(tiny_run))
    assert skipped.returncode == 0 and "report: up to date, skipped" in skipped.stderr
    forced = finloom_cli("stage", "report", "--run-dir", str(tiny_run), "--force")
    assert forced.returncode == 0 and "✓ report" in forced.stderr


def test_the_report_leads_with_a_summary_that_matches_the_manifests(tiny_run):
    import json

    from finloom.report.sections import summary

    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Stages</h2>") < page.index("<h2>Data funnel</h2>")
    data = json.loads((tiny_run / "data" / "manifest.json").read_text())["metrics"]["funnel"]
    results = json.loads((tiny_run / "eval" / "results.json").read_text())
    facts = summary({stage: json.loads((tiny_run / stage / "manifest.json").read_text())
                     for stage in ("data", "base", "pretrain", "sft", "reward", "align", "eval")}, results)
    assert facts["documents"] == {"read": data["read"], "rejected": data["rejected"],
                                  "kept_for_training": data["kept"]["general"] + data["kept"]["finance"]}
    assert facts["models"] == {"start": "base", "final": "align"}  # a scratch run starts from its general base
    finance = facts["finance"]
    assert finance["benchmark"] == "finance_mcq" and finance["chance"] == results["align"]["finance_mcq"]["chance"]
    assert (finance["start_accuracy"], finance["final_accuracy"]) == (results["base"]["finance_mcq"]["accuracy"],
                                                                       results["align"]["finance_mcq"]["accuracy"])
    general_change = results["align"]["general_ppl"]["perplexity"] / results["base"]["general_ppl"]["perplexity"] - 1
    assert facts["general"]["perplexity_change"] == round(general_change, 4)
    shown = facts["general"]["perplexity_change"]  # rounded to 4 places first, as the page formats it
    assert f"{shown:+.1%}" in page and f"{data['read']} read" in page


def test_the_grpo_section_reads_before_and_after_from_the_category_log():
    from finloom.report.sections import align_sections

    categories = [{"step": 0, "scores": {"mcq": 0.1, "calculation": 0.2}, "weights": {"mcq": 0.5, "calculation": 0.5}},
                  {"step": 10, "scores": {"mcq": 0.3, "calculation": 0.2}, "weights": {"mcq": 0.4, "calculation": 0.6}},
                  {"step": 20, "scores": {"mcq": 0.6, "calculation": 0.1}, "weights": {"mcq": 0.3, "calculation": 0.7}},
                  {"step": 20, "scores": {"mcq": 0.7, "calculation": 0.15}, "weights": {"mcq": 0.3, "calculation": 0.7},
                   "final": True}]
    history = [{"step": 2, "reward": 0.2, "rewards/mcq": 0.1, "kl": 0.01, "sft_kl": 0.0}]
    categories[0]["examples"] = {"mcq": [{"prompt": "Which? A. x B. y", "reply": "1. bond is", "reward": 0.0}]}
    categories[-1]["examples"] = {"mcq": [{"prompt": "Which? A. x B. y", "reply": "A", "reward": 1.0}]}
    (title, (_, markdown), plot, note), examples = align_sections({"method": "grpo", "heldout_prompts": 8}, categories,
                                                                  history)
    assert "| mcq | Which? A. x B. y | 1. bond is (0.00) | A (1.00) |" in examples[1][1]
    # before: the first evaluation; after: the final one; the weight: the last one the sampler used
    assert "| calculation | 0.2 | 0.15 | -0.05 | 0.7 |" in markdown and "| mcq | 0.1 | 0.7 | 0.6 | 0.3 |" in markdown
    assert plot is not None and "step 0" in note and "step 20" in note
    assert align_sections({"method": "dpo"}, categories, history) == []
