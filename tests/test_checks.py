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
    ({"type": "language", "value": "en"}, "The account looks compromised; freeze it now.", "账户存在被盗用的高风险，应立即冻结。"),
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


@pytest.mark.parametrize(("check", "at_the_limit", "past_it"), [
    ({"type": "max_chars", "value": 6}, "不超过 六个字", "不超过七个字！"),  # spaces are not counted
    ({"type": "min_chars", "value": 6}, "abc def", "abc de"),
    ({"type": "max_words", "value": 3}, "three words here", "now four words here"),
    ({"type": "required_figures", "value": ["1000"]}, "fee 1001 yuan", "fee 1001.5 yuan"),  # within 0.1% of it
    ({"type": "required_figures", "value": ["0"]}, "余额为0元", "余额为0.001元"),  # a zero is matched exactly
])
def test_each_limit_is_inclusive(check, at_the_limit, past_it):
    assert [r.passed for r in check_response(at_the_limit, [check])] == [True]
    assert [r.passed for r in check_response(past_it, [check])] == [False]


@pytest.mark.parametrize(("check", "response", "passed", "detail"), [
    ({"type": "has_table"}, TABLE, True, "a Markdown table"),
    ({"type": "has_table"}, "no table", False, "no Markdown table (header, |---| rule, rows)"),
    ({"type": "has_list"}, "1. a\n2. b\n3. c", True, "3 list lines (at least 2)"),
    ({"type": "risk_disclaimer"}, "投资有风险。", True, "risk warning: '投资有风险'"),
    ({"type": "risk_disclaimer"}, "买入。", False, "no risk warning"),
    # the recipe's own phrases replace the built-in ones; an empty list keeps them
    ({"type": "risk_disclaimer", "value": ["本材料仅供参考"]}, "本材料仅供参考。", True, "risk warning: '本材料仅供参考'"),
    ({"type": "risk_disclaimer", "value": ["本材料仅供参考"]}, "投资有风险。", False, "no risk warning"),
    ({"type": "risk_disclaimer", "value": []}, "投资有风险。", True, "risk warning: '投资有风险'"),
    ({"type": "forbidden_phrases", "value": ["稳赚"]}, "稳赚！", False, "contains ['稳赚']"),
    ({"type": "forbidden_phrases", "value": ["稳赚"]}, "有风险。", True, "none of the forbidden phrases"),
    # a figure that is no number must appear as written
    ({"type": "required_figures", "value": ["AAA", "5%"]}, "评级AAA，利率5%", True, "all 2 figures present"),
    ({"type": "required_figures", "value": ["AAA", "5%"]}, "评级AA+，利率5.5%", False, "missing ['AAA', '5%']"),
    # codes as written, A-shares with or without their exchange, other markets' codes whole
    ({"type": "allowed_tickers", "value": ["600519", "AAPL.O"]}, "600519.SH and AAPL.O", True, "2 codes, all given"),
    ({"type": "allowed_tickers", "value": ["600519"]}, "600519 and 300750.SZ, TSLA.O", False,
     "codes not in the given list: ['300750.SZ', 'TSLA.O']"),
])
def test_each_verdict_says_why(check, response, passed, detail):
    [result] = check_response(response, [check])
    assert (result.passed, result.detail) == (passed, detail)


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
