"""One console and one look for every progress bar finloom shows (training steps, evaluation batches)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)
"""Where finloom talks to the user: stderr, so stdout stays free for what a command prints (``recipe show``).
Lines are never wrapped by finloom (a terminal wraps them itself): a long path must not split a message in a log."""


def progress_bar(label: str) -> Progress:
    """A bar with a count, a free-text ``status`` field (e.g. the latest loss) and time left."""
    return Progress(
        TextColumn(f"  {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
