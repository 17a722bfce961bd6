"""Parsing multiple-choice questions in the FLAME-Cer layout.

A record is ``task_name``, ``second_level``, ``question`` (the stem with its options inline) and
``answer`` (one letter, or several for multi-answer questions, "ABD"). The published files write
the options in several ways, all read here:

- one option per line: ``A.xxx`` / full-width ``A．xxx`` / ``A、`` ``A:`` ``A)`` ``(A)``;
- all options on one line after the stem: ``...应纳税额为（ ）。 A.3.2万元 B.4.5万元 C.6.0万元``;
- stem and options with no break at all: ``下列说法正确的是A.甲B.乙C.丙D.丁``;
- an option wrapped onto the next line (joined; no space is put between two CJK characters).

Markers are found in order, A then B then C: a marker is a letter with a separator, not glued to a
preceding Latin letter or digit ("U.S.", "3.2") and not followed by another letter-dot ("A.M.",
"E.g."). When a letter has several candidates (a stray "B.2" in a formula inside option A), the
sequence with the most options wins, then the one whose markers sit on stronger boundaries (line
start, then a space, then anything else), then the one with the later markers, so text before the
real marker stays in the option or stem it belongs to. Scoring lives in lm-eval task templates
(``finloom/eval/tasks``).
"""

from __future__ import annotations

import functools
import re
import unicodedata

LETTERS = "ABCDEFGH"
_MARKER = re.compile(r"[(（]?([A-HＡ-Ｈ])\s?[.．、:：)）]")
_LETTER_DOT_AFTER = re.compile(r"[A-Za-z][.．]")


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F") and not char.isspace()


def _boundary(text: str, start: int) -> int:
    """How clearly a marker at ``start`` begins an option: 3 at a line start, 2 after a space, 1 after anything
    else but a Latin letter or digit (0: not a marker)."""
    if start == 0 or text[start - 1] == "\n":
        return 3
    previous = text[start - 1]
    if previous.isspace():
        return 2
    return 0 if previous.isascii() and previous.isalnum() else 1


def _candidates(text: str) -> dict[str, list[tuple[int, int, int]]]:
    """Letter -> (marker start, option text start, boundary strength) of every plausible marker."""
    found: dict[str, list[tuple[int, int, int]]] = {}
    for match in _MARKER.finditer(text):
        strength = _boundary(text, match.start())
        if strength == 0 or _LETTER_DOT_AFTER.match(text, match.end()):
            continue
        letter = unicodedata.normalize("NFKC", match.group(1))
        found.setdefault(letter, []).append((match.start(), match.end(), strength))
    return found


def _join_lines(text: str) -> str:
    """A wrapped option's lines as one: a space between them, except between two CJK characters."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    joined = lines[0] if lines else ""
    for line in lines[1:]:
        joined += ("" if _is_cjk(joined[-1]) and _is_cjk(line[0]) else " ") + line
    return joined


def parse_question(question: str) -> tuple[str, dict[str, str]]:
    """Split a FLAME-style question into its stem and its lettered options (empty when it has none)."""
    candidates = _candidates(question)

    @functools.cache
    def best(index: int, after: int) -> tuple[int, int, tuple[int, ...], tuple]:
        """The best chain of markers for LETTERS[index:], each after the previous: (count, strength, starts, picks)."""
        if index == len(LETTERS):
            return 0, 0, (), ()
        options = [(0, 0, (), ())]
        for start, end, strength in candidates.get(LETTERS[index], []):
            if start > after:
                count, total, starts, picks = best(index + 1, end - 1)
                options.append((count + 1, total + strength, (start, *starts), ((start, end), *picks)))
        return max(options)

    picks = best(0, -1)[3]
    if not picks:
        return question.strip(), {}
    bounds = [*picks, (len(question), len(question))]
    options = {LETTERS[i]: _join_lines(question[end:bounds[i + 1][0]]) for i, (_, end) in enumerate(picks)}
    return question[:picks[0][0]].strip(), options


def normalize_answer(answer: str) -> str:
    return "".join(sorted(set(re.sub(r"[^A-H]", "", unicodedata.normalize("NFKC", answer).upper()))))
