"""Machine-verifiable checks on a response, in the style of IFEval: rules, not a judge.

A scenario may carry ``checks`` beside the judge's checklist; each is a mapping with a ``type`` and
its value. The same rules score evaluation answers (the rule-checked pass rate, reported apart from
the judged usable rate) and serve as verifiable rewards in RL, so they are plain functions of the
response text: deterministic, cheap, and explained by their detail string when they fail.

Types:
- ``max_chars`` / ``min_chars``: response length in characters (spaces excluded, so Chinese and
  English count alike); ``max_words``: whitespace-separated words (English prompts).
- ``has_table``: a Markdown table (a header, a ``|---|`` rule, a row); ``has_list``: at least two
  bulleted or numbered lines ("- ", "1.", "（1）", "一、").
- ``language``: the response's language (py3langid) is ``value`` ("zh", "en").
- ``risk_disclaimer``: a risk warning is present (built-in phrases in both languages, or ``value``).
- ``required_figures``: every listed figure appears (a number within 0.1%, thousands separators ignored).
- ``forbidden_phrases``: none of the listed phrases appears (e.g. promises of guaranteed returns).
- ``allowed_tickers``: every security code in the response (six-digit A-share codes, ``600519.SH``,
  ``AAPL.O``) is one of the listed ones: no invented tickers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

DISCLAIMERS = ("投资有风险", "风险提示", "不构成投资建议", "入市需谨慎", "市场有风险", "请注意风险", "风险自担",
               "not investment advice", "investing involves risk", "investment involves risk", "past performance",
               "risk warning", "risk disclosure", "capital at risk", "may lose", "you could lose", "not a guarantee",
               "does not guarantee", "no guarantee")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)
_LIST_LINE = re.compile(r"^\s*(?:[-*•·]\s+|\d+[.)、．]\s*|[（(]\d+[)）]\s*|[一二三四五六七八九十]+[、．.]\s*)\S", re.MULTILINE)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")
_TICKER = re.compile(r"(?<![\d.])(\d{6})(?:\.(?:SH|SZ|BJ|SS))?(?![\d])|(?<![A-Za-z])([A-Z]{1,5}\.(?:O|N|US|HK|L))(?![A-Za-z])")


@dataclass(frozen=True)
class CheckResult:
    type: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return {"type": self.type, "passed": self.passed, "detail": self.detail}


def _compact(text: str) -> str:
    return re.sub(r"[\s,，]", "", text)


def _max_chars(response: str, value) -> tuple[bool, str]:
    count = len(re.sub(r"\s", "", response))
    return count <= int(value), f"{count} characters (at most {value})"


def _min_chars(response: str, value) -> tuple[bool, str]:
    count = len(re.sub(r"\s", "", response))
    return count >= int(value), f"{count} characters (at least {value})"


def _max_words(response: str, value) -> tuple[bool, str]:
    count = len(response.split())
    return count <= int(value), f"{count} words (at most {value})"


def _has_table(response: str, value) -> tuple[bool, str]:
    found = bool(_TABLE_RULE.search(response))
    return found, "a Markdown table" if found else "no Markdown table (header, |---| rule, rows)"


def _has_list(response: str, value) -> tuple[bool, str]:
    lines = len(_LIST_LINE.findall(response))
    return lines >= 2, f"{lines} list lines (at least 2)"


def _language(response: str, value) -> tuple[bool, str]:
    import py3langid

    if not response.strip():
        return False, "empty response"
    found = py3langid.classify(response)[0]
    return found == value, f"language {found} (wanted {value})"


def _risk_disclaimer(response: str, value) -> tuple[bool, str]:
    phrases = value if isinstance(value, list) and value else DISCLAIMERS
    lowered = response.lower()
    found = next((p for p in phrases if p.lower() in lowered), None)
    return found is not None, f"risk warning: {found!r}" if found else "no risk warning"


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("%"))
    except ValueError:
        return None


def _required_figures(response: str, value) -> tuple[bool, str]:
    """A numeric figure is present when a number in the response is within 0.1% of it ("14,100.00" matches
    "14100" and "14,100 yuan"); any other figure must appear as written (spaces and commas ignored)."""
    numbers = [n for n in map(_number, _NUMBER.findall(response)) if n is not None]
    text = _compact(response)
    missing = []
    for figure in value:
        wanted = _number(str(figure))
        if wanted is None:
            found = _compact(str(figure)) in text
        else:
            found = any(abs(n - wanted) <= max(abs(wanted) * 1e-3, 1e-9) for n in numbers)
        if not found:
            missing.append(figure)
    return not missing, f"missing {missing}" if missing else f"all {len(value)} figures present"


def _forbidden_phrases(response: str, value) -> tuple[bool, str]:
    lowered = response.lower()
    found = [phrase for phrase in value if phrase.lower() in lowered]
    return not found, f"contains {found}" if found else "none of the forbidden phrases"


def _allowed_tickers(response: str, value) -> tuple[bool, str]:
    allowed = {_ticker_key(str(code)) for code in value}
    named = [match.group(0) for match in _TICKER.finditer(response)]
    invented = [code for code in named if _ticker_key(code) not in allowed]
    return not invented, f"codes not in the given list: {invented}" if invented else f"{len(named)} codes, all given"


def _ticker_key(code: str) -> str:
    """600519.SH and 600519 name the same security; AAPL.O is compared whole."""
    return code.split(".")[0] if code[:6].isdigit() else code.upper()


RULES: dict[str, Callable[[str, object], tuple[bool, str]]] = {
    "max_chars": _max_chars, "min_chars": _min_chars, "max_words": _max_words, "has_table": _has_table,
    "has_list": _has_list, "language": _language, "risk_disclaimer": _risk_disclaimer,
    "required_figures": _required_figures, "forbidden_phrases": _forbidden_phrases, "allowed_tickers": _allowed_tickers,
}


def check_response(response: str, checks: list[dict]) -> list[CheckResult]:
    """Every check's verdict on ``response``, in order. An unknown type is an error: a check that never runs
    must not count as passed."""
    results = []
    for check in checks:
        kind = check.get("type")
        if kind not in RULES:
            raise ValueError(f"unknown check type {kind!r} (known: {', '.join(RULES)})")
        passed, detail = RULES[kind](response or "", check.get("value"))
        results.append(CheckResult(kind, passed, detail))
    return results


def pass_share(results: list[CheckResult]) -> float:
    """The share of checks passed: a graded verifiable reward (1.0 when every check holds)."""
    return sum(r.passed for r in results) / len(results) if results else 1.0
