"""PII desensitisation: typed placeholders for e-mails, phones, bank cards, IBANs, SWIFT/BIC codes,
Chinese resident IDs, US SSNs and IP addresses, with per-type counts.

datatrove's ``PIIFormatter`` covers e-mails and IPs only, and a bare regex for the rest flags every
long number in a financial report. Each detector here pairs a loose pattern with the identifier's own
validation (Luhn, ISO 7064 mod 97-10 and MOD 11-2, calendar dates, assigned number ranges, real country
codes), so order numbers, amounts and table figures stay while the identifiers go. Detectors are data
(``DETECTORS``), and every function below is pure: text in, spans or booleans out.

Run it after ``Normalize``: patterns are ASCII, so full-width digits must already be NFKC-folded.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from collections.abc import Callable, Iterable
from typing import NamedTuple

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep


class Span(NamedTuple):
    start: int
    end: int
    type: str


# A match never continues an alphanumeric run, nor a dotted/dashed one (1.2.3.4.5, 12-345-6789-01). ASCII
# classes on purpose: ``\b`` treats CJK characters as word characters, and Chinese text has no spaces.
_WORD = "0-9A-Za-z_"
_LEFT = rf"(?<![{_WORD}])(?<![{_WORD}][.-])"
_RIGHT = rf"(?![{_WORD}])(?![.-][{_WORD}])"


def _codes(spec: str) -> frozenset[str]:
    """Expand "30-34 36" into {"30", ..., "34", "36"}; keeps the code tables short and readable."""
    codes = set()
    for item in spec.split():
        low, _, high = item.partition("-")
        width = len(low)
        codes.update(str(n).zfill(width) for n in range(int(low), int(high or low) + 1))
    return frozenset(codes)


# ISO 3166-1 alpha-2 plus XK (Kosovo), which SWIFT and the IBAN registry use.
COUNTRIES = frozenset(
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW "
    "BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ "
    "FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ "
    "IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH "
    "MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL "
    "PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD "
    "TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK".split()
)

# IBAN length per country, from the SWIFT IBAN registry; a country not listed has no IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}

# Assigned ITU country calling codes. The set is prefix-free, so a digit string has at most one code.
CALLING_CODES = _codes(
    "1 7 20 27 30-34 36 39 40 41 43-49 51-58 60-66 81 82 84 86 90-95 98 211-213 216 218 220-258 260-269 "
    "290 291 297-299 350-359 370-378 380-383 385-387 389 420 421 423 500-509 590-599 670 672-683 685-692 "
    "800 808 850 852 853 855 856 870 878 880-883 886 888 960-968 970-977 979 992-996 998"
)
# National significant number lengths where the numbering plan is fixed, so a trailing figure
# ("+1 415-555-0132 2023") is not swallowed; other codes accept 7-12 digits (E.164 caps the total at 15).
NATIONAL_LENGTHS = {"1": {10}, "7": {10}, "33": {9}, "44": {9, 10}, "61": {9}, "65": {8}, "81": {9, 10},
                    "86": {10, 11}, "91": {10}, "852": {8}, "853": {8}, "886": {8, 9}}
DEFAULT_NATIONAL_LENGTHS = range(7, 13)

# Card issuers by leading digits, with the lengths each issues. Luhn alone passes one random number in
# ten; requiring a real issuer prefix and length cuts that again, and keeps 18-digit Chinese resident IDs
# (provinces 50, 61-65) that happen to pass Luhn from reading as cards; only UnionPay issues 18 digits.
CARD_ISSUERS = (
    (re.compile(r"4"), {13, 16, 19}),  # Visa
    (re.compile(r"5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)"), {16}),  # Mastercard
    (re.compile(r"3[47]"), {15}),  # American Express
    (re.compile(r"35(?:2[89]|[3-8]\d)"), {16, 17, 18, 19}),  # JCB
    (re.compile(r"3(?:0[0-5]|[689])"), {14, 16, 19}),  # Diners Club
    (re.compile(r"62"), {16, 17, 18, 19}),  # UnionPay
    (re.compile(r"5[06-9]|6"), {16, 19}),  # Maestro, Discover (6011, 644-649, 65), RuPay
    (re.compile(r"9"), {16, 19}),  # Chinese domestic debit (9558, 9559, ...)
)

# Province-level prefixes of Chinese resident IDs (first digit 1-6 or 8; 71 Taiwan is never issued).
CN_PROVINCES = _codes("11-15 21-23 31-37 41-46 50-54 61-65 81-83")
_CN_ID_WEIGHTS = tuple(2 ** (17 - i) % 11 for i in range(17))
_CN_ID_CHECK = "10X98765432"


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number carries in its last digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def card_number_valid(digits: str) -> bool:
    """Luhn, and a length this issuer prefix actually issues."""
    return luhn_valid(digits) and any(
        prefix.match(digits) and len(digits) in lengths for prefix, lengths in CARD_ISSUERS
    )


def iban_valid(iban: str) -> bool:
    """ISO 13616: registry length for the country, then ISO 7064 mod 97-10 over the rotated string == 1."""
    iban = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rotated = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rotated)) % 97 == 1


def cn_id_valid(number: str, today: date | None = None) -> bool:
    """GB 11643: known province, a real birth date in 19xx/20xx not after today, ISO 7064 MOD 11-2 check."""
    number = number.upper()
    if len(number) != 18 or not number[:17].isdigit() or number[:2] not in CN_PROVINCES:
        return False
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if not 1900 <= year <= 2099:
        return False
    try:
        born = date(year, month, day)
    except ValueError:
        return False
    if born > (today or date.today()):
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _CN_ID_WEIGHTS))
    return _CN_ID_CHECK[total % 11] == number[17]


def ssn_valid(ssn: str) -> bool:
    """SSA rules: area 000, 666 and 9xx, group 00 and serial 0000 are never issued."""
    area, group, serial = ssn.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def calling_code(digits: str) -> str | None:
    """The country calling code a +-prefixed digit string starts with (codes are prefix-free)."""
    return next((digits[:n] for n in (1, 2, 3) if digits[:n] in CALLING_CODES), None)


def international_phone_end(match: re.Match) -> int | None:
    """Where a +-prefixed number ends: the longest run of its groups that is a plausible E.164 number.

    A spaced first group is the country code itself ("+44 20 ..."); trailing groups that would make the
    national number too long are dropped rather than failing the whole match.
    """
    groups = list(re.finditer(r"\d+", match.group()))
    first = groups[0].group()
    code = calling_code(first)
    if code is None or (len(first) <= 3 and code != first):
        return None
    allowed = NATIONAL_LENGTHS.get(code, DEFAULT_NATIONAL_LENGTHS)
    for count in range(len(groups), 0, -1):
        digits = "".join(group.group() for group in groups[:count])
        if len(digits) <= 15 and len(digits) - len(code) in allowed:
            return match.start() + groups[count - 1].end()
    return None


_BIC_LABEL = re.compile(r"(?<![A-Za-z_])(?:swift|bic|bank identifier code)(?![A-Za-z_])|银行代码|银行识别码",
                        re.IGNORECASE)
_BIC_LABEL_AFTER = re.compile(r"\s?[(（]\s?(?:SWIFT|BIC)", re.IGNORECASE)
_CAPS_WORD = re.compile(r"[A-Z]{2,}")
_CAPS_TOKEN = re.compile(r"[A-Z][A-Z0-9_]{5,}")  # a code, or a placeholder such as SWIFT_BIC


def bic_labelled(text: str, start: int, end: int, window: int = 32) -> bool:
    """A SWIFT/BIC label shortly before the code with no other capitalised token between, or "(BIC)" after.

    The label names one code: in "SWIFT: DEUTDEFF, BUSINESS" it is DEUTDEFF's, not BUSINESS's.
    """
    labels = list(_BIC_LABEL.finditer(text, max(0, start - window), start))
    if labels and not _CAPS_TOKEN.search(text, labels[-1].end(), start):
        return True
    return bool(_BIC_LABEL_AFTER.match(text, end))


def bic_valid(match: re.Match) -> bool:
    """A real country code, and either a SWIFT/BIC label or a code no English word looks like.

    Eight capital letters with a valid country in the middle are also DIVIDEND, BUSINESS, INTEREST; without
    a label we take only standalone codes (not inside a run of capitalised words) that contain a digit or
    the XXX head-office branch, which words never do. Labels inside placeholders (<SWIFT_BIC>) do not count.
    """
    text, start, end = match.string, match.start(), match.end()
    code = match.group()
    if code[4:6] not in COUNTRIES:
        return False
    if bic_labelled(text, start, end):
        return True
    neighbours = text[max(0, start - 24):start].split()[-1:] + text[end:end + 24].split()[:1]
    standalone = not any(_CAPS_WORD.fullmatch(word.strip(".,;:()\"'")) for word in neighbours)
    return standalone and (any(char.isdigit() for char in code) or code.endswith("XXX"))


def _accept_bic(match: re.Match) -> int | None:
    return match.end() if bic_valid(match) else None


def _match_end(match: re.Match) -> int:
    """Accept a match as is: its pattern is the whole check."""
    return match.end()


def _ip_valid(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return not address.is_unspecified


# Seeds: one cheap scan marks where an identifier could be, and detectors run only in small windows
# around the seeds they name, so clean prose costs one regex pass instead of eleven. The scan starts with
# a plain character class (which re skips through quickly) and names the seed in a group; seeds consume
# as little as possible, so one never swallows the start of another.
_SEEDS = re.compile(
    r"[0-9A-Z:@+(]"
    r"(?:(?<=[0-9])(?P<digit_run>[0-9 .-]{6,}[Xx]?)"  # 7+ characters of digits, spaces, dots, dashes
    r"|(?<=[A-Z])(?P<iban_head>[A-Z](?=[0-9][0-9]))"  # two capitals and two digits
    r"|(?<=[A-Z])(?P<caps_run>[A-Z]{5})"  # six capitals
    r"|(?<=:)(?P<colon>(?=[0-9A-Fa-f:]))"
    r"|(?<=@)(?P<at>)"
    r"|(?<=\+)(?P<plus>(?=[0-9]))"
    r"|(?<=\()(?P<paren>(?=[0-9])))"
)
_LOOKAHEAD = 2  # the widest right-boundary check (_RIGHT) looks two characters past a match


@dataclass(frozen=True)
class Detector:
    """A candidate pattern, the check that accepts a match, and where to look.

    ``accept(match)`` returns where the identifier ends (usually ``match.end()``; a phone can drop a trailing
    figure) or None to reject. Every identifier lies within ``reach`` characters of a ``seed`` (a group
    name of ``_SEEDS``).
    """

    type: str
    pattern: re.Pattern
    accept: Callable[[re.Match], int | None]
    seed: str
    reach: int

    def spans(self, text: str, start: int = 0, end: int | None = None) -> list[Span]:
        """Accepted spans inside ``text[start:end]``; boundary checks still see the text around it."""
        end = len(text) if end is None else end
        found = []
        for match in self.pattern.finditer(text, start, min(len(text), end + _LOOKAHEAD)):
            stop = self.accept(match)
            if stop is not None and stop <= end:
                found.append(Span(match.start(), stop, self.type))
        return found


# A number introduced as something other than a person's identifier: an order, invoice or tracking
# number is a record of a transaction, not of a person; a figure with a currency or unit is an amount or
# a quantity. Random numbers of a card's or ID's length pass Luhn (1 in 10) or MOD 11-2 (1 in 11) often
# enough to flag too many of them on shape alone. Only separators may stand between the label (or unit)
# and the number, so "order 12, card 4539..." still flags the card. An amount context exempts numbers
# that could be amounts: 15 digits and more (a card, a resident ID) are no amount anyone writes, so
# "Transfer the balance: 371738285758906" still flags the card.
_RECORD_LABEL = re.compile(
    r"(?:(?<![A-Za-z])(?:order|invoice|tracking|reference|ref|transaction|serial|batch|ticket|shipment|"
    r"waybill|parcel|contract|isbn|sku|confirmation)(?:\s*(?:number|no\.?|num\.?|id|code|#))?"
    r"|订单号|订单编号|单号|运单号|流水号|交易号|发票号码?|合同号|合同编号|序列号|批次号|工单号)"
    r"[\s:：#=为是约达]{0,3}$",
    re.IGNORECASE,
)
_AMOUNT_LABEL = re.compile(
    r"(?:[$¥￥€£]|(?<![A-Za-z])(?:USD|CNY|RMB|HKD|EUR|GBP|JPY|total|amount|balance|sum|revenue|sales)"
    r"|人民币|金额|余额|总额|合计|总计|共计|营收|收入|市值)"
    r"[\s:：#=为是约达]{0,3}$",
    re.IGNORECASE,
)
MAX_AMOUNT_DIGITS = 14
_UNIT_AFTER = re.compile(
    r"\s?(?:元|万|亿|美元|港元|欧元|英镑|日元|股|份|手|张|笔|件|%|‰"
    r"|(?:yuan|dollars?|euros?|USD|CNY|RMB|HKD|EUR|GBP|JPY|shares|units|tonnes|bps?|percent)(?![A-Za-z]))",
    re.IGNORECASE,
)


def introduced_as_not_personal(text: str, start: int, end: int, window: int = 32) -> bool:
    """Whether ``text[start:end]`` is labelled an order, invoice, tracking ... number, or is an amount of at most
    ``MAX_AMOUNT_DIGITS`` digits (see above)."""
    if _RECORD_LABEL.search(text, max(0, start - window), start):
        return True
    could_be_amount = sum(char.isdigit() for char in text[start:end]) <= MAX_AMOUNT_DIGITS
    return could_be_amount and bool(_AMOUNT_LABEL.search(text, max(0, start - window), start)
                                    or _UNIT_AFTER.match(text, end))


def _unless_not_personal(accept: Callable[[re.Match], int | None]) -> Callable[[re.Match], int | None]:
    """``accept``, but never for a number introduced as an order / invoice number or an amount."""
    return lambda match: (None if introduced_as_not_personal(match.string, match.start(), match.end())
                          else accept(match))


def _whole(check: Callable[[str], bool]) -> Callable[[re.Match], int | None]:
    """Accept the whole match when ``check`` passes on its text."""
    return lambda match: match.end() if check(match.group()) else None


def _digits_only(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: check(re.sub(r"\D", "", text))


def _without_separators(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: check(re.sub(r"[ -]", "", text))


def _detector(type_: str, pattern: str, accept: Callable[[re.Match], int | None], seed: str, reach: int) -> Detector:
    """ASCII semantics: ``\\d`` is [0-9] only, as every check downstream assumes."""
    return Detector(type_, re.compile(pattern, re.ASCII), accept, seed, reach)


def _iban_pattern() -> str:
    """One alternative per IBAN length, so a match stops exactly where the country's IBAN does."""
    by_length: dict[int, list[str]] = {}
    for country, length in sorted(IBAN_LENGTHS.items()):
        by_length.setdefault(length, []).append(country)
    alternatives = []
    for length, countries in sorted(by_length.items()):
        full_groups, rest = divmod(length - 4, 4)
        body = f"(?: ?[A-Z0-9]{{4}}){{{full_groups}}}" + (f" ?[A-Z0-9]{{{rest}}}" if rest else "")
        alternatives.append(f"(?:{'|'.join(countries)})\\d\\d{body}")
    return f"{_LEFT}(?:{'|'.join(alternatives)}){_RIGHT}"


# From most to least specific: on equally long overlapping spans the earlier type wins.
DETECTORS: tuple[Detector, ...] = (
    # 18 characters, or written in groups as on the card: 6 (region) - 8 (birth date) - 4.
    _detector("CN_ID", rf"{_LEFT}(?:\d{{17}}[\dXx]|\d{{6}}(?P<cn_sep>[ -])\d{{8}}(?P=cn_sep)\d{{3}}[\dXx]){_RIGHT}",
              _unless_not_personal(_whole(_without_separators(cn_id_valid))), "digit_run", 22),
    _detector("IBAN", _iban_pattern(), _whole(iban_valid), "iban_head", 44),
    _detector(
        "BANK_CARD",
        rf"{_LEFT}(?:\d{{13,19}}"
        rf"|(?<!\d[ -])\d{{4}}(?P<sep>[ -])\d{{4}}(?:(?P=sep)\d{{4}}){{1,3}}(?:(?P=sep)\d{{1,3}})?(?![ -]\d)"
        rf"|(?<!\d[ -])3[47]\d\d(?P<amex>[ -])\d{{6}}(?P=amex)\d{{5}}(?![ -]\d)){_RIGHT}",
        _unless_not_personal(_whole(_digits_only(card_number_valid))), "digit_run", 25,
    ),
    _detector("US_SSN", rf"{_LEFT}\d{{3}}-\d{{2}}-\d{{4}}{_RIGHT}", _whole(ssn_valid), "digit_run", 13),
    _detector("SWIFT_BIC", rf"{_LEFT}[A-Z]{{6}}[A-Z0-9]{{2}}(?:[A-Z0-9]{{3}})?{_RIGHT}", _accept_bic, "caps_run", 13),
    _detector("IP", rf"{_LEFT}(?:\d{{1,3}}\.){{3}}\d{{1,3}}{_RIGHT}", _whole(_ip_valid), "digit_run", 17),
    _detector("IP", r"(?<![0-9A-Za-z_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
                    r"(?![0-9A-Za-z_:])(?!\.\d)", _whole(_ip_valid), "colon", 47),
    _detector("EMAIL", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                       rf"[A-Za-z]{{2,24}}{_RIGHT}", _match_end, "at", 330),
    # Chinese mobile: 1[3-9] + 9 digits, 3-4-4 grouping, optional 0086 (+86 is the international pattern's).
    _detector("PHONE", rf"{_LEFT}(?:0086[ -]?)?1[3-9]\d(?:[ -]?\d{{4}}){{2}}{_RIGHT}",
              _unless_not_personal(_match_end), "digit_run", 20),
    # E.164: at most 15 digits, so at most 30 characters with separators.
    _detector("PHONE", rf"(?<![0-9+])\+\d+(?:[ -]\d+)*{_RIGHT}", international_phone_end, "plus", 40),
    # North American (xxx) xxx-xxxx: area code and exchange never start with 0 or 1.
    _detector("PHONE", rf"{_LEFT}(?:\+?1[ -]?)?\([2-9]\d\d\)[ -]?[2-9]\d\d[ -]\d{{4}}{_RIGHT}", _match_end,
              "paren", 20),
)
PII_TYPES: tuple[str, ...] = tuple(dict.fromkeys(detector.type for detector in DETECTORS))
_SPECIFICITY = {type_: rank for rank, type_ in enumerate(PII_TYPES)}


def _windows(seeds: list[tuple[int, int]], reach: int, length: int) -> list[tuple[int, int]]:
    """Merged ``[start - reach, end + reach]`` ranges around seeds given in text order."""
    windows: list[tuple[int, int]] = []
    for start, end in seeds:
        low, high = max(0, start - reach), min(length, end + reach)
        if windows and low <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], high))
        else:
            windows.append((low, high))
    return windows


# What a text calls an identifier right before it, for ``require_label``: the number types whose shape alone
# random figures share at a checksum's chance rate. Other types (e-mail, IP, IBAN, SWIFT/BIC) are unaffected.
IDENTIFIER_LABELS = {
    "BANK_CARD": re.compile(r"(?<![A-Za-z])(?:card|account)(?:\s*(?:number|no\.?|#))?|卡号|银行卡|信用卡|借记卡|账号|账户",
                            re.IGNORECASE),
    "CN_ID": re.compile(r"(?<![A-Za-z])(?:id|identity|identification)(?![A-Za-z])|身份证|证件号|公民身份号码",
                        re.IGNORECASE),
    "PHONE": re.compile(r"(?<![A-Za-z])(?:phone|mobile|tel|telephone|cell|call|contact|whatsapp|fax)(?![A-Za-z])"
                        r"|电话|手机|致电|联系方式|热线|传真", re.IGNORECASE),
    "US_SSN": re.compile(r"(?<![A-Za-z])(?:ssn|social security)(?![A-Za-z])|社会安全号", re.IGNORECASE),
}
LABEL_WINDOW = 32


def labelled(text: str, span: Span) -> bool:
    """Whether the text names the identifier's kind within ``LABEL_WINDOW`` characters before it."""
    label = IDENTIFIER_LABELS.get(span.type)
    return label is None or bool(label.search(text, max(0, span.start - LABEL_WINDOW), span.start))


def detect(text: str, types: Iterable[str] = PII_TYPES, require_label: bool = False) -> list[Span]:
    """Every accepted span of the enabled types, overlapping ones included, in text order; with
    ``require_label``, the number types only where the text labels them.

    Same result as running each detector over the whole text (the tests check it), at a fraction of the cost.
    """
    seeds: dict[str, list[tuple[int, int]]] = {}
    for match in _SEEDS.finditer(text):
        seeds.setdefault(match.lastgroup, []).append(match.span())
    wanted = set(types)
    found: set[Span] = set()
    for detector in DETECTORS:
        if detector.type in wanted:
            for start, end in _windows(seeds.get(detector.seed, []), detector.reach, len(text)):
                found.update(detector.spans(text, start, end))
    return sorted(span for span in found if not require_label or labelled(text, span))


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep non-overlapping spans, longest first, then the more specific type, then the earlier; in text order."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, _SPECIFICITY[s.type], s.start)):
        if all(span.end <= other.start or other.end <= span.start for other in kept):
            kept.append(span)
    return sorted(kept)


def replace_spans(text: str, spans: list[Span], placeholder: str) -> str:
    """Substitute non-overlapping spans (in text order) with ``placeholder.format(type=...)``."""
    pieces, position = [], 0
    for span in spans:
        pieces += [text[position:span.start], placeholder.format(type=span.type)]
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)


def desensitize(text: str, types: Iterable[str] = PII_TYPES, placeholder: str = "<{type}>",
                max_rounds: int = 16, require_label: bool = False) -> tuple[str, Counter]:
    """Replace identifiers until none is left; returns the new text and the count per type.

    A placeholder is a cleaner boundary than the identifier it replaced, so a neighbour glued to it and
    rejected as part of a longer run ("123-45-6789+44 20 7946 0958") becomes detectable; repeating until
    nothing changes makes a second run a no-op. Each round can only unlock identifiers glued to one replaced
    in the round before, so real text needs one or two rounds; ``max_rounds`` caps pathological chains.
    """
    types = tuple(types)
    counts: Counter = Counter()
    for _ in range(max_rounds):
        spans = resolve_overlaps(detect(text, types, require_label))
        if not spans:
            break
        counts.update(span.type for span in spans)
        text = replace_spans(text, spans, placeholder)
    return text, counts


class PIIDesensitizer(PipelineStep):
    """Replace PII in ``doc.text`` with typed placeholders (``<EMAIL>``, ``<PHONE>``, ...).

    ``types``: which of ``PII_TYPES`` to detect (default all). ``placeholder``: a format string with
    ``{type}``; it must start and end with a non-alphanumeric character so it stays a token boundary.
    ``require_label``: cards, resident IDs, phones and SSNs only where the text labels them.
    Counts go to stats (``pii_<TYPE>``, ``docs_with_pii``, ``docs_without_pii``) and are added to
    ``doc.metadata["pii"]`` as type -> count (a non-dict value there, such as a ground-truth list read
    along with the text, is replaced); the raw values are never kept anywhere.
    """

    name = "🕵️ PII desensitize"
    type = "🔻 - FORMAT"

    def __init__(self, types: Iterable[str] | None = None, placeholder: str = "<{type}>", require_label: bool = False):
        super().__init__()
        self.require_label = require_label
        self.types = tuple(PII_TYPES if types is None else types)
        unknown = sorted(set(self.types) - set(PII_TYPES))
        if unknown:
            raise ValueError(f"unknown PII type(s) {unknown}; choose from {list(PII_TYPES)}")
        for type_ in self.types:
            marker = placeholder.format(type=type_)
            if not marker or marker[0].isalnum() or marker[-1].isalnum() or detect(f"a {marker} a", PII_TYPES):
                raise ValueError(f"placeholder {placeholder!r} gives {marker!r}, which must start and end with "
                                 "a non-alphanumeric character and contain no PII pattern")
        self.placeholder = placeholder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.text, counts = desensitize(doc.text, self.types, self.placeholder,
                                               require_label=self.require_label)
            found = doc.metadata.get("pii")
            if not isinstance(found, dict):
                found = doc.metadata["pii"] = {}
            for type_, count in sorted(counts.items()):
                found[type_] = found.get(type_, 0) + count
                self.stat_update(f"pii_{type_}", value=count)
            self.stat_update("docs_with_pii" if counts else "docs_without_pii")
            yield doc
