"""Heuristic quality and spam filters for English and Chinese text, routed by ``metadata["lang"]``.

datatrove's Gopher, C4 and FineWeb filters are reused as they are; what changes per language is a
table of thresholds and the word tokenizer they are given. ``ScriptWordTokenizer`` needs no model
(datatrove's default English tokenizer is spaCy, its Chinese one spaCy + jieba): words are what
whitespace separates, as in the Gopher paper, and every Han or kana character is a word of its own,
so the same word-based rules become character-based rules for Chinese, with thresholds of their own.

Finance documents carry tables of figures ("Revenue | 1,234.5 | 1,100.2 | +12.2%"). Every routed
rule reads a *prose view* of the document, its numeric table lines left out, so tables never count
against a document; what is kept is always the original text, untouched.

``build_quality_filters(config)`` is the one entry point: a spam filter for every language, then
each language's rules, each applied only to documents tagged with that language.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from collections import Counter
from copy import deepcopy
from collections.abc import Callable
from functools import lru_cache

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.word_tokenizers import WordTokenizer

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_CJK_PUNCT = "\u3000-\u303f\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}{_CJK_PUNCT}]|[^\s{_CJK}{_CJK_PUNCT}]+")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)|[。！？]+[”’」』）]*")


class ScriptWordTokenizer(WordTokenizer):
    """Whitespace-separated words, as the Gopher paper counts them, and one token per Han, kana or
    full-width punctuation character.

    Sentences end at . ! ? before a space or the end, and at 。！？ anywhere.
    """

    def word_tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[start:end] for start, end in self.span_tokenize(text)]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for end in [match.end() for match in _SENTENCE_END.finditer(text)] + [len(text)]:
            sentence = text[start:end]
            if sentence.strip():
                spans.append((start + len(sentence) - len(sentence.lstrip()), end))
            start = end
        return spans


# A figure: optional sign/bracket/currency, digits with separators, optional unit (%, pp, bn, 亿元 ...).
_FIGURE = re.compile(
    r"[(（]?[-+−±]?[$¥€£]?\d[\d,，]*(?:\.\d+)?"
    r"(?:%|‰|x|倍|pp|bp|bps|p\.p\.|bn|mn|m|k|[万亿]?元|[万亿]|个百分点|年|年度|Q[1-4]|H[12]|FY\d*|E)?[)）]?",
    re.IGNORECASE,
)
_CELL_SPLIT = re.compile(r"\s*[|\t│]\s*")
_RULE_LINE = re.compile(r"[|:+\s─━┼│]*[-=─━]{3,}[-=|:+\s─━┼│]*")
_SENTENCE_PUNCT = (".", "!", "?", "。", "！", "？", "；", ";", ":", "：")


def _is_figure_cell(cell: str) -> bool:
    """A cell holding a figure or a period label ("4,019.8", "(5,432.1)", "+12.2%", "Q1 2021", "2023年Q3")."""
    return len(cell) <= 24 and any(ch.isdigit() for ch in cell) and not cell.endswith(_SENTENCE_PUNCT)


def _is_delimited(line: str) -> bool:
    return "|" in line or "\t" in line or "│" in line


def _cells(line: str) -> list[str]:
    return [cell for cell in _CELL_SPLIT.split(line.strip().strip("|│ ")) if cell]


def is_table_line(line: str) -> bool:
    """True for a numeric table row: a label then figures, in delimited cells or separated by spaces.

    Delimited (| or tab): figures fill at least half of the cells after the label. Separated by
    spaces (whitespace normalisation leaves one): the line ends with two or more figures and no
    sentence punctuation. Rule lines (|---|---|) count too. Navigation bars ("Home | About |
    Login") and sentences with numbers in them are not table rows.
    """
    stripped = line.strip()
    if not stripped:
        return False
    if _RULE_LINE.fullmatch(stripped):
        return True
    if _is_delimited(stripped):
        cells = _cells(stripped)
        figures = sum(_is_figure_cell(cell) for cell in cells[1:])
        return figures >= 1 and figures * 2 >= len(cells) - 1
    if stripped.endswith(_SENTENCE_PUNCT):
        return False
    tokens = stripped.split()
    trailing_figures = 0
    while trailing_figures < len(tokens) and _FIGURE.fullmatch(tokens[-1 - trailing_figures]):
        trailing_figures += 1
    return trailing_figures >= 2


@lru_cache(maxsize=16)
def prose_view(text: str) -> str:
    """The text without its numeric table rows (and their header rows): what ratio rules should judge.

    A header row is a delimited line of three or more cells right above a numeric row.
    """
    lines = text.split("\n")
    table = [is_table_line(line) for line in lines]
    for index in range(len(lines) - 1):
        if table[index + 1] and not table[index] and _is_delimited(lines[index]) and len(_cells(lines[index])) >= 3:
            table[index] = True
    return "\n".join(line for line, in_table in zip(lines, table) if not in_table)


_SCRIPTS = {
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f]"),
    "han": _HAN,
}


# Stray markup and decoration; % $ & stay out, finance text is full of them.
_ASCII_NOISE = "#*<>@[]\\^_`{|}~"
_MAYBE_SYMBOL = re.compile(rf"[^\x00-\x7f{_CJK}{_CJK_PUNCT}]")


def count_symbols(text: str) -> int:
    """Stray ASCII markup, pictographs, dingbats, box art, private-use and replacement characters."""
    ascii_noise = sum(text.count(char) for char in _ASCII_NOISE)
    return ascii_noise + sum(
        char == "\ufffd" or unicodedata.category(char) in ("So", "Sk", "Co", "Cn", "Cs")
        for char in _MAYBE_SYMBOL.findall(text)
    )


class ScriptQualityFilter(BaseFilter):
    """Character-level checks that need no word boundaries.

    ``script_ratio``: words written in the language's own script (``latin`` or ``han``; a Han
    character is a word) over all words with a letter, as ``identify_language`` counts them, so a
    Chinese report full of English tickers still counts as Chinese. ``symbol_ratio``: symbols
    (stray ASCII markup such as ``{ } ~ ^ @ #``, emoji, dingbats, box art, private-use, U+FFFD)
    over non-space characters.
    """

    name = "🔣 script quality"

    def __init__(self, script: str, min_script_ratio: float | None = 0.5, max_symbol_ratio: float | None = 0.05,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        if script not in _SCRIPTS:
            raise ValueError(f"script must be one of {sorted(_SCRIPTS)}, got {script!r}")
        self.script = script
        self.min_script_ratio = min_script_ratio
        self.max_symbol_ratio = max_symbol_ratio

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        words = [token for token in _TOKEN.findall(doc.text) if any(ch.isalpha() for ch in token)]
        if not words:
            return False, "no_letters"
        if self.min_script_ratio is not None:
            in_script = sum(bool(_SCRIPTS[self.script].search(word)) for word in words)
            if in_script / len(words) < self.min_script_ratio:
                return False, "script_ratio"
        if self.max_symbol_ratio is not None:
            visible = len(doc.text) - sum(doc.text.count(space) for space in " \n\t\u3000")
            if count_symbols(doc.text) / visible > self.max_symbol_ratio:
                return False, "symbol_ratio"
        return True


class LanguageRoutedFilter(BaseFilter):
    """Apply ``inner`` only to documents whose ``metadata["lang"]`` is ``lang``; forward all others.

    ``inner`` judges a copy of the document (its prose view when ``exempt_tables``); the document
    itself is never modified (C4's line removals only inform its verdict). Reasons are prefixed
    with the language (``en_gopher_short_doc``), and ``inner``'s own counters (C4's line counts)
    land in this step's stats.
    """

    def __init__(self, inner: BaseFilter, lang: str, exempt_tables: bool = True, exclusion_writer=None):
        self.name = f"{inner.name} [{lang}]"
        super().__init__(exclusion_writer)
        self.inner = inner
        self.inner.stats = self.stats
        self.lang = lang
        self.exempt_tables = exempt_tables

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("lang") != self.lang:
            self.stat_update("other_language")
            return True
        text = prose_view(doc.text) if self.exempt_tables else doc.text
        if len(text) != len(doc.text):
            self.stat_update("table_lines_exempted", value=doc.text.count("\n") - text.count("\n"))
        keep, reason = _result(self.inner.filter(Document(text=text, id=doc.id, metadata=dict(doc.metadata))))
        return True if keep else (False, f"{self.lang}_{reason or type(self.inner).__name__}")


def _result(result) -> tuple[bool, str | None]:
    return result if isinstance(result, tuple) else (result, None)


# Calls to action, prize bait, gambling and contact-me ads, adult terms kept non-explicit. Words that
# finance text uses legitimately stay out: Macau "baccarat"/"博彩" revenue, "buy now, pay later",
# investor-education quotes of scam slogans ("稳赚不赔"), "XXX公司" placeholders.
SPAM_PATTERNS = {
    "en": [
        r"\bclick here\b", r"\bclaim your\b", r"\byou have been selected\b", r"\blucky visitor\b",
        r"\bcongratulations!+", r"\bno purchase (?:needed|necessary)\b", r"\boffer ends in\b",
        r"\bfree (?:iphone|gift card|cash prize|spins)\b", r"\bwin an? (?:free|iphone|new car)\b",
        r"\bonline casino\b", r"\bcasino bonus\b", r"\bbet now\b", r"\bviagra\b", r"\bcialis\b",
        r"\bporn\w*", r"\badult (?:videos?|dating)\b", r"\bhot singles\b", r"\bwhatsapp me\b",
    ],
    "zh": [
        r"点击(?:这里|领取|下载)", r"免费领取", r"立即领取", r"恭喜您", r"幸运访客", r"您已被选中",
        r"先到先得", r"无需任何费用", r"仅剩\d+(?:份|名)", r"加(?:微信|微|V|QQ|群)号?\s*[:：]?\s*[A-Za-z0-9]",
        r"微信号[:：]", r"扫码(?:领取|加群)", r"网上赌场", r"在线博彩", r"博彩网站", r"真人百家乐",
        r"六合彩开奖", r"时时彩", r"老虎机", r"注册即?送", r"色情", r"成人(?:视频|影片|网站)", r"约炮", r"代开发票",
    ],
}

# Abuse, threats and harassment aimed at a reader; kept to unambiguous phrases (no single swear words, which
# quoted complaints in customer-service transcripts legitimately contain), so two hits are needed.
TOXIC_PATTERNS = {
    "en": [
        r"\bkill yourself\b", r"\bkys\b", r"\bgo die\b", r"\bi will (?:kill|hurt|find) you\b",
        r"\byou (?:stupid|worthless|pathetic) (?:idiot|moron|piece of)\b", r"\bshut up,? you\b",
        r"\bi hope you die\b", r"\bpiece of (?:shit|garbage)\b", r"\bbunch of (?:idiots|morons)\b",
    ],
    "zh": [
        r"去死吧?", r"傻逼", r"煞笔", r"脑残", r"废物东西", r"滚蛋", r"弄死你", r"砍死你", r"全家死光", r"狗东西", r"你妈的",
    ],
}

_STUFFING_STOP_TOKENS = frozenset(
    "the of and a an to in is are for on that by with as at or be it its this from which "
    "的 是 在 了 和 与 为 对 等 及 或".split()
)


MAX_TERM_TOKENS = 4


def top_term_share(tokens: list[str]) -> float:
    """Share of ``tokens`` covered by the most repeated term of 1 to ``MAX_TERM_TOKENS`` tokens.

    A term counts only if it occurs at least 3 times and is not made of stop words alone; SEO
    stuffing ("swap best swap cheap swap online ...") has one term cover half its tokens.
    """
    best = 0.0
    for size in range(1, MAX_TERM_TOKENS + 1):
        counts = Counter(tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1))
        for term, count in counts.most_common(3):
            if count >= 3 and not all(token in _STUFFING_STOP_TOKENS for token in term):
                best = max(best, count * size / len(tokens))
    return best


def stuffing_tokens(line: str) -> list[str]:
    """Lower-cased words and Han characters, punctuation dropped."""
    return [token.lower().strip(".,;:!?()[]\"'“”‘’") for token in _TOKEN.findall(line) if token[0].isalnum()]


def _any_of(patterns: list[str]) -> re.Pattern:
    """One case-insensitive alternation, behind a lookahead on the patterns' first letters when they all
    start with one: the engine then skips most positions at once (about 3x faster on prose)."""
    firsts = set()
    for pattern in patterns:
        first = pattern.removeprefix(r"\b")[:1]
        if not first.isalnum():
            return re.compile("|".join(patterns), re.IGNORECASE)
        firsts |= {first.lower(), first.upper()}
    return re.compile(f"(?=[{''.join(sorted(firsts))}])(?:{'|'.join(patterns)})", re.IGNORECASE)


class SpamFilter(BaseFilter):
    """Ads, scams, SEO pages and abusive text, in English and Chinese alike.

    ``spam_keywords``: at least ``min_keyword_hits`` matches of ``SPAM_PATTERNS`` (all languages'
    patterns, as spam pages mix them). ``toxic``: at least ``min_toxic_hits`` matches of
    ``TOXIC_PATTERNS`` (None turns it off). ``keyword_stuffing``: in some window of ``stuffing_window``
    tokens (words; single Han characters) of a line, one repeated term covers more than
    ``max_term_share`` of the tokens. Lines shorter than the window are judged whole from
    ``stuffing_window // 2`` tokens on.
    """

    name = "🚫 spam"

    def __init__(
        self,
        min_keyword_hits: int = 3,
        max_term_share: float | None = 0.5,
        stuffing_window: int = 40,
        extra_patterns: list[str] | None = None,
        min_toxic_hits: int | None = 2,
        extra_toxic_patterns: list[str] | None = None,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        patterns = [p for language_patterns in SPAM_PATTERNS.values() for p in language_patterns]
        self.spam_regex = _any_of(patterns + list(extra_patterns or []))
        toxic = [p for language_patterns in TOXIC_PATTERNS.values() for p in language_patterns]
        self.toxic_regex = _any_of(toxic + list(extra_toxic_patterns or []))
        self.min_toxic_hits = min_toxic_hits
        self.min_keyword_hits = min_keyword_hits
        self.max_term_share = max_term_share
        self.stuffing_window = stuffing_window

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        hits = sum(1 for _ in zip(range(self.min_keyword_hits), self.spam_regex.finditer(doc.text)))
        if hits >= self.min_keyword_hits:
            return False, "spam_keywords"
        if self.min_toxic_hits is not None:
            toxic = sum(1 for _ in zip(range(self.min_toxic_hits), self.toxic_regex.finditer(doc.text)))
            if toxic >= self.min_toxic_hits:
                return False, "toxic"
        if self.max_term_share is not None and self._stuffed(doc.text):
            return False, "keyword_stuffing"
        return True

    def _stuffed(self, text: str) -> bool:
        window, step = self.stuffing_window, max(self.stuffing_window // 4, 1)
        for line in text.split("\n"):
            tokens = stuffing_tokens(line)
            if len(tokens) < window // 2 or not self._may_be_stuffed(tokens, min(window, len(tokens))):
                continue
            for start in range(0, max(len(tokens) - window, 0) + 1, step):
                chunk = tokens[start : start + window]
                if self._may_be_stuffed(chunk, len(chunk)) and top_term_share(chunk) > self.max_term_share:
                    return True
        return False

    def _may_be_stuffed(self, tokens: list[str], length: int) -> bool:
        """A term occurs at most as often as its most frequent non-stop token: a cheap upper bound."""
        counts = Counter(token for token in tokens if token not in _STUFFING_STOP_TOKENS)
        return bool(counts) and counts.most_common(1)[0][1] * MAX_TERM_TOKENS > self.max_term_share * length


WORDS = ScriptWordTokenizer()

RULES = {
    "script_quality": ScriptQualityFilter,
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "fineweb_quality": FineWebQualityFilter,
    "c4_quality": C4QualityFilter,
}

ZH_STOP_CHARS = ("。", "！", "？", "!", "?", ".", "…", "”", "」", "』")

# Per-language rule tables: rule name -> constructor arguments. English keeps datatrove's defaults
# (the published Gopher/C4/FineWeb thresholds), except C4's per-line terminal punctuation, which
# FineWeb's line_punct_ratio covers without failing lines that end in a curly quote. Chinese counts
# characters where English counts words, at about two characters a word: Gopher's 5..10-word
# duplicate n-grams become 10..20 characters; its top 2..4-word n-gram thresholds are raised for
# the 3..8-character n-grams by the spaces datatrove's join puts between characters.
DEFAULT_LANGUAGE_RULES: dict[str, dict[str, dict]] = {
    "en": {
        "script_quality": {"script": "latin", "min_script_ratio": 0.6, "max_symbol_ratio": 0.05},
        "gopher_quality": {},
        "gopher_repetition": {},
        "fineweb_quality": {},
        "c4_quality": {"filter_no_terminal_punct": False},
    },
    "zh": {
        "script_quality": {"script": "han", "min_script_ratio": 0.5, "max_symbol_ratio": 0.05},
        "gopher_quality": {
            "min_doc_words": 80, "max_doc_words": 200_000, "min_avg_word_length": None, "max_avg_word_length": None,
            "max_non_alpha_words_ratio": 0.6, "min_stop_words": 2,
            "stop_words": ["的", "是", "在", "了", "和", "有", "为", "与", "对", "不", "等"],
        },
        "gopher_repetition": {
            "top_n_grams": ((3, 0.33), (5, 0.32), (8, 0.30)),
            "dup_n_grams": ((10, 0.15), (14, 0.13), (20, 0.10)),
        },
        "fineweb_quality": {"stop_chars": ZH_STOP_CHARS, "short_line_length": 12},
    },
}


def _checked_options(path: str, step_class: type, options: dict) -> dict:
    """``options`` for ``step_class``, plus our tokenizer where it takes a ``language``; unknown names raise."""
    parameters = set(inspect.signature(step_class.__init__).parameters)
    allowed = sorted(parameters - {"self", "exclusion_writer", "language"})
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {sorted(unknown)}; allowed: {allowed}")
    return {**options, "language": WORDS} if "language" in parameters else dict(options)


def build_quality_filters(config: dict | None = None,
                          exclusion_writer: Callable[[], DiskWriter] | None = None) -> list[PipelineStep]:
    """Spam filter, then every language's rules, each routed to documents of that language.

    ``config`` (every key optional) overrides the defaults::

        {"exempt_tables": True,
         "spam": {"min_keyword_hits": 2, ...} | False,
         "languages": {"en": {"c4_quality": False, "gopher_quality": {"min_doc_words": 30}},
                       "zh": {...}}}

    A rule's options are merged onto ``DEFAULT_LANGUAGE_RULES``; ``False`` or ``None`` turns a
    rule off; a new language needs its rules spelled out. Documents tagged with a language that
    has no rules, or untagged, pass every rule.
    """
    config = config or {}
    unknown = set(config) - {"exempt_tables", "spam", "languages"}
    if unknown:
        raise ValueError(f"quality: unknown key(s) {sorted(unknown)}; allowed: ['exempt_tables', 'languages', 'spam']")
    steps: list[PipelineStep] = []
    spam = config.get("spam", {})
    if spam not in (False, None):
        options = _checked_options("quality.spam", SpamFilter, spam)
        steps.append(SpamFilter(**options, exclusion_writer=exclusion_writer and exclusion_writer()))
    language_rules = deepcopy(DEFAULT_LANGUAGE_RULES)
    for lang, overrides in (config.get("languages") or {}).items():
        rules = language_rules.setdefault(lang, {})
        for rule, arguments in (overrides or {}).items():
            if rule not in RULES:
                raise ValueError(f"quality.languages.{lang}.{rule}: unknown rule; allowed: {sorted(RULES)}")
            if arguments in (False, None):
                rules[rule] = None
            else:
                rules[rule] = {**(rules.get(rule) or {}), **arguments}
    exempt_tables = config.get("exempt_tables", True)
    for lang, rules in language_rules.items():
        for rule, arguments in rules.items():
            if arguments is None:
                continue
            inner = RULES[rule](**_checked_options(f"quality.languages.{lang}.{rule}", RULES[rule], arguments))
            steps.append(LanguageRoutedFilter(inner, lang, exempt_tables,
                                              exclusion_writer=exclusion_writer and exclusion_writer()))
    return steps
