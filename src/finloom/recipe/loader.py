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
    """Every data path the recipe names, and a local ``model.hf``, must exist before any stage starts."""
    problems = _model_dir_problems(recipe)
    seen = set()
    for stage in Recipe.section_names():
        for field_path, source in stage_sources(recipe, stage):
            path = recipe.resolve(source.path)
            if field_path not in seen and not source.on_hub and not path.exists():
                problems.append(f"{field_path}.path: file not found: {path}")
            seen.add(field_path)
    if problems:
        raise BadInput("\n".join(problems))


def _model_dir_problems(recipe: Recipe) -> list[str]:
    """``model.hf`` as a local directory: it exists, with a config, a tokenizer and weights finloom will load.

    A value that is not a local path (``Qwen/Qwen2.5-1.5B``, ``gpt2``) is a Hub id, checked when downloaded."""
    model = recipe.model
    if model is None or model.hf is None:
        return []
    path = recipe.resolve(model.hf)
    looks_local = model.hf.startswith((".", "/", "~")) or model.hf.count("/") > 1 or path.exists()
    return [f"model.hf: {problem}" for problem in model_dir_problems(path, model.allow_pickle)] if looks_local else []


def model_dir_problems(path: Path, allow_pickle: bool = False) -> list[str]:
    """What keeps ``path`` from being a model directory finloom loads: no directory, no config, no tokenizer,
    no safetensors weights (pickle weights count only with ``allow_pickle``)."""
    if not path.is_dir():
        return [f"no model directory at {path}"]
    missing = [name for name in ("config.json",) if not (path / name).exists()]
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json, tokenizer_config.json or tokenizer.model)")
    weights = [p for p in path.iterdir() if p.suffix == ".safetensors"]
    if not weights and not (allow_pickle and any(p.suffix in (".bin", ".pt", ".pth") for p in path.iterdir())):
        missing.append("safetensors weights (or pickle weights with model.allow_pickle: true)")
    return [f"{path} has no {item}" for item in missing]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


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
    data = read_recipe_mapping(path)
    if isinstance(data, dict) and "source_dir" in data:
        raise BadInput("source_dir: unknown key (not part of the recipe schema)")
    return parse_recipe(data, path.parent.resolve(), check_files)


def read_recipe_mapping(path: Path):
    """The recipe file's mapping with what it ``extends`` merged in, before validation (for tools that edit it)."""
    return _read_yaml(Path(path), ())


def _read_yaml(path: Path, chain: tuple[Path, ...]):
    """The file's mapping, laid over the recipe it names in ``extends`` (a path relative to it).

    Mappings merge key by key; anything else (a list, a value) replaces the parent's. So a study names only
    what differs from the recipe it extends: ``extends: ../quickstart.yaml`` plus the sections it changes.
    """
    where = "extends: " if chain else ""
    if path.is_dir():
        raise BadInput(f"{where}{path} is a directory; give the recipe's YAML file")
    if not path.is_file():
        raise BadInput(f"{where}recipe file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as error:
        raise BadInput(f"{where}{path}: not UTF-8 text (byte {error.start}: {error.reason}); save the recipe as "
                       "UTF-8") from None
    except yaml.YAMLError as error:
        raise BadInput(f"{where}{path}: not valid YAML: {error}") from None
    if not (isinstance(data, dict) and "extends" in data):
        return data
    parent = (path.parent / str(data.pop("extends"))).resolve()
    if parent in chain or parent == path.resolve():
        raise BadInput(f"extends: {parent} extends itself (through {' -> '.join(map(str, chain))})")
    base = _read_yaml(parent, (*chain, path.resolve()))
    if not isinstance(base, dict):
        raise BadInput(f"extends: {parent} is not a recipe mapping")
    return _merge(base, data)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "the last one wins"."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe (defaults filled) as plain data."""
    return recipe.model_dump(mode="json")
