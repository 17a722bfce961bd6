"""Answer extraction from generated text: option letters (single and multi-answer) and final numbers.

Chat models answer certification questions in many shapes ("Answer: B", "答案：AB", "the correct
options are A and C", "选B", "(A)", "A、C、D"); calculation answers carry units, percentages,
thousands separators, 万 / 亿 multipliers and sometimes simple Chinese numerals. These functions
turn a reply into a comparable value, or None when there is nothing to compare, so a parse
failure counts as wrong and is visible in the per-sample log rather than silently guessed.
"""

from __future__ import annotations

import re
import unicodedata

_MARKER = re.compile(
    r"(?:final answer|correct answers?|correct options?|answers? (?:is|are)|answer|答案|正确答案|正确选项|应选|故选|"
    r"选择|选(?!项))"
    r"\s*(?:is|are|为|是|：|:|=)?\s*", re.IGNORECASE)
# Markers that state the answer: the first of them wins, so an explanation's later "选项A错误" does not.
_EXPLICIT = re.compile(r"final answer|correct answers?|correct options?|answers? (?:is|are)|answer|答案|正确答案|"
                       r"正确选项|故选|应选", re.IGNORECASE)
_LETTER_RUN = re.compile(r"(?<![A-Za-z])([A-H](?:\s*(?:[,，、/&]|and|和|与|及)?\s*[A-H])*)(?![A-Za-z])")
_LOWER_RUN = re.compile(r"([a-h](?:\s*[,，、/&]?\s*[a-h])*)(?=\s*(?:$|\n|[^\sA-Za-z]))")


def _run_after(text: str, position: int) -> str | None:
    """The letter run a marker introduces: upper-case, or lower-case when nothing word-like follows ("答案：c")."""
    for start in (position, position + 1):
        if run := _LETTER_RUN.match(text, start):
            return run.group(1)
        if run := _LOWER_RUN.match(text, start):
            return run.group(1).upper()
    return None


def extract_letters(text: str, valid: str = "ABCD") -> str | None:
    """The option letters a reply commits to, sorted ("ABD"), or None.

    The first explicit answer marker ("答案：", "Answer:", "故选", "正确答案") decides; an explanation after it
    ("解析：选项A错误") is not an answer. Without one, the last letters after a weaker marker ("选B"), else the
    last standalone run of option letters. Letters outside ``valid`` are ignored.
    """
    text = unicodedata.normalize("NFKC", text).replace("（", "(").replace("）", ")")
    explicit, weak = [], []
    for marker in _MARKER.finditer(text):
        run = _run_after(text, marker.end())
        if run:
            (explicit if _EXPLICIT.fullmatch(marker.group().strip(" :：=为是").lower()
                                             .removesuffix(" is").removesuffix(" are")) else weak).append(run)
    if explicit:
        candidates = explicit[:1]
    else:
        candidates = weak or [m.group(1) for m in _LETTER_RUN.finditer(text.upper() if text.isupper() else text)]
    for run in reversed(candidates):
        letters = "".join(sorted({c for c in run if c in valid}))
        if letters:
            return letters
    return None


_CHINESE_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CHINESE_UNITS = {"十": 10, "百": 100, "千": 1000}
# A base currency word states the amount in units (multiplier 1): "126,800元" is 12.68 in 10k_yuan.
_MULTIPLIERS = {"万": 1e4, "亿": 1e8, "thousand": 1e3, "million": 1e6, "billion": 1e9, "k": 1e3, "m": 1e6, "bn": 1e9,
                "元": 1.0, "yuan": 1.0, "rmb": 1.0, "cny": 1.0}
_NUMBER = re.compile(
    r"(?P<sign>[-−–])?\s*(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)\s*"
    r"(?P<unit>%|‰|万亿|亿|万|元|thousand|million|billion|bn|yuan\b|rmb\b|cny\b|k\b|m\b)?", re.IGNORECASE)
_CHINESE_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千]+")


def chinese_numeral(text: str) -> int | None:
    """Value of a simple Chinese numeral below 10,000 (三百二十五 -> 325, 十二 -> 12), else None."""
    if not text or any(ch not in _CHINESE_DIGITS and ch not in _CHINESE_UNITS for ch in text):
        return None
    total, digit = 0, None
    for ch in text:
        if ch in _CHINESE_DIGITS:
            digit = _CHINESE_DIGITS[ch]
        else:
            total += (1 if digit is None else digit) * _CHINESE_UNITS[ch]
            digit = None
    return total + (digit or 0)


def extract_quantity(text: str) -> tuple[float, float | None] | None:
    """The final number of a reply and the multiplier its unit word carries (None if it has none).

    After the last answer marker if there is one, else the last number. "1,234.5" -> (1234.5, None);
    "12.5%" -> (12.5, None); "3.2万" -> (3.2, 1e4); "-810,976.15 yuan" -> (-810976.15, None);
    "三百二十五" -> (325, None).
    """
    text = unicodedata.normalize("NFKC", text)
    markers = list(_MARKER.finditer(text))
    tail = text[markers[-1].end():] if markers else text
    for scope in ((tail, text) if markers else (text,)):
        numbers = list(_NUMBER.finditer(scope))
        if numbers:
            match = numbers[0] if scope is tail and markers else numbers[-1]
            value = float(match.group("value").replace(",", ""))
            unit = (match.group("unit") or "").lower()
            multiplier = 1e12 if unit == "万亿" else _MULTIPLIERS.get(unit)
            return (-value if match.group("sign") else value), multiplier
        chinese = [chinese_numeral(m.group()) for m in _CHINESE_NUMBER.finditer(scope)]
        chinese = [value for value in chinese if value is not None]
        if chinese:
            return float(chinese[-1]), None
    return None


# The unit an expected answer is stated in, as a multiplier of the base unit a reply may use instead.
UNIT_MULTIPLIERS = {"10k_yuan": 1e4, "100m_yuan": 1e8}


def answer_value(text: str, unit: str = "") -> float | None:
    """A reply's number in the expected answer's unit: "126,800元" or "12.68万元" both give 12.68 for 10k_yuan."""
    found = extract_quantity(text)
    if found is None:
        return None
    value, multiplier = found
    if multiplier is None:
        return value
    return value * multiplier / UNIT_MULTIPLIERS.get(unit, 1.0)


def numbers_match(predicted: float | None, expected: float, relative_tolerance: float = 0.005,
                  absolute_tolerance: float = 1e-6) -> bool:
    """Within ``relative_tolerance`` of the expected value (or ``absolute_tolerance`` of 0)."""
    if predicted is None:
        return False
    return abs(predicted - expected) <= max(relative_tolerance * abs(expected), absolute_tolerance)
