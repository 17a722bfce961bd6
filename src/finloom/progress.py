"""One look for every progress bar finloom shows (training steps, evaluation batches)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(label: str) -> Progress:
    """A bar with a count, a free-text ``status`` field (e.g. the latest loss) and time left."""
    from finloom.runner import console

    return Progress(
        TextColumn(f"  {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
