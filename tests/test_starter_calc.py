"""Tests for the finance calculation problem generator: formulas against hand-computed values,
then the properties of the generated set (determinism, coverage, well-formed records)."""

from __future__ import annotations

import math
import re

import pytest

from finloom.starter import calc
from finloom.starter.calc import (
    annuity_fv,
    annuity_pv,
    bond_price,
    bond_ytm,
    breakeven_units,
    capm,
    current_ratio,
    debt_to_equity,
    effective_annual_rate,
    future_value,
    generate_calc_problems,
    gordon_growth,
    gross_margin,
    irr,
    loan_payment,
    npv,
    roe,
    round_half_up,
    sign_changes,
    wacc,
)

# ---------------------------------------------------------------- formulas, computed by hand


def test_npv_by_hand():
    # -1000 + 500/1.1 + 600/1.21 = -1000 + 454.5454... + 495.8677... = -49.5867...
    assert npv(0.10, [-1000, 500, 600]) == pytest.approx(-1000 + 500 / 1.1 + 600 / 1.21, rel=1e-12)
    assert npv(0.10, [-1000, 500, 600]) == pytest.approx(-49.586777, abs=1e-6)
    assert npv(0.0, [-100, 40, 70]) == pytest.approx(10.0)


def test_irr_simple_two_period():
    # -100 now, +110 in a year: IRR is exactly 10%.
    assert irr([-100, 110]) == pytest.approx(0.10, abs=1e-9)
    # -100, +60, +60: with x = 1 + r, 100x^2 - 60x - 60 = 0 -> x = (60 + sqrt(27600)) / 200,
    # r = 13.0662...%.
    x = (60 + math.sqrt(60**2 + 4 * 100 * 60)) / (2 * 100)
    assert irr([-100, 60, 60]) == pytest.approx(x - 1, abs=1e-9)
    assert irr([-100, 60, 60]) == pytest.approx(0.130662, abs=1e-6)


def test_npv_at_irr_is_zero():
    flows = [-4_820_000, 1_150_000, 960_000, 870_000, 1_010_000, 950_000, 1_160_000]
    rate = irr(flows)
    assert abs(npv(rate, flows)) < 1e-3  # on a 4.8m outlay
    assert npv(rate - 0.01, flows) > 0 > npv(rate + 0.01, flows)


def test_irr_negative_and_rejects_multiple_sign_changes():
    assert irr([-100, 50, 40]) < 0  # never pays back -> negative IRR
    assert abs(npv(irr([-100, 50, 40]), [-100, 50, 40])) < 1e-8
    assert sign_changes([-100, 230, -132]) == 2
    with pytest.raises(ValueError):
        irr([-100, 230, -132])
    with pytest.raises(ValueError):
        irr([100, 50])


def test_annuity_pv_by_hand():
    # 1000 a year for 3 years at 5%: 1000/1.05 + 1000/1.05^2 + 1000/1.05^3 = 2723.2480...
    by_hand = 1000 / 1.05 + 1000 / 1.05**2 + 1000 / 1.05**3
    assert annuity_pv(1000, 0.05, 3) == pytest.approx(by_hand, rel=1e-12)
    assert annuity_pv(1000, 0.05, 3) == pytest.approx(2723.248029, abs=1e-6)
    # Annuity due: first payment today -> 1000 + 1000/1.05 + 1000/1.05^2.
    assert annuity_pv(1000, 0.05, 3, due=True) == pytest.approx(1000 + 1000 / 1.05 + 1000 / 1.05**2, rel=1e-12)
    assert annuity_pv(1000, 0.0, 3) == 3000


def test_annuity_fv_by_hand():
    # 1000 at the end of each of 3 years at 5%: 1000*1.05^2 + 1000*1.05 + 1000 = 3152.50
    assert annuity_fv(1000, 0.05, 3) == pytest.approx(3152.50, abs=1e-9)
    assert annuity_fv(1000, 0.05, 3, due=True) == pytest.approx(3152.50 * 1.05, abs=1e-9)


def test_bond_price_by_hand_and_at_par():
    # 3-year, 5% annual coupon, face 100, yield 6%: 5/1.06 + 5/1.06^2 + 105/1.06^3 = 97.3270...
    by_hand = 5 / 1.06 + 5 / 1.06**2 + 105 / 1.06**3
    assert bond_price(100, 0.05, 0.06, 3) == pytest.approx(by_hand, rel=1e-12)
    assert bond_price(100, 0.05, 0.06, 3) == pytest.approx(97.326988, abs=1e-6)
    # A bond priced at its coupon rate is worth par, whatever the maturity or frequency.
    for years, freq in [(1, 1), (5, 2), (10, 1), (30, 2)]:
        assert bond_price(1000, 0.045, 0.045, years, freq) == pytest.approx(1000, abs=1e-8)
    # Semi-annual: 2 years, 4% coupon (2 per half-year), 6% yield (3% per half-year).
    semi = 2 / 1.03 + 2 / 1.03**2 + 2 / 1.03**3 + 102 / 1.03**4
    assert bond_price(100, 0.04, 0.06, 2, 2) == pytest.approx(semi, rel=1e-12)


def test_bond_ytm_inverts_price():
    assert bond_ytm(100, 100, 0.05, 7) == pytest.approx(0.05, abs=1e-9)
    price = bond_price(1000, 0.03, 0.0567, 12, 2)
    assert bond_ytm(price, 1000, 0.03, 12, 2) == pytest.approx(0.0567, abs=1e-9)


def test_loan_payment_by_hand():
    # 100,000 over 1 year monthly at 12%: i = 1%, P*i/(1-1.01^-12) = 8884.8788...
    assert loan_payment(100_000, 0.12, 1) == pytest.approx(100_000 * 0.01 / (1 - 1.01**-12), rel=1e-12)
    assert loan_payment(100_000, 0.12, 1) == pytest.approx(8884.878868, abs=1e-5)
    # Payments discounted at the loan rate give back the principal.
    pay = loan_payment(1_000_000, 0.041, 30)
    assert annuity_pv(pay, 0.041 / 12, 360) == pytest.approx(1_000_000, rel=1e-12)
    assert loan_payment(120_000, 0.0, 10) == pytest.approx(1000)


def test_capm_and_wacc_by_hand():
    assert capm(0.03, 1.2, 0.08) == pytest.approx(0.03 + 1.2 * 0.05)  # 9%
    assert capm(0.03, 1.2, 0.08) == pytest.approx(0.09)
    # E = 600, D = 400: 0.6*12% + 0.4*6%*(1-25%) = 7.2% + 1.8% = 9%
    assert wacc(600, 400, 0.12, 0.06, 0.25) == pytest.approx(0.09)


def test_ratios_by_hand():
    assert current_ratio(1500, 1000) == pytest.approx(1.5)
    assert roe(120, 800) == pytest.approx(0.15)
    assert debt_to_equity(600, 400) == pytest.approx(1.5)
    assert gross_margin(1000, 650) == pytest.approx(0.35)


def test_gordon_growth_by_hand():
    # D0 = 2, g = 4%, r = 10%: D1 = 2.08, P0 = 2.08 / 0.06 = 34.6666...
    assert gordon_growth(2.0, 0.10, 0.04) == pytest.approx(2.08 / 0.06)
    with pytest.raises(ValueError):
        gordon_growth(2.0, 0.04, 0.05)


def test_future_value_and_ear_by_hand():
    assert future_value(10_000, 0.05, 2) == pytest.approx(11_025.0)
    assert future_value(10_000, 0.08, 1, 4) == pytest.approx(10_000 * 1.02**4)
    assert effective_annual_rate(0.12, 12) == pytest.approx(1.01**12 - 1)  # 12.6825...%
    assert effective_annual_rate(0.12, 12) == pytest.approx(0.126825, abs=1e-6)
    assert effective_annual_rate(0.06, 1) == pytest.approx(0.06)


def test_breakeven_by_hand():
    # 500,000 fixed, price 80, variable 30: 500,000 / 50 = 10,000 units.
    assert breakeven_units(500_000, 80, 30) == pytest.approx(10_000)
    with pytest.raises(ValueError):
        breakeven_units(1000, 30, 30)


def test_round_half_up():
    assert round_half_up(2.675, 2) == 2.68  # round() gives 2.67 on the binary float
    assert round_half_up(-1.005, 2) == -1.01
    assert round_half_up(1086.2, 0) == 1086.0


# ---------------------------------------------------------------- the generated set


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return generate_calc_problems()


def test_count_and_kinds(problems):
    kinds = {p["kind"] for p in problems}
    assert len(problems) >= 200
    assert len(kinds) >= 10
    assert {"npv", "irr", "bond_price", "annuity_pv", "annuity_fv", "loan_payment", "capm", "wacc",
            "gordon_growth", "future_value", "effective_annual_rate", "breakeven"} <= kinds
    for kind in kinds:
        assert sum(p["kind"] == kind for p in problems) == 20


def test_determinism():
    assert generate_calc_problems(seed=7) == generate_calc_problems(seed=7)
    assert generate_calc_problems(seed=7) != generate_calc_problems(seed=8)
    assert generate_calc_problems(seed=0, per_kind=3) == generate_calc_problems(per_kind=3)


def test_ids_unique_and_languages(problems):
    ids = [p["id"] for p in problems]
    assert len(ids) == len(set(ids))
    assert all(p["id"].startswith(f"calc-{p['kind'].replace('_', '-')}-") for p in problems)
    for kind in {p["kind"] for p in problems}:
        langs = [p["lang"] for p in problems if p["kind"] == kind]
        assert langs[:4] == ["en", "zh", "en", "zh"]  # alternating, both present
    zh = [p for p in problems if p["lang"] == "zh"]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in p["question"]) for p in zh)


def test_records_well_formed(problems):
    keys = {"id", "kind", "lang", "question", "answer", "unit", "tolerance", "solution"}
    for p in problems:
        assert set(p) == keys
        assert isinstance(p["answer"], float) and math.isfinite(p["answer"])
        assert p["unit"] in {"yuan", "10k_yuan", "%", "ratio", "units"}
        assert 0 < p["tolerance"] <= 0.01
        assert "{" not in p["question"] and "{" not in p["solution"]
        assert p["answer"] != 0


def test_questions_state_unit_and_rounding(problems):
    for p in problems:
        if p["lang"] == "en":
            assert "Give the answer" in p["question"]
            assert ("decimal places" in p["question"]) or ("rounded up" in p["question"])
            if p["unit"] == "%":
                assert "percent units" in p["question"]
        else:
            assert ("位小数" in p["question"]) or ("向上取整" in p["question"])
            if p["unit"] == "10k_yuan":
                assert "万元为单位" in p["question"]


def test_answers_match_solution_text(problems):
    # The worked solution ends with the answer as written in the record.
    for p in problems:
        number = f"{p['answer']:,.{3 if p['kind'] == 'effective_annual_rate' else 0 if p['unit'] == 'units' else 2}f}"
        assert number in p["solution"], (p["id"], number, p["solution"])


def _yuan_amounts(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"([\d,]+(?:\.\d+)?) yuan", text)]


def _percents(text: str) -> list[float]:
    return [float(x) / 100 for x in re.findall(r"(\d+(?:\.\d+)?)%", text)]


def test_answers_recomputed_from_question_text(problems):
    # End to end: read the inputs back out of the English question and recompute the answer.
    english = [p for p in problems if p["lang"] == "en"]
    for p in (p for p in english if p["kind"] in ("npv", "irr")):
        outlay, *flows = _yuan_amounts(p["question"])
        cashflows = [-outlay, *flows]
        if p["kind"] == "npv":
            rate = _percents(p["question"])[0]
            assert p["answer"] == round_half_up(npv(rate, cashflows), 2)
        else:
            assert p["answer"] == round_half_up(irr(cashflows) * 100, 2)
            assert abs(npv(p["answer"] / 100, cashflows)) < 0.002 * outlay  # ~0 at the rounded IRR
    for p in (p for p in english if p["kind"] == "loan_payment"):
        principal = _yuan_amounts(p["question"])[0]
        years = int(re.search(r"over (\d+) years", p["question"]).group(1))
        rate = _percents(p["question"])[0]
        assert p["answer"] == round_half_up(loan_payment(principal, rate, years), 2)
    for p in (p for p in english if p["kind"] == "capm"):
        beta = float(re.search(r"beta of (\d+(?:\.\d+)?)", p["question"]).group(1))
        rf, rm = _percents(p["question"])[:2]
        assert p["answer"] == round_half_up(capm(rf, beta, rm) * 100, 2)


def test_generated_ranges(problems):
    assert all(2.0 <= p["answer"] <= 40.0 for p in problems if p["kind"] == "irr")
    assert all(0.5 < p["answer"] < 20 for p in problems if p["kind"] == "bond_ytm")
    assert all(p["answer"] == int(p["answer"]) > 0 for p in problems if p["kind"] == "breakeven")
    zh_npv = [p for p in problems if p["kind"] == "npv" and p["lang"] == "zh"]
    assert zh_npv and all(p["unit"] == "10k_yuan" for p in zh_npv)


def test_percent_answers_in_percent_units(problems):
    capm_answers = [p["answer"] for p in problems if p["kind"] == "capm"]
    assert all(1.0 < a < 30.0 for a in capm_answers)  # 8.25 means 8.25%, not 0.0825
    margins = [p["answer"] for p in problems if p["kind"] == "gross_margin"]
    assert all(10.0 < a < 90.0 for a in margins)


def test_template_table_is_bilingual():
    assert len(calc.KINDS) >= 10
    assert len({kind.name for kind in calc.KINDS}) == len(calc.KINDS)
    for kind in calc.KINDS:
        assert set(kind.question) == set(kind.solution) == {"en", "zh"}
        assert all("{ask}" in text for text in kind.question.values())
        assert all("{answer}" in text for text in kind.solution.values())
