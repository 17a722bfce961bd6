"""Errors that finloom reports to a user, each with the exit code the CLI gives it.

A `BadInput` is the user's to fix (recipe, data, arguments): the CLI prints its message and exits
2 without a traceback. Anything else is an internal failure (exit 1).
"""


class BadInput(Exception):
    """Input the user can fix: a recipe field, a data file, an argument. Exit code 2."""

    exit_code = 2


class RunLocked(BadInput):
    """Another finloom process is writing to the same run directory."""
