"""Reading evaluation results back: one headline number per benchmark, and a run's ``eval/results.json``."""

from __future__ import annotations

import json
from pathlib import Path


def headline(results: dict) -> dict:
    """One number per benchmark and model: accuracy, usable rate or perplexity."""
    keys = ("accuracy", "usable_rate", "responded_rate", "perplexity")
    return {name: next((value[k] for k in keys if value.get(k) is not None), None) for name, value in results.items()}


def load_results(run_dir: Path) -> dict:
    path = Path(run_dir) / "eval" / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
