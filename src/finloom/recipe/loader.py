"""Reading a recipe: YAML to a validated ``Recipe``, the files it names checked, errors naming their field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from finloom.errors import BadInput
from finloom.recipe.errors import format_validation_error
from finloom.recipe.schema import Recipe
from finloom.recipe.sources import stage_sources


def _check_files(recipe: Recipe) -> None:
    """Every data path the recipe names must exist before any stage starts."""
    problems = []
    seen = set()
    for stage in Recipe.section_names():
        for field_path, source in stage_sources(recipe, stage):
            path = recipe.resolve(source.path)
            if field_path not in seen and not path.exists():
                problems.append(f"{field_path}.path: file not found: {path}")
            seen.add(field_path)
    if problems:
        raise BadInput("\n".join(problems))


def parse_recipe(data: dict, source_dir: Path = Path("."), check_files: bool = True) -> Recipe:
    if not isinstance(data, dict):
        raise BadInput("(recipe): the recipe must be a YAML mapping of sections")
    try:
        recipe = Recipe.model_validate({**data, "source_dir": source_dir})
    except ValidationError as error:
        raise BadInput(format_validation_error(error)) from None
    if check_files:
        _check_files(recipe)
    return recipe


def load_recipe(path: str | Path, check_files: bool = True) -> Recipe:
    """Read a recipe file (and the recipes it ``extends``); data paths resolve against this file's folder."""
    path = Path(path)
    data = _read_yaml(path, ())
    if isinstance(data, dict) and "source_dir" in data:
        raise BadInput("source_dir: unknown key (not part of the recipe schema)")
    return parse_recipe(data, path.parent.resolve(), check_files)


def _read_yaml(path: Path, chain: tuple[Path, ...]):
    """The file's mapping, laid over the recipe it names in ``extends`` (a path relative to it).

    Mappings merge key by key; anything else (a list, a value) replaces the parent's. So a study names only
    what differs from the recipe it extends: ``extends: ../quickstart.yaml`` plus the sections it changes.
    """
    if not path.is_file():
        raise BadInput(f"{'extends: ' if chain else ''}recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: not valid YAML: {error}") from None
    if not (isinstance(data, dict) and "extends" in data):
        return data
    parent = (path.parent / str(data.pop("extends"))).resolve()
    if parent in chain or parent == path.resolve():
        raise BadInput(f"extends: {parent} extends itself (through {' -> '.join(map(str, chain))})")
    base = _read_yaml(parent, (*chain, path.resolve()))
    if not isinstance(base, dict):
        raise BadInput(f"extends: {parent} is not a recipe mapping")
    return _merge(base, data)


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe (defaults filled) as plain data."""
    return recipe.model_dump(mode="json")
