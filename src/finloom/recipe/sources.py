"""The external files a recipe names, found by walking its sections, with their field paths."""

from __future__ import annotations

from finloom.recipe.base import DataPath, Section
from finloom.recipe.schema import Recipe


def _walk_sources(value, path: str):
    """(field path, DataPath) for every data path inside ``value``: nested sections, lists and dicts."""
    if isinstance(value, DataPath):
        yield path, value
    elif isinstance(value, Section):
        for name, child in value:
            if not (isinstance(child, Section) and getattr(child, "enabled", True) is False):
                yield from _walk_sources(child, f"{path}.{name}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk_sources(child, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _walk_sources(child, f"{path}.{key}")


def stage_sources(recipe: Recipe, stage: str) -> list[tuple[str, DataPath]]:
    """Every external file a stage reads, with its field path; the data stage also reads the eval sets it
    decontaminates against."""
    section = recipe.section(stage)
    if not section.enabled:
        return []
    sources = list(_walk_sources(section, stage))
    if stage == "data":
        sources += [item for item in decontam_sources(recipe) if item[0].startswith("eval.")]
    return sources


def decontam_sources(recipe: Recipe) -> list[tuple[str, DataPath]]:
    """The eval files the data stage decontaminates against: its own list, plus the eval section's."""
    settings = recipe.data.decontam
    if not (recipe.data.enabled and settings.enabled):
        return []
    sources = list(_walk_sources(settings, "data.decontam"))
    if settings.include_recipe_evals and recipe.eval.enabled:
        sources += list(_walk_sources(recipe.eval, "eval"))
    return sources
