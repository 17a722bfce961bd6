"""PII step: recall on generated identifiers, false positives on look-alikes, throughput against plain datatrove.

For every type, ``--n`` valid identifiers (seeded) are embedded in English and Chinese sentences, some with
a label ("card number", "SWIFT code", "身份证号") and some without; recall counts a sentence only when
the identifier became exactly its placeholder. The same number of look-alikes of the same shape that fail
the check digits or format rules measures the false-positive rate (any detection counts). Chance rates show
what no checksum can prevent: random numbers of the right shape that happen to pass it, introduced as
order / invoice / tracking numbers or as amounts with a currency or unit (which the detectors leave
alone), and bare.

Throughput: the starter corpora, replicated to ``--mb``, through datatrove's JsonlReader -> JsonlWriter with
and without the PII step, on one task.

    python benchmarks/data_pii.py [--n 2000] [--mb 20] [--seed 0] [--require-label] [--no-throughput]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import random
import string
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from finloom.data.pii import COUNTRIES, IBAN_LENGTHS, PIIDesensitizer, desensitize, detect
from finloom.recipe import STARTER_DATA_DIR

DIGITS = string.digits
UPPER = string.ascii_uppercase

# --- identifiers: a valid generator and a same-shape invalid one per type -------------------------------


def luhn_check_digit(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char) * (1 if position % 2 else 2)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def group(text: str, sizes: list[int], sep: str) -> str:
    parts, position = [], 0
    for size in sizes:
        parts.append(text[position:position + size])
        position += size
    return sep.join(parts)


def grouped_by_4(text: str, sep: str) -> str:
    return sep.join(text[i:i + 4] for i in range(0, len(text), 4))


def digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(DIGITS) for _ in range(count))


CARD_BRANDS = [("4", 16), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15), ("37", 15),
               ("62", 16), ("62", 19), ("6011", 16), ("3530", 16), ("9558", 19)]


def card_body(rng: random.Random) -> tuple[str, int]:
    prefix, length = rng.choice(CARD_BRANDS)
    return prefix + digits(rng, length - len(prefix) - 1), length


def format_card(number: str, rng: random.Random) -> str:
    style = rng.choice(["plain", " ", "-"])
    if style == "plain":
        return number
    if len(number) == 15:
        return group(number, [4, 6, 5], style)
    return grouped_by_4(number, style)


def valid_card(rng):
    body, _ = card_body(rng)
    return format_card(body + luhn_check_digit(body), rng)


def invalid_card(rng):
    body, _ = card_body(rng)
    wrong = str((int(luhn_check_digit(body)) + rng.randint(1, 9)) % 10)
    return format_card(body + wrong, rng)


def iban_bban(country: str, rng: random.Random) -> str:
    length = IBAN_LENGTHS[country] - 4
    if country in ("GB", "NL"):
        return "".join(rng.choice(UPPER) for _ in range(4)) + digits(rng, length - 4)
    return digits(rng, length)


def iban_check(country: str, bban: str) -> int:
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    return 98 - int(numeric) % 97


IBAN_COUNTRIES = ["GB", "DE", "FR", "ES", "IT", "NL", "CH", "BE", "PL", "SE", "AT", "IE", "PT", "NO", "DK", "SA"]


def format_iban(iban: str, rng: random.Random) -> str:
    return iban if rng.random() < 0.5 else grouped_by_4(iban, " ")


def valid_iban(rng):
    country = rng.choice(IBAN_COUNTRIES)
    bban = iban_bban(country, rng)
    return format_iban(f"{country}{iban_check(country, bban):02d}{bban}", rng)


def invalid_iban(rng):
    country = rng.choice(IBAN_COUNTRIES)
    bban = iban_bban(country, rng)
    check = iban_check(country, bban)
    wrong = rng.choice([n for n in range(100) if n != check])
    return format_iban(f"{country}{wrong:02d}{bban}", rng)


BIC_COUNTRIES = ["DE", "GB", "US", "CN", "FR", "HK", "SG", "JP", "CH", "NL", "IT", "ES"]
NOT_COUNTRIES = sorted({a + b for a in UPPER for b in UPPER} - COUNTRIES)


def bic(rng: random.Random, country: str) -> str:
    bank = "".join(rng.choice(UPPER) for _ in range(4))
    location = "".join(rng.choice(UPPER + DIGITS) for _ in range(2))
    branch = rng.choice(["", "", "XXX", "".join(rng.choice(UPPER + DIGITS) for _ in range(3))])
    return bank + country + location + branch


def valid_bic(rng):
    return bic(rng, rng.choice(BIC_COUNTRIES))


def invalid_bic(rng):
    return bic(rng, rng.choice(NOT_COUNTRIES))


CN_AREAS = ["110105", "310104", "440305", "330106", "510104", "610113", "420102", "500101", "210102", "350203",
            "120101", "370102", "410105", "530102", "620102", "650102"]
CN_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def cn_id_body(rng: random.Random) -> str:
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(70 * 365))
    return rng.choice(CN_AREAS) + born.strftime("%Y%m%d") + digits(rng, 3)


def cn_id_check(body: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(body, CN_WEIGHTS)) % 11]


def valid_cn_id(rng):
    body = cn_id_body(rng)
    return body + cn_id_check(body)


def invalid_cn_id(rng):
    body = cn_id_body(rng)
    return body + rng.choice([c for c in "0123456789X" if c != cn_id_check(body)])


def valid_ssn(rng):
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def invalid_ssn(rng):
    area, grp, serial = rng.choice([a for a in range(1, 900) if a != 666]), rng.randint(1, 99), rng.randint(1, 9999)
    rule = rng.randrange(5)
    area = [0, 666, rng.randint(900, 999), area, area][rule]
    grp = 0 if rule == 3 else grp
    serial = 0 if rule == 4 else serial
    return f"{area:03d}-{grp:02d}-{serial:04d}"


def valid_ip(rng):
    if rng.random() < 0.6:
        return ".".join(str(rng.randint(0, 255)) for _ in range(4))
    if rng.random() < 0.5:
        return str(ipaddress.IPv6Address(rng.getrandbits(128)))
    return f"2001:db8::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}"


def invalid_ip(rng):
    if rng.random() < 0.6:
        octets = [str(rng.randint(0, 255)) for _ in range(4)]
        octets[rng.randrange(4)] = str(rng.randint(256, 999))
        return ".".join(octets)
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(9)]
    return ":".join(groups)  # nine groups


SURNAMES = ["wang", "li", "zhang", "chen", "smith", "jones", "patel", "garcia", "muller", "rossi"]
DOMAINS = ["example.com", "mail.example.org", "bank-example.cn", "example.co.uk", "corp.example.net"]


def valid_email(rng):
    local = rng.choice(["{a}.{b}", "{a}{n}", "{i}.{b}", "{a}_{b}{n}"]).format(
        a=rng.choice(SURNAMES), b=rng.choice(SURNAMES), i=rng.choice(string.ascii_lowercase), n=rng.randint(1, 99))
    return f"{local}@{rng.choice(DOMAINS)}"


def invalid_email(rng):
    local, domain = valid_email(rng).split("@")
    return rng.choice([f"{local}@{domain.split('.')[0]}", f"{local}@@{domain}", f"{local}@.{domain}",
                       f"{local} @ {domain}", f"{local}@{domain}".replace(".", "。"),
                       f"{local}@{domain.rsplit('.', 1)[0]}.c0m"])


def cn_mobile(rng: random.Random, second: str, styles=("plain", "space", "dash", "+86", "0086")) -> str:
    number = "1" + second + digits(rng, 9)
    style = rng.choice(styles)
    if style == "space":
        return group(number, [3, 4, 4], " ")
    if style == "dash":
        return group(number, [3, 4, 4], "-")
    if style == "+86":
        return "+86 " + group(number, [3, 4, 4], " ")
    if style == "0086":
        return "0086-" + number
    return number


def nanp(rng: random.Random, low: str = "23456789") -> tuple[str, str, str]:
    return rng.choice(low) + digits(rng, 2), rng.choice(low) + digits(rng, 2), digits(rng, 4)


def valid_phone(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return cn_mobile(rng, rng.choice("3456789"))
    if kind == 1:
        area, exchange, line = nanp(rng)
        return rng.choice([f"+1 {area}-{exchange}-{line}", f"({area}) {exchange}-{line}",
                           f"+1 ({area}) {exchange}-{line}"])
    if kind == 2:
        return rng.choice([f"+44 20 {digits(rng, 4)} {digits(rng, 4)}", f"+44 7{digits(rng, 3)} {digits(rng, 6)}"])
    if kind == 3:
        return rng.choice([f"+49 30 {digits(rng, 8)}", f"+33 1 {' '.join(digits(rng, 2) for _ in range(4))}"])
    if kind == 4:
        return rng.choice([f"+81 3-{digits(rng, 4)}-{digits(rng, 4)}", f"+65 {digits(rng, 4)} {digits(rng, 4)}"])
    return f"+852 {digits(rng, 4)} {digits(rng, 4)}"


def invalid_phone(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return cn_mobile(rng, rng.choice("012"), styles=("plain", "space", "dash"))  # no 10x-12x mobiles
    if kind == 1:
        area, exchange, line = nanp(rng, low="01")
        return f"({area}) {exchange}-{line}"
    if kind == 2:
        unassigned = rng.choice(["28", "80", "83", "89", "990", "997", "999", "210", "259"])
        return f"+{unassigned} {digits(rng, 3)} {digits(rng, 4)}"
    return rng.choice([f"+44 20 {digits(rng, 4)}", f"+1 {digits(rng, 3)}-{digits(rng, 4)}"])  # too short


GENERATORS = {
    "EMAIL": (valid_email, invalid_email), "PHONE": (valid_phone, invalid_phone),
    "BANK_CARD": (valid_card, invalid_card), "IBAN": (valid_iban, invalid_iban),
    "SWIFT_BIC": (valid_bic, invalid_bic), "CN_ID": (valid_cn_id, invalid_cn_id),
    "US_SSN": (valid_ssn, invalid_ssn), "IP": (valid_ip, invalid_ip),
}

# --- sentences -----------------------------------------------------------------------------------------

LABELLED = {
    "EMAIL": ["Questions can be sent to {v} before Friday.", "如有疑问请发邮件至{v}。"],
    "PHONE": ["To book a place, call {v} after 9am.", "报名请致电{v}，周末休息。"],
    "BANK_CARD": ["The refund goes to card number {v} within 5 days.", "读者的银行卡号{v}已被公开。"],
    "IBAN": ["Pay into the account with IBAN {v}; the fee is 0.25%.", "退款将汇入IBAN为{v}的账户。"],
    "SWIFT_BIC": ["Use SWIFT code {v} for international transfers.", "境外汇款请填写银行代码{v}并注明用途。"],
    "CN_ID": ["Registration record: resident ID {v}, age 34.", "登记信息：身份证号{v}，已核验。"],
    "US_SSN": ["Case reference: applicant SSN {v}, filed 2023-03-01.", "申请人社会安全号码{v}，资料齐全。"],
    "IP": ["The login came from {v} at 02:14.", "登录地址为{v}，请确认是否本人操作。"],
}
UNLABELLED = ["The record shows {v} next to the 2023 total.", "记录显示{v}，与合计一致。"]


def sentences(type_: str, values: list[str]) -> list[tuple[str, bool]]:
    """(sentence template, labelled) for each value, cycling through labelled and unlabelled templates."""
    templates = [(t, True) for t in LABELLED[type_]] + [(t, False) for t in UNLABELLED]
    return [templates[i % len(templates)] for i in range(len(values))]


def quality(n: int, seed: int, require_label: bool = False) -> dict:
    result: dict[str, dict] = {"recall": {}, "recall_labelled": {}, "recall_unlabelled": {}, "false_positive_rate": {},
                               "false_positives_detected_as": {}, "missed_examples": {}}
    for type_, (valid, invalid) in GENERATORS.items():
        rng = random.Random(f"{seed}-{type_}")
        values = [valid(rng) for _ in range(n)]
        hits = Counter()
        missed = []
        for value, (template, labelled) in zip(values, sentences(type_, values)):
            ok = desensitize(template.format(v=value), require_label=require_label)[0] == template.format(v=f"<{type_}>")
            hits[labelled, ok] += 1
            if not ok and len(missed) < 3:
                missed.append(template.format(v=value))
        result["recall"][type_] = round((hits[True, True] + hits[False, True]) / n, 4)
        result["recall_labelled"][type_] = round(hits[True, True] / (hits[True, True] + hits[True, False]), 4)
        result["recall_unlabelled"][type_] = round(hits[False, True] / (hits[False, True] + hits[False, False]), 4)
        result["missed_examples"][type_] = missed
        lookalikes = [invalid(rng) for _ in range(n)]
        flagged_sentences, flagged_as = 0, Counter()
        for value, (template, _) in zip(lookalikes, sentences(type_, lookalikes)):
            found = {span.type for span in detect(template.format(v=value), require_label=require_label)}
            flagged_sentences += bool(found)
            flagged_as.update(found)
        result["false_positive_rate"][type_] = round(flagged_sentences / n, 4)
        result["false_positives_detected_as"][type_] = dict(flagged_as)
    return result


def random_check_digit_iban(rng: random.Random) -> str:
    country = rng.choice(IBAN_COUNTRIES)
    return f"{country}{rng.randrange(100):02d}{iban_bban(country, rng)}"


ORDER_LABELLED = ["订单号 {v} 已发货", "Order number {v} has shipped.", "发票号码：{v}，请核对。", "Tracking # {v} is out for delivery."]
AMOUNTS = ["合计金额{v}元。", "The fund paid USD {v} in total.", "本期共发行{v}股。", "Total sales reached {v} yuan."]


def chance_rates(n: int, seed: int, require_label: bool = False) -> dict:
    """How often random strings of an identifier's shape are flagged: introduced as an order / invoice /
    tracking number, as an amount, and bare in the unlabelled sentences (where nothing but the check can
    tell them apart)."""
    shapes = {
        "random_16_digit_numbers": lambda rng: str(rng.randrange(10**15, 10**16)),
        "random_19_digit_numbers": lambda rng: str(rng.randrange(10**18, 10**19)),
        "random_18_digit_cn_id_shaped": lambda rng: cn_id_body(rng) + rng.choice("0123456789X"),
        "random_check_digit_ibans": random_check_digit_iban,
        "random_11_digit_numbers": lambda rng: str(rng.randrange(10**10, 10**11)),
    }
    contexts = {"labelled_as_order_invoice_tracking": ORDER_LABELLED, "amount_with_currency_or_unit": AMOUNTS,
                "bare": UNLABELLED}
    rates: dict[str, dict[str, float]] = {}
    for name, make in shapes.items():
        for context, templates in contexts.items():
            rng = random.Random(f"{seed}-chance-{name}-{context}")  # its own draws: contexts compare alike
            flagged = sum(bool(detect(templates[i % len(templates)].format(v=make(rng)), require_label=require_label))
                          for i in range(n))
            rates.setdefault(name, {})[context] = round(flagged / n, 4)
    return rates


CAPS_WORDS = ("DIVIDEND BUSINESS INTEREST MORTGAGE BALANCES FINANCES CURRENCY TRANSFER PURCHASE TAXATION ACCOUNTS "
              "EXCHANGE INVESTOR CUSTOMER ECONOMIC DISCOUNT MATURITY SECURITY TREASURY QUARTERS PROVIDER "
              "TRANSACTION SHAREHOLDER INVESTMENTS DERIVATIVES INFORMATION PERFORMANCE CONSOLIDATE").split()


def capitalised_words() -> dict:
    """Ordinary words in capitals, standalone in a sentence: what a country-code-only BIC rule would flag."""
    texts = [template.format(v=word) for word in CAPS_WORDS
             for template in ("The header says {v} in capitals.", "表头写着{v}。", "{v}: see note 4.")]
    return {"words": len(CAPS_WORDS), "sentences": len(texts),
            "sentences_flagged": sum(bool(detect(text)) for text in texts),
            "words_with_a_valid_country_code_at_5_6": sum(word[4:6] in COUNTRIES for word in CAPS_WORDS)}


def starter_docs() -> list[dict]:
    return [json.loads(line) for name in ("finance_corpus.jsonl", "general_corpus.jsonl")
            for line in (STARTER_DATA_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def starter_false_positives() -> dict:
    clean = [doc for doc in starter_docs() if doc.get("planted") != "pii"]
    return {"documents_without_planted_pii": len(clean), "flagged": sum(bool(detect(doc["text"])) for doc in clean)}


# --- throughput ----------------------------------------------------------------------------------------


def scaled_corpus(target: Path, megabytes: float) -> int:
    """The starter corpora's id and text only (their ground-truth PII lists stay out), repeated to size."""
    docs = starter_docs()
    written, copy, count = 0, 0, 0
    with open(target, "w", encoding="utf-8") as handle:
        while written < megabytes * 2**20:
            for doc in docs:
                encoded = json.dumps({"id": f"{doc['id']}-{copy}", "text": doc["text"]}, ensure_ascii=False) + "\n"
                handle.write(encoded)
                written += len(encoded.encode())
                count += 1
            copy += 1
    return count


def timed_pipeline(inputs: Path, out: Path, with_pii: bool) -> float:
    steps = [JsonlReader(str(inputs), glob_pattern="*.jsonl")]
    if with_pii:
        steps.append(PIIDesensitizer())
    steps.append(JsonlWriter(str(out / "output"), output_filename="${rank}.jsonl", compression=None))
    began = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        LocalPipelineExecutor(steps, tasks=1, workers=1, logging_dir=str(out / "logs")).run()
    return time.perf_counter() - began


def throughput(megabytes: float, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = work / "inputs"
        inputs.mkdir()
        documents = scaled_corpus(inputs / "corpus.jsonl", megabytes)
        size_mb = (inputs / "corpus.jsonl").stat().st_size / 2**20
        plain, with_pii = [], []
        for repeat in range(repeats):
            plain.append(timed_pipeline(inputs, work / f"plain{repeat}", with_pii=False))
            with_pii.append(timed_pipeline(inputs, work / f"pii{repeat}", with_pii=True))
        lines = (inputs / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines]
    step = PIIDesensitizer()
    began = time.perf_counter()
    for _ in step.run(Document(text=text, id=str(i)) for i, text in enumerate(texts)):
        pass
    step_only_s = time.perf_counter() - began
    plain_s, pii_s = min(plain), min(with_pii)
    return {
        "documents": documents, "input_mb": round(size_mb, 1), "repeats": repeats,
        "plain_reader_writer_s": round(plain_s, 2), "with_pii_step_s": round(pii_s, 2),
        "plain_mb_per_s": round(size_mb / plain_s, 2), "with_pii_step_mb_per_s": round(size_mb / pii_s, 2),
        "ratio_with_pii_over_plain": round(pii_s / plain_s, 3),
        "pii_step_alone_mb_per_s": round(size_mb / step_only_s, 2),
        "docs_with_pii": int(step.stats["docs_with_pii"].total),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Identifiers (and look-alikes) per type.")
    parser.add_argument("--mb", type=float, default=20, help="Size of the throughput corpus.")
    parser.add_argument("--repeats", type=int, default=2, help="Throughput runs of each pipeline (best kept).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--require-label", action="store_true",
                        help="Measure data.pii.require_label: cards, IDs, phones and SSNs only where labelled.")
    parser.add_argument("--no-throughput", action="store_true", help="Quality and chance rates only.")
    options = parser.parse_args()
    result = {"n_per_type": options.n, "seed": options.seed, "require_label": options.require_label,
              **quality(options.n, options.seed, options.require_label),
              "chance_pass_rate": chance_rates(options.n, options.seed, options.require_label),
              "capitalised_words": capitalised_words(),
              "starter_corpora": starter_false_positives()}
    if not options.no_throughput:
        result["throughput"] = throughput(options.mb, options.repeats)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
