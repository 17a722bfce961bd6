"""Recipe errors as users read them: one line per problem, each naming its field path and the reason."""

from __future__ import annotations

from pydantic import ValidationError


def _field_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts) or "(recipe)"


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        reason = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            reason = "unknown key (not part of the recipe schema)"
        elif problem["type"] == "literal_error":
            reason = f"{reason} (got {problem['input']!r})"
        if not problem["loc"]:  # a whole-recipe check: its message names the fields itself
            lines.extend(reason.split("\n"))
            continue
        lines.append(f"{_field_path(problem['loc'])}: {reason}")
    return "\n".join(lines)
