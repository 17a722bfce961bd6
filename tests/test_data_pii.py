"""PII desensitisation: checksums against hand-worked examples, detectors on positives and look-alikes,
Chinese text without spaces, counts in stats and metadata, idempotence, and the starter corpora's planted PII."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from datetime import date

import pytest
from datatrove.data import Document

from finloom.data.pii import (
    CALLING_CODES,
    COUNTRIES,
    DETECTORS,
    IBAN_LENGTHS,
    PII_TYPES,
    PIIDesensitizer,
    Span,
    card_number_valid,
    cn_id_valid,
    desensitize,
    detect,
    iban_valid,
    luhn_valid,
    resolve_overlaps,
    ssn_valid,
)
from finloom.recipe import STARTER_DATA_DIR

# Starter corpora name their planted PII types in lower case; ours are the placeholder names.
STARTER_TYPES = {"email": "EMAIL", "phone": "PHONE", "bank_card": "BANK_CARD", "iban": "IBAN",
                 "us_ssn": "US_SSN", "cn_resident_id": "CN_ID"}


def scrub(text: str) -> str:
    return desensitize(text)[0]


# --- checksums, worked by hand -------------------------------------------------------------------


def test_luhn_by_hand():
    # 4539 1488 0343 6467, from the right: undoubled 7+4+3+3+8+4+9+5 = 43; doubled 6,6,4,0,8,1,3,4 ->
    # 12,12,8,0,16,2,6,8 -> digit sums 3+3+8+0+7+2+6+8 = 37; 43 + 37 = 80, a multiple of 10.
    assert luhn_valid("4539148803436467")
    assert not luhn_valid("4539148803436468")
    assert not luhn_valid("4539148803436476")  # two digits swapped
    assert card_number_valid("4539148803436467")
    assert card_number_valid("6222020200112233446")  # UnionPay, 19 digits
    assert card_number_valid("378282246310005")  # Amex test number, 15 digits


def _with_check_digit(body: str) -> str:
    return next(body + str(digit) for digit in range(10) if luhn_valid(body + str(digit)))


def test_card_needs_issuer_prefix_and_length():
    assert _with_check_digit("123456781234567") == "1234567812345670"
    assert not card_number_valid("1234567812345670")  # Luhn passes, but no issuer starts with 1
    assert not card_number_valid(_with_check_digit("45391488034364671"))  # Visa issues 13, 16, 19 digits, not 18
    assert not card_number_valid(_with_check_digit("51234567812345678"))  # Mastercard is 16 digits only
    assert card_number_valid(_with_check_digit("512345678123456"))


def test_iban_by_hand():
    # GB82WEST12345698765432 -> WEST12345698765432GB82 -> letters as 10..35:
    # 3214282912345698765432161182, and that number mod 97 is 1.
    assert int("3214282912345698765432161182") % 97 == 1
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("GB83 WEST 1234 5698 7654 32")  # check digits
    assert not iban_valid("GB82 WEST 1234 5698 7654 3")  # GB IBANs have 22 characters
    assert not iban_valid("ZZ82 WEST 1234 5698 7654 32")  # no such country


def test_cn_id_by_hand():
    # weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 over 11010519491231002: sum 167, 167 mod 11 = 2 -> 'X'.
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    assert sum(int(digit) * weight for digit, weight in zip("11010519491231002", weights)) == 167
    assert cn_id_valid("11010519491231002X")
    assert cn_id_valid("11010519491231002x")
    assert not cn_id_valid("110105194912310021")  # check character
    assert not cn_id_valid("11010519491231002X0") and not cn_id_valid("11010519491231002")  # 19 and 17 characters
    assert not cn_id_valid("110105194902300020")  # 30 February, with the check character right for it
    assert not cn_id_valid("910105194912310029")  # no province 91
    assert not cn_id_valid("11010519491231002X", today=date(1949, 12, 30))  # born tomorrow


def test_ssn_rules():
    assert ssn_valid("123-45-6789")
    for never_issued in ("000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"):
        assert not ssn_valid(never_issued)


def test_code_tables():
    assert len(COUNTRIES) == 250  # ISO 3166-1 alpha-2 (249) + XK
    assert set(IBAN_LENGTHS) <= COUNTRIES
    # Calling codes must be prefix-free, or a number without spaces would have two readings.
    assert not any(code[:n] in CALLING_CODES for code in CALLING_CODES for n in range(1, len(code)))


# --- detectors ---------------------------------------------------------------------------------------

POSITIVES = [
    ("mail me at Jane.Doe+bank@mail.example.co.uk.", "mail me at <EMAIL>."),
    ("客户手机13812345678，卡号6222020200112233446", "客户手机<PHONE>，卡号<BANK_CARD>"),
    ("电话：138 1234 5678 或 0086-139-1234-5678", "电话：<PHONE> 或 <PHONE>"),
    ("call +44 20 7946 0958 or +1 415-555-0132 or +8613812345678", "call <PHONE> or <PHONE> or <PHONE>"),
    ("office (415) 555-0132, fax +1 (212) 555-0199", "office <PHONE>, fax <PHONE>"),
    ("card 4539 1488 0343 6467, Amex 3782-822463-10005", "card <BANK_CARD>, Amex <BANK_CARD>"),
    ("IBAN GB82 WEST 1234 5698 7654 32 or DE89370400440532013000.", "IBAN <IBAN> or <IBAN>."),
    ("SWIFT: DEUTDEFF; BIC code BOFAUS3NXXX", "SWIFT: <SWIFT_BIC>; BIC code <SWIFT_BIC>"),
    ("pay COBADEFF (BIC) or SWIFT/BIC: BNPAFRPP, BUSINESS",
     "pay <SWIFT_BIC> (BIC) or SWIFT/BIC: <SWIFT_BIC>, BUSINESS"),
    ("汇款银行代码BKCHCNBJ，账户", "汇款银行代码<SWIFT_BIC>，账户"),
    ("wire to HSBCGB2L today", "wire to <SWIFT_BIC> today"),
    ("身份证号11010519491231002X，", "身份证号<CN_ID>，"),
    ("SSN 123-45-6789.", "SSN <US_SSN>."),
    ("from 203.0.113.7 and 2001:db8::8a2e:370:7334 and ::ffff:192.0.2.1", "from <IP> and <IP> and <IP>"),
]


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_detects_and_replaces(text, expected):
    assert scrub(text) == expected


NEGATIVES = [
    "Revenue 1,234,567.89 and net income 98,765.43; growth +13.5%, +0.4%.",
    "营业收入 | 12,591.5 | 12,543.2 | +0.4%\n资产总额 | 47,474.1 | 42,382.0 | +12.0%",
    "| 2021 | 2022 | 2023 | 2024 |\n| 1023 4500 | 3344 1200 | 0.25 | 17.3 |",
    "Dates: 2023-12-31, 2023/12/31, 31.12.2023, 2023年12月31日, at 12:30:45.",
    "Versions 1.2.3.4.5 and v2.10.3.1, build 10.0.19045.2965.1, pi 3.1415926535897932.",
    "Octets 256.1.1.1 and 192.168.001.001 are not addresses.",
    "SSN-like 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000.",
    "IBAN GB83 WEST 1234 5698 7654 32, DE88 3704 0044 0532 0130 00, ZZ82 WEST 1234 5698 7654 32.",
    "ID 110105194912310021 and 110105194902300020.",
    "Numbers 12812345678, 138123456789, 10012345678.",
    "Phones +0 123 456 789, +12 345 678, +1 234 567, (123) 456-7890.",
    "user@localhost, a@b, @example.com",
    "THE ANNUAL DIVIDEND REPORT; the word DIVIDEND; a BUSINESS; INTEREST; SWIFT code DEUTZZFF.",
    "Order 4539-1488-0343-6467-12 and 12-4539148803436467.",
    "ratio 3:2, std::vector, 00:1A:2B:3C:4D:5E, ::",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_leaves_look_alikes(text):
    assert detect(text) == []


def test_random_order_numbers_failing_luhn_are_kept():
    rng = random.Random(7)
    numbers = [str(rng.randrange(10**15, 10**16)) for _ in range(500)]
    failing = [n for n in numbers if not luhn_valid(n)]
    assert len(failing) > 400
    text = "\n".join(f"订单号{n}，金额{rng.randrange(10**6)}.{rng.randrange(100):02d}元" for n in failing)
    assert detect(text) == []


def test_numbers_labelled_as_orders_invoices_or_tracking_are_kept():
    card, cn_id, mobile = "4539148803436467", "11010519491231002X", "13812345678"
    for label in ("订单号 ", "快递单号：", "发票号码", "Order number: ", "invoice no. ", "Tracking #", "ref "):
        for number in (card, cn_id, mobile):
            assert detect(f"{label}{number} 已处理") == [], (label, number)
    # the label names only the number right after it; the same numbers labelled as themselves still go
    assert scrub(f"Order 12, card {card}") == "Order 12, card <BANK_CARD>"
    assert scrub(f"订单号 889, 身份证号{cn_id}，手机{mobile}") == "订单号 889, 身份证号<CN_ID>，手机<PHONE>"
    assert scrub(f"身份证编号{cn_id}") == "身份证编号<CN_ID>"


def test_amounts_and_quantities_are_kept_even_when_they_pass_the_checks():
    card, cn_id, mobile = "4539148803436467", "11010519491231002X", "13812345678"
    amounts = ("合计金额{}元。", "The fund paid USD {} in total.", "余额为 ¥{}。", "Total: {} yuan", "{} shares were issued.",
               "共发行{}股", "$ {}", "Transfer the balance: {}")
    for text in amounts:
        assert detect(text.format(mobile)) == [], text  # 11 digits can be an amount
    # 15-19 digits that pass a card check and an issuer range are no amount anyone writes
    for text in amounts:
        assert [s.type for s in detect(text.format(card))] == ["BANK_CARD"], text
    assert scrub("Transfer the balance: 371738285758906") == "Transfer the balance: <BANK_CARD>"
    assert [s.type for s in detect(f"总额 {cn_id} 元")] == ["CN_ID"]
    # a unit or currency names only the figure it touches: the card and ID beside an amount still go
    assert scrub(f"卡号{card}，余额100元。") == "卡号<BANK_CARD>，余额100元。"
    assert scrub(f"Card {card} paid $120; ID {cn_id}.") == "Card <BANK_CARD> paid $120; ID <CN_ID>."
    assert scrub(f"手机{mobile} 转账 500 元") == "手机<PHONE> 转账 500 元"


def test_luhn_valid_numbers_without_issuer_are_kept():
    numbers = [_with_check_digit(body) for body in ("123456781234567", "700000000000000", "800012345678901")]
    numbers.append("0000000000000000")
    assert all(luhn_valid(number) for number in numbers)
    assert detect(" ".join(f"ref {number}" for number in numbers)) == []


def test_boundaries_reject_longer_runs():
    for text in ("A13812345678", "138123456789", "x4539148803436467", "4539148803436467x",
                 "ID11010519491231002X0", "1.203.0.113.7", "203.0.113.7.1"):
        assert detect(text) == [], text


def test_overlaps_resolve_longest_then_most_specific():
    both = "620102199001010257"  # a valid Gansu resident ID that also passes Luhn with a UnionPay prefix
    assert cn_id_valid(both) and card_number_valid(both)
    assert {span.type for span in detect(f"号码{both}。")} == {"CN_ID", "BANK_CARD"}
    assert scrub(f"号码{both}。") == "号码<CN_ID>。"
    assert scrub("13812345678@example.com") == "<EMAIL>"  # the e-mail is longer than the phone inside it
    spans = [Span(0, 5, "PHONE"), Span(3, 10, "IP"), Span(3, 10, "EMAIL"), Span(12, 14, "IP")]
    assert resolve_overlaps(spans) == [Span(3, 10, "IP"), Span(12, 14, "IP")]


def test_seeded_detection_equals_full_scan():
    texts = [text for text, _ in POSITIVES] + NEGATIVES + [doc["text"] for doc in _starter_docs()]
    for text in texts:
        full_scan = sorted({span for detector in DETECTORS for span in detector.spans(text)})
        assert detect(text) == full_scan


def test_types_option_limits_detection():
    text = "mail a@example.com, card 4539148803436467"
    assert desensitize(text, types=["EMAIL"])[0] == "mail <EMAIL>, card 4539148803436467"


# --- the pipeline step -------------------------------------------------------------------------------


def _run(step, texts):
    return list(step.run(Document(text=text, id=str(i)) for i, text in enumerate(texts)))


def _stats(step) -> dict[str, float]:
    return {name: metric.total for name, metric in step.stats.stats.items()}


def test_step_counts_in_stats_and_metadata():
    step = PIIDesensitizer()
    docs = _run(step, ["a@example.com and b@example.org, SSN 123-45-6789", "nothing here, 2023-12-31",
                       "手机13812345678，邮箱c@example.cn"])
    assert [doc.metadata["pii"] for doc in docs] == [{"EMAIL": 2, "US_SSN": 1}, {}, {"EMAIL": 1, "PHONE": 1}]
    assert _stats(step) == {"pii_EMAIL": 3, "pii_US_SSN": 1, "pii_PHONE": 1, "docs_with_pii": 2, "docs_without_pii": 1}
    assert "123-45-6789" not in json.dumps([doc.metadata for doc in docs])


def test_step_placeholder_option_and_validation():
    docs = _run(PIIDesensitizer(types=["PHONE"], placeholder="[{type} removed]"), ["call 13812345678"])
    assert docs[0].text == "call [PHONE removed]"
    with pytest.raises(ValueError, match="unknown PII type"):
        PIIDesensitizer(types=["PASSPORT"])
    with pytest.raises(ValueError, match="placeholder"):
        PIIDesensitizer(placeholder="{type}")
    with pytest.raises(ValueError, match="placeholder"):
        PIIDesensitizer(placeholder="<x@example.com>")


def test_step_replaces_ground_truth_metadata_instead_of_keeping_values():
    doc = Document(text="mail a@example.com", id="1", metadata={"pii": [{"type": "email", "value": "a@example.com"}]})
    assert next(PIIDesensitizer().run([doc])).metadata["pii"] == {"EMAIL": 1}


def test_identifiers_glued_together_are_all_replaced():
    text, counts = desensitize("123-45-6789+44 20 7946 0958")
    assert text == "<US_SSN><PHONE>"  # the phone only stands alone once the SSN is a placeholder
    assert counts == Counter({"US_SSN": 1, "PHONE": 1})


def test_idempotent_on_glued_fragments():
    pieces = ["a@example.com", "13812345678", "4539148803436467", "GB82WEST12345698765432", "DEUTDEFF", "BOFAUS3N",
              "11010519491231002X", "123-45-6789", "192.168.1.1", "2001:db8::1", "+44 20 7946 0958",
              "(415) 555-0132", "SWIFT", "BIC", "x", "1", "A", ".", "-", " ", ":", "@", "+", "(", "，", "_", "<", ">"]
    rng = random.Random(3)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(2, 8)))
        once = scrub(text)
        assert desensitize(once) == (once, Counter()), text


def test_idempotent():
    texts = [text for text, _ in POSITIVES] + NEGATIVES + [doc["text"] for doc in _starter_docs()]
    texts.append("a@b.com.13812345678 and 1.2.3.4.13812345678")
    once = _run(PIIDesensitizer(), texts)
    snapshot = [(doc.text, dict(doc.metadata["pii"])) for doc in once]
    step = PIIDesensitizer()
    twice = list(step.run(iter(once)))
    assert [(doc.text, doc.metadata["pii"]) for doc in twice] == snapshot
    assert _stats(step) == {"docs_without_pii": len(texts)}


# --- the starter corpora's planted PII ----------------------------------------------------------------


def _starter_docs() -> list[dict]:
    docs = []
    for name in ("finance_corpus.jsonl", "general_corpus.jsonl"):
        with open(STARTER_DATA_DIR / name, encoding="utf-8") as handle:
            docs += [json.loads(line) for line in handle if line.strip()]
    return docs


def test_starter_planted_pii_is_removed_and_counted():
    docs = _starter_docs()
    planted = [doc for doc in docs if doc.get("planted") == "pii"]
    assert len(planted) == 42
    for doc in planted:
        text, counts = desensitize(doc["text"])
        for item in doc["pii"]:
            assert item["value"] not in text
        assert counts == Counter(STARTER_TYPES[item["type"]] for item in doc["pii"]), doc["id"]


def test_starter_documents_without_planted_pii_are_untouched():
    clean = [doc["text"] for doc in _starter_docs() if doc.get("planted") != "pii"]
    assert len(clean) > 500
    assert [text for text in clean if detect(text)] == []


def test_every_type_has_a_detector():
    assert set(PII_TYPES) == {"EMAIL", "PHONE", "BANK_CARD", "IBAN", "SWIFT_BIC", "CN_ID", "US_SSN", "IP"}


def test_resident_id_written_in_groups_is_found():
    assert scrub("身份证号 510107 19510127 8099 已登记") == "身份证号 <CN_ID> 已登记"
    assert scrub("ID: 110105-19491231-002X, verified") == "ID: <CN_ID>, verified"
    assert scrub("编号 510107 19510127 8098") == "编号 510107 19510127 8098"  # wrong check digit
    assert scrub("510107-19510127 8099") == "510107-19510127 8099"  # mixed separators are no card layout


def test_require_label_flags_number_identifiers_only_where_the_text_names_them():
    card, mobile = "4539148803436467", "13812345678"
    labelled = f"The refund goes to card number {card}; call {mobile}."
    bare = f"The record shows {card} and {mobile} next to the 2023 total."
    assert desensitize(labelled, require_label=True)[0] == "The refund goes to card number <BANK_CARD>; call <PHONE>."
    assert desensitize(bare, require_label=True)[0] == bare
    assert desensitize(bare)[0] == "The record shows <BANK_CARD> and <PHONE> next to the 2023 total."
    assert desensitize("Mail ops@bank.example at once", require_label=True)[0] == "Mail <EMAIL> at once"  # unaffected


def test_require_label_reaches_the_step_from_the_recipe(tiny_data):
    from conftest import tiny_recipe

    from finloom.data.pipeline import Classifiers, PipelinePaths, build_phases
    from finloom.recipe import parse_recipe

    recipe = parse_recipe(tiny_recipe(**{"data.pii": {"require_label": True}}), tiny_data)
    phases = build_phases(recipe.data, [], PipelinePaths(tiny_data / "unused"), Classifiers(), None, [])
    steps = [step for phase in phases for step in phase.pipeline if isinstance(step, PIIDesensitizer)]
    assert [step.require_label for step in steps] == [True]


def test_card_shaped_numbers_failing_luhn_are_kept_wherever_they_stand():
    """Issuer prefix and length right, check digit wrong: no card, even labelled as one (a check without Luhn
    flagged all of them)."""
    rng = random.Random(11)
    bodies = [rng.choice(("4", "51", "37", "62")) + "".join(rng.choice("0123456789") for _ in range(13)) for _ in range(300)]
    valid = [_with_check_digit(body) for body in bodies]
    failing = [number[:-1] + str((int(number[-1]) + 1) % 10) for number in valid]
    for template in ("The card number is {}.", "卡号{}已挂失", "Record {} next to the total."):
        assert not any(detect(template.format(number)) for number in failing), template
        assert all(detect(template.format(number)) for number in valid if card_number_valid(number)), template


# --- exact limits: registry lengths, issuer lengths, numbering plans, windows ---------------------------

# The SWIFT IBAN registry's length per country, written out here independently of pii.IBAN_LENGTHS.
IBAN_REGISTRY = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 DO28 EE20 EG29 "
    "ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 "
    "LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 "
    "PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 "
    "YE30"
)


def _iban_of_length(country: str, length: int) -> str:
    """An IBAN of ``length`` characters with ISO 7064 check digits (98 - n mod 97); the bank code holds a Z, the
    last letter of base 36."""
    bban = ("ZABK" + "0123456789" * 3)[:length - 4]
    check = 98 - int("".join(str(int(char, 36)) for char in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def test_iban_every_registry_country_at_its_exact_length():
    registry = {item[:2]: int(item[2:]) for item in IBAN_REGISTRY.split()}
    assert len(registry) == 89
    for country, length in registry.items():
        iban = _iban_of_length(country, length)
        assert iban_valid(iban), iban
        assert not iban_valid(_iban_of_length(country, length - 1)), country  # check digits right, one short
        assert not iban_valid(_iban_of_length(country, length + 1)), country  # and one long
        grouped = " ".join(iban[i:i + 4] for i in range(0, length, 4))
        assert scrub(f"IBAN {iban}, or {grouped}.") == "IBAN <IBAN>, or <IBAN>.", country


def test_iban_check_digits_must_be_digits():
    # both pass mod 97 (letters count 10..35 there as elsewhere), but positions 3-4 of an IBAN are two digits
    for iban in ("GB0ZWEST12345698765432", "GBB9WEST12345698765436"):
        rotated = iban[4:] + iban[:4]
        assert int("".join(str(int(char, 36)) for char in rotated)) % 97 == 1
        assert not iban_valid(iban), iban
    assert iban_valid("GB82WEST12345698765432")


# (issuer, prefix, lengths it issues): each length right is a card, one either side that no issuer of the
# prefix issues is not.
CARD_LENGTHS = [
    ("Visa", "4", {13, 16, 19}), ("Mastercard", "51", {16}), ("Mastercard 2-series", "2221", {16}),
    ("Amex", "37", {15}), ("JCB", "3528", {16, 17, 18, 19}), ("Diners", "36", {14, 16, 19}),
    ("UnionPay", "62", {16, 17, 18, 19}), ("Discover", "6011", {16, 19}), ("domestic debit", "9558", {16, 19}),
]


@pytest.mark.parametrize(("issuer", "prefix", "lengths"), CARD_LENGTHS)
def test_card_issuer_lengths_exactly(issuer, prefix, lengths):
    for length in range(12, 21):
        number = _with_check_digit((prefix + "000012345678901234567")[:length - 1])
        assert len(number) == length and luhn_valid(number)
        assert card_number_valid(number) == (length in lengths), (issuer, length)


def test_card_lengths_seen_in_text():
    visa13, diners14 = _with_check_digit("422222222222"), _with_check_digit("3056930902590")
    assert scrub(f"card {visa13} and {diners14}") == "card <BANK_CARD> and <BANK_CARD>"
    # 14 digits can be an amount (at most MAX_AMOUNT_DIGITS); 15 cannot
    assert detect(f"Total: {diners14}") == []
    assert scrub("Total: 378282246310005") == "Total: <BANK_CARD>"


# (number, what stays): fixed national lengths per calling code, the 7-12 default, E.164's 15 digits.
PHONE_LENGTHS = [
    ("+7 495 123-45-67", ""), ("+33 1 42 68 53 00", ""), ("+44 1946 75432", ""), ("+44 20 7946 0958", ""),
    ("+61 2 9876 5432", ""), ("+65 6123 4567", ""), ("+81 45 123 4567", ""), ("+81 3-1234-5678", ""),
    ("+86 10 1234 5678", ""), ("+86 138 1234 5678", ""), ("+91 98765 43210", ""), ("+852 2123 4567", ""),
    ("+853 2888 1234", ""), ("+886 7 123 4567", ""), ("+886 2 2345 6789", ""),
    ("+81 90-1234-5678", ""),  # Japan: 9 national digits (above) or 10 (a mobile)
    ("+85221234567", ""),  # unspaced, with a three-digit calling code
    ("+1 415-555-0132 2023", " 2023"),  # 10 national digits, then a year
    ("+49 30 12345", ""), ("+49 1512 3456 7890", ""),  # 7 and 12 national digits: the default's ends
    ("+49 1512 3456 78901", " 78901"),  # 13 is too many: the last group is dropped
    ("+380 1234 5678 9012", ""),  # 3-digit code + 12 = 15 digits, E.164's limit
    ("+4420 7946 0958", ""),  # an unspaced first group longer than a code
]


@pytest.mark.parametrize(("number", "rest"), PHONE_LENGTHS)
def test_phone_national_number_lengths(number, rest):
    assert scrub(f"call {number} now") == f"call <PHONE>{rest} now"


@pytest.mark.parametrize("text", ["+44 20 7946 0958 is the desk", "(415) 555-0132 is the desk"])
def test_an_identifier_at_the_very_start_of_a_text(text):
    """Its one-character seed ("+", "(") ends at index 1: the scan window still reaches the whole number."""
    assert scrub(text) == "<PHONE> is the desk"


def test_phone_lengths_one_short_are_kept():
    for number in ("+7 495 123-45-6", "+33 1 42 68 53 0", "+44 1946 7543", "+61 2 9876 543", "+65 6123 456",
                   "+81 45 123 456", "+86 10 1234 567", "+91 98765 4321", "+852 2123 456", "+886 7 123 456",
                   "+49 30 1234",  # 6 national digits
                   "+441 234 567 890"):  # a spaced first group must be the calling code itself
        assert detect(f"call {number} now") == [], number


def test_cn_id_birth_year_and_date_limits():
    assert cn_id_valid("11010519000101001X")  # 1 January 1900, the first year
    assert cn_id_valid("110105209912310010", today=date(2100, 1, 1))  # 31 December 2099, the last
    assert not cn_id_valid("110105209912310011", today=date(2100, 1, 1))  # check character 1 where 0 is right
    # 1899 and 2100 are out whatever the check character (one of the eleven is right for each)
    for body in ("11010518991231001", "11010521000101001"):
        assert not any(cn_id_valid(body + char, today=date(2101, 1, 1)) for char in "0123456789X"), body
    assert cn_id_valid("11010519491231002X", today=date(1949, 12, 31))  # born today
    assert not cn_id_valid("1101051949123100XX")  # the 17th character is a letter


def test_bic_neighbours_are_the_one_word_either_side():
    assert scrub("Pay in USD to HSBCGB2L today") == "Pay in USD to <SWIFT_BIC> today"  # USD is two words back
    assert scrub("wire to HSBCGB2L in EUR") == "wire to <SWIFT_BIC> in EUR"  # EUR is two words on
    for text in ("TO HSBCGB2L", "see ABCDUS2X SERIES", "Ask the desk for HSBCGB2L LONDON", "THE ABCDUS2X series"):
        assert detect(text) == [], text  # a capitalised word right before or after: part of a heading


def test_bic_neighbour_window_is_24_characters():
    # a capitalised word 24 characters away is still a neighbour, 25 away it is out of sight
    assert detect(f"{'AB':<24}HSBCGB2L") == []
    assert scrub(f"{'AB':<25}HSBCGB2L") == f"{'AB':<25}<SWIFT_BIC>"  # only the "B" is within 24
    assert detect(f"HSBCGB2L{'':<22}AB") == []
    assert scrub(f"HSBCGB2L{'':<23}AB") == f"<SWIFT_BIC>{'':<23}AB"


def test_bic_label_window_is_32_characters():
    assert scrub(f"{'SWIFT':<32}DEUTDEFF") == f"{'SWIFT':<32}<SWIFT_BIC>"
    assert detect(f"{'SWIFT':<33}DEUTDEFF") == []  # no digit, no XXX: only a label makes it a code


def test_require_label_looks_32_characters_back():
    card = "4539148803436467"
    # a fixed-width table: the column title "card" 32 characters before the number labels it, 33 does not
    assert desensitize(f"{'card':<32}{card}", require_label=True)[0] == f"{'card':<32}<BANK_CARD>"
    for width in (33, 64, 96):
        assert desensitize(f"{'card':<{width}}{card}", require_label=True)[0] == f"{'card':<{width}}{card}", width


def test_record_label_window_is_32_characters():
    card = "4539148803436467"
    assert detect(f"{'Order':<31}#{card}") == []  # "Order" starts 32 characters back
    assert scrub(f"{'Order':<32}#{card}") == f"{'Order':<32}#<BANK_CARD>"  # 33 back: out of the window


def test_detectors_are_immutable_shared_data():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DETECTORS[0].reach = 1_000


def test_step_rejects_a_placeholder_alphanumeric_at_either_end():
    for placeholder in ("{type}>", "<{type}", "{type}"):
        with pytest.raises(ValueError, match="placeholder"):
            PIIDesensitizer(placeholder=placeholder)
    assert PIIDesensitizer(placeholder="[{type}]").placeholder == "[{type}]"


def test_step_adds_to_counts_already_in_metadata():
    doc = Document(text="mail a@example.com, b@example.org", id="1", metadata={"pii": {"EMAIL": 3, "PHONE": 1}})
    assert next(PIIDesensitizer().run([doc])).metadata["pii"] == {"EMAIL": 5, "PHONE": 1}


def test_resolve_overlaps_keeps_spans_that_only_touch():
    spans = [Span(0, 13, "EMAIL"), Span(13, 24, "PHONE"), Span(24, 30, "IP")]  # longest first, then the later ones
    assert resolve_overlaps(spans) == spans
    assert resolve_overlaps([Span(6, 19, "EMAIL"), Span(0, 6, "IP")]) == [Span(0, 6, "IP"), Span(6, 19, "EMAIL")]


def test_identifiers_far_apart_are_all_found_when_later_ones_share_a_window():
    """Three digit runs: the card's window alone, the two phones' windows merged. Merging must extend the last
    window, not overwrite an earlier one."""
    text = "Card 4539148803436467. " + "x" * 100 + " Call 13812345678 or 13987654321."
    assert [(s.start, s.type) for s in detect(text)] == [(5, "BANK_CARD"), (129, "PHONE"), (144, "PHONE")]
    spans = [Span(0, 5, "IP"), Span(8, 21, "EMAIL"), Span(21, 32, "PHONE")]  # a shorter one before, apart or touching
    assert resolve_overlaps(spans) == spans
    # length before specificity: a card number that is the local part of an e-mail address goes with the address
    assert resolve_overlaps([Span(0, 16, "BANK_CARD"), Span(0, 28, "EMAIL")]) == [Span(0, 28, "EMAIL")]
    assert scrub("4539148803436467@example.com") == "<EMAIL>"


def test_window_edge_still_sees_two_characters_past_a_match():
    # an e-mail ending exactly where its seed's window does (330 after the @), followed by "-b": the right
    # boundary check must see both characters, as the full scan does, and reject it
    text = "mail a@" + "b" * 326 + ".com-b"
    assert detect(text) == [] == sorted(span for detector in DETECTORS for span in detector.spans(text))
    assert scrub("mail a@" + "b" * 326 + ".com b") == "mail <EMAIL> b"


def test_a_detector_scans_from_the_start_of_the_text_by_default():
    email = next(detector for detector in DETECTORS if detector.type == "EMAIL")
    assert email.spans("a@example.com, b@example.org") == [Span(0, 13, "EMAIL"), Span(15, 28, "EMAIL")]
