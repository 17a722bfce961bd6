"""Machine-verifiable checks (finloom.checks): each rule passes what it should and fails what it should."""

from __future__ import annotations

import pytest

from finloom.checks import check_response, pass_share

TABLE = "| 银行 | 净息差 |\n|---|---|\n| 东门 | 1.85% |\n"
LIST = "要点：\n1. 核实身份\n2. 冻结账户\n"


@pytest.mark.parametrize(("check", "passing", "failing"), [
    ({"type": "max_chars", "value": 10}, "不超过十个字", "这一句话明显超过了十个汉字的长度限制"),
    ({"type": "min_chars", "value": 5}, "five chars", "abc"),
    ({"type": "max_words", "value": 5}, "Keep it short please.", "This answer has far more than five words in it."),
    ({"type": "has_table"}, "Summary:\n" + TABLE, "| not | a table without a rule |"),
    ({"type": "has_list"}, LIST, "一段话，没有分点。"),
    ({"type": "has_list"}, "- freeze the card\n- call the client", "- only one bullet"),
    ({"type": "language", "value": "zh"}, "账户存在被盗用的高风险，应立即冻结。", "The account looks compromised; freeze it now."),
    ({"type": "risk_disclaimer"}, "建议配置债券基金。投资有风险，入市需谨慎。", "建议全部买入股票基金。"),
    ({"type": "risk_disclaimer"}, "Past performance is no guide to future returns.", "Buy the fund today."),
    ({"type": "required_figures", "value": ["14,100.00", "10.25%"]}, "利息14100元，收益率10.25%。", "利息14,100元。"),
    ({"type": "required_figures", "value": ["1.1134"]}, "accrued interest 1.113 yuan", "accrued interest 1.2 yuan"),
    ({"type": "forbidden_phrases", "value": ["稳赚不赔", "guaranteed return"]}, "收益随市场波动。", "这款产品稳赚不赔！"),
    ({"type": "allowed_tickers", "value": ["600519", "000001"]}, "关注600519.SH与000001。", "可买入600519和300750。"),
])
def test_each_rule_passes_and_fails_as_it_should(check, passing, failing):
    [good] = check_response(passing, [check])
    [bad] = check_response(failing, [check])
    assert good.passed, good.detail
    assert not bad.passed, bad.detail


def test_results_name_what_failed_and_grade_a_reward():
    results = check_response("收益率10.25%。", [{"type": "language", "value": "zh"}, {"type": "has_table"},
                                               {"type": "required_figures", "value": ["10.25%", "444.44"]}])
    assert [r.passed for r in results] == [True, False, False]
    assert results[2].detail == "missing ['444.44']"
    assert pass_share(results) == pytest.approx(1 / 3)
    assert pass_share([]) == 1.0
    assert [r.passed for r in check_response("", [{"type": "language", "value": "en"}])] == [False]


def test_an_unknown_check_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="unknown check type 'has_chart'"):
        check_response("anything", [{"type": "has_chart"}])


def test_bundled_scenarios_carry_checks_derived_from_their_own_words():
    import json

    from finloom.recipe import STARTER_DATA_DIR

    rows = [json.loads(line) for line in (STARTER_DATA_DIR / "eval_scenarios.jsonl").read_text().splitlines()]
    assert all(row["checks"] and row["checks"][0]["type"] == "language" for row in rows)
    by_id = {row["id"]: {c["type"]: c.get("value") for c in row["checks"]} for row in rows}
    assert by_id["analysis-research-bank-peer-comparison-en"] == {"language": "en", "max_words": 300, "has_table": None}
    assert by_id["text-processing-term-sheet-translation-zh"]["language"] == "en"  # a translation into English
    assert by_id["data-calculation-deposit-early-withdrawal-zh"]["required_figures"] == ["444.44", "14,100.00",
                                                                                          "13,655.56"]
    assert all("risk_disclaimer" in by_id[row["id"]] for row in rows if row["family"] == "marketing")
