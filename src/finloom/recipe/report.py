"""The report stage's settings."""

from __future__ import annotations

from finloom.recipe.base import StageSection


class ReportSection(StageSection):
    """RUN/report.html, report.md and model_card.md, read back from every stage's manifest."""

    title: str | None = None

    def needs_model(self) -> bool:
        return False

    def settings_read(self) -> tuple[str, ...]:
        return ()
