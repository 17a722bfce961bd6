"""The report in a real browser: headless Chromium (Debian's package) parses it, and a phone-width screenshot
shows its charts. The screenshot is kept under .test-artifacts/ (or $FINLOOM_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
# The flags the machine's own probe uses: no sandbox as root, and no background network calls on a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_with_charts_and_tables(tiny_run, tmp_path):
    page = tiny_run / "report.html"
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert "<h1>finloom run: shared</h1>" in rendered
    for heading in ("Stages", "Data funnel by step", "Evaluation by stage", "finance_mcq by certification",
                    "Held-out perplexity during continual pre-training", "Training"):
        assert f"<h2>{heading}</h2>" in rendered, heading
    assert len(re.findall(r"<table>", rendered)) >= 6
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', rendered)) >= 6
    assert 'name="viewport"' in rendered

    artifacts = Path(os.environ.get("FINLOOM_TEST_ARTIFACTS", Path(__file__).parents[1] / ".test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-phone.png"
    taken = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=390,2400", "--hide-scrollbars", page.as_uri())
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (390, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and charts, not a blank page
