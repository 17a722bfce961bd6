"""The report: self-contained HTML with inline plots and the per-stage tables, plus Markdown."""

from __future__ import annotations

import re

from conftest import finloom_cli


def test_report_is_self_contained_with_plots_and_tables(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    assert "<table>" in page and "Evaluation by stage" in page and "Data funnel" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3  # data funnel, eval plots, loss curves
    assert "Data funnel by step" in page and "Data by source" in page
    assert not re.search(r"(src|href)=['\"]https?://", page)
    markdown = (tiny_run / "report.md").read_text(encoding="utf-8")
    for model in ("base", "pretrain", "sft", "align"):
        assert re.search(rf"^\| {model} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$", markdown, re.M), model


def test_status_and_report_commands(tiny_run):
    status = finloom_cli("status", str(tiny_run))
    assert status.returncode == 0, status.stderr
    assert "pretrain" in status.stderr + status.stdout
    rebuilt = finloom_cli("report", str(tiny_run))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tiny_run / "report.html").stat().st_size > 10_000
    skipped = finloom_cli("stage", "report", "--run-dir", str(tiny_run))
    assert skipped.returncode == 0 and "report: up to date, skipped" in skipped.stderr
    forced = finloom_cli("stage", "report", "--run-dir", str(tiny_run), "--force")
    assert forced.returncode == 0 and "✓ report" in forced.stderr
