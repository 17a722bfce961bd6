"""Parsing multiple-choice questions in the FLAME-Cer layout.

A record is ``task_name``, ``second_level``, ``question`` (stem with options inline, "A.xxx" or
full-width "A．xxx" lines) and ``answer`` (one letter, or several for multi-answer questions,
"ABD"). Scoring lives in lm-eval task templates (``finloom/eval/tasks``).
"""

from __future__ import annotations

import re

OPTION_LINE = re.compile(r"^\s*([A-H])\s*[\.．、:：)）]\s*(.+?)\s*$")


def parse_question(question: str) -> tuple[str, dict[str, str]]:
    """Split a FLAME-style question into its stem and its lettered options."""
    stem_lines, options = [], {}
    for line in question.split("\n"):
        match = OPTION_LINE.match(line)
        if match and (options or len(stem_lines) > 0):
            options[match.group(1)] = match.group(2)
        elif options:
            last = list(options)[-1]
            options[last] += " " + line.strip()
        else:
            stem_lines.append(line)
    return "\n".join(stem_lines).strip(), options


def normalize_answer(answer: str) -> str:
    return "".join(sorted(set(re.sub(r"[^A-H]", "", answer.upper()))))
