"""Evaluation building blocks: question parsing, public layouts, answer extraction, scenario scoring."""

from __future__ import annotations

import pytest

from finloom.grading.answers import answer_value, chinese_numeral, extract_letters, numbers_match
from finloom.eval.layouts import convert
from finloom.eval.mcq import normalize_answer, parse_question
from finloom.grading.rubric import checklist_metrics, final_score, is_usable, judge_prompt, parse_judgement


def test_parse_question_handles_full_width_and_multiline():
    stem, options = parse_question("关于存款保险，下列说法正确的有：\nA．保护存款人\nB、覆盖股票\n继续说明\nC:限额赔付\nD) 无上限")
    assert stem == "关于存款保险，下列说法正确的有："
    assert options == {"A": "保护存款人", "B": "覆盖股票继续说明", "C": "限额赔付", "D": "无上限"}  # no space inside CJK
    assert normalize_answer("d, a b") == "ABD" and normalize_answer("ＡＣ") == "AC"


# FLAME-Cer as published: records written in each of the ways the public certification files use.
@pytest.mark.parametrize(("question", "stem", "options"), [
    ("某企业当年应纳税所得额为20万元，适用税率16%，则应纳税额为（ ）。 A.3.2万元 B.4.5万元 C.6.0万元 D.7.5万元",
     "某企业当年应纳税所得额为20万元，适用税率16%，则应纳税额为（ ）。", ["3.2万元", "4.5万元", "6.0万元", "7.5万元"]),
    ("精算现值的计算基础包括（ ）。 A．利率 B．死亡率 C．费用率 D．失效率 E．通胀率",
     "精算现值的计算基础包括（ ）。", ["利率", "死亡率", "费用率", "失效率", "通胀率"]),
    ("下列属于货币市场工具的是A.国库券B.商业票据C.普通股D.公司债券", "下列属于货币市场工具的是",
     ["国库券", "商业票据", "普通股", "公司债券"]),
    ("关于内部审计的说法，正确的是（ ）。\nA.内部审计应当独立于被审计\n部门\nB.Internal audit reports to\nthe board\nC.无需",
     "关于内部审计的说法，正确的是（ ）。", ["内部审计应当独立于被审计部门", "Internal audit reports to the board", "无需"]),
    ("Which U.S. exchange opens at 9:30 A.M. Eastern?\nA. NYSE, in U.S. dollars\nB. Rates of 3.2% p.a.\n"
     "C. Formula B.2 applies\nD. None of the above",
     "Which U.S. exchange opens at 9:30 A.M. Eastern?",
     ["NYSE, in U.S. dollars", "Rates of 3.2% p.a.", "Formula B.2 applies", "None of the above"]),
    ("The CFA Institute's standard is: A. apply formula B.2 to the yield B. disclose C. ignore D. defer",
     "The CFA Institute's standard is:", ["apply formula B.2 to the yield", "disclose", "ignore", "defer"]),
    ("计算结果为（ ）\n(A) 一百\n(B) 二百\n(C) 三百", "计算结果为（ ）", ["一百", "二百", "三百"]),
])
def test_flame_questions_as_published_parse_with_exact_options(question, stem, options):
    items, rejects = convert([{"task_name": "CPA", "question": question, "answer": "AB"}], "flame")
    assert rejects == []
    assert items[0]["question"] == stem and items[0]["options"] == options and items[0]["answer"] == "AB"


@pytest.mark.parametrize(("question", "options"), [
    # a stray "B. 3" after a space, later than the real "B." at a line start: the line start wins
    ("Which rule applies?\nA. Rule 1\nB. Rule 2 or annex B. 3\nC. None",
     {"A": "Rule 1", "B": "Rule 2 or annex B. 3", "C": "None"}),
    # and after a space outranks after another character ("表B）")
    ("Which applies? A. rule 1 B. rule 2（见附表B）", {"A": "rule 1", "B": "rule 2（见附表B）"}),
    # wrapped lines: joined without a space only between two CJK characters
    ("会计处理（ ）\nA.按IFRS 9准\n则处理\nB.适用于\nIFRS 17", {"A": "按IFRS 9准则处理", "B": "适用于 IFRS 17"}),
    # a letter glued to a digit is no marker ("3D)"), at either parity of its place in the text
    ("Which is additive?\nA. Offset\nB. Digital\nC. Uses 3D) printing",
     {"A": "Offset", "B": "Digital", "C": "Uses 3D) printing"}),
    ("Which is additive?\nA. Offset\nB. Digital\nC. Use 3D) printing",
     {"A": "Offset", "B": "Digital", "C": "Use 3D) printing"}),
    # a tab is a space, not a line start: the "B." at the line start wins over a later one after a tab
    ("Q\nA. x\nB. y\tB. z", {"A": "x", "B": "y\tB. z"}),
    # the chain with more options wins over a shorter one on stronger boundaries: options glued on one line
    # (after other characters) and a note below them that starts with "B."
    ("下列正确的是A.甲B.乙C.丙D.丁\nB. 注：见条款", {"A": "甲", "B": "乙", "C": "丙", "D": "丁 B. 注：见条款"}),
    # and at the last letter: eight options on one line beat seven below them at line starts
    ("Pick: A.a B.b C.c D.d E.e F.f G.g H.h\nA. 1\nB. 2\nC. 3\nD. 4\nE. 5\nF. 6\nG. 7",
     {**dict(zip("ABCDEFG", "abcdefg")), "H": "h A. 1 B. 2 C. 3 D. 4 E. 5 F. 6 G. 7"}),
    # letters in text order only: an "A." after the "B." starts the chain, and no "B." follows it
    ("Q\nB. 乙\nA. 甲\nC. 丙", {"A": "甲 C. 丙"}),
    # wrapped lines join without a space only where the joined text ends and the next line begins in CJK
    ("会计处理（ ）\nA.按IFRS\n准则处理\nB.甲方\n乙B", {"A": "按IFRS 准则处理", "B": "甲方乙B"}),
    ("Pick one\nA.a\nB.b\nC.c\nD.d\nE.e\nF.f\nG.g\nH.h", dict(zip("ABCDEFGH", "abcdefgh"))),  # all eight letters
])
def test_option_boundaries_and_wrapped_lines(question, options):
    assert parse_question(question)[1] == options


@pytest.mark.parametrize("question", ["A.一\nB.二\nC.三", "A. yes\nB. no"])  # a marker at the very start
def test_flame_record_without_a_stem_is_rejected_for_that(question):
    _, rejects = convert([{"task_name": "FRM", "question": question, "answer": "A"}], "flame")
    assert [reason for _, reason in rejects] == ["no question stem"]


@pytest.mark.parametrize(("question", "reason"), [
    ("Q\nA、B、乙\nC、丙", "option A is empty"),  # an empty option is scored as the most likely continuation
    ("Q\nA. 甲\nB.\nC. 丙", "option B is empty"),
    ("Q\nB. 乙\nA. 甲\nC. 丙", "fewer than two options"),  # letters out of order
])
def test_malformed_flame_questions_are_rejected_with_their_reason(question, reason):
    _, rejects = convert([{"task_name": "CPA", "question": question, "answer": "A"}], "flame")
    assert [why for _, why in rejects] == [reason]


def test_layouts_convert_public_formats_and_reject_with_reasons():
    flame, flame_rejects = convert([
        {"task_name": "CPA", "second_level": "审计", "question": "Which?\nA．one\nB．two\nC．three", "answer": "AC"},
        {"task_name": "CPA", "question": "Q?\nA.x\nB.y", "answer": "C"},
        {"task_name": "CPA", "question": "no options at all", "answer": "A"},
    ], "flame")
    assert flame[0]["options"] == ["one", "two", "three"] and flame[0]["multi"] is True
    assert flame[0]["subsets"] == ["AB", "AC", "BC", "ABC"] and flame[0]["answer_index"] == 1
    assert [reason for _, reason in flame_rejects] == ["answer 'C' is not among the options AB", "fewer than two options"]
    financeiq, _ = convert([{"Question": "股票的风险？", "A": "高", "B": "低", "C": "无", "D": "不确定", "Answer": "A"}], "columns")
    assert financeiq[0]["answer_index"] == 0 and financeiq[0]["letters"] == ["A", "B", "C", "D"]
    cflue, _ = convert([{"名称": "证券专项考试", "task": "单项选择题", "question": "复利终值公式为（）。",
                         "choices": "{'A': 'FV=PV×(1+I×n)', 'B': 'FV=PV×(1+I)^n'}", "answer": "B"}], "cflue")
    assert cflue[0]["task_name"] == "证券专项考试" and cflue[0]["options"][1] == "FV=PV×(1+I)^n"
    mmlu, _ = convert([{"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "math"}], "mmlu")
    assert mmlu[0]["answer"] == "B"
    arc, _ = convert([{"question": "Sky?", "choices": {"text": ["blue", "green"], "label": ["1", "2"]},
                       "answerKey": "1"}], "arc")
    assert arc[0]["answer"] == "A"
    calc, calc_rejects = convert([{"question": "q", "answer": "He pays 3 + 4 = 7\n#### 7"},
                                  {"question": "q", "answer": "seven"}], "calc")
    assert calc[0]["answer"] == 7.0 and calc_rejects[0][1] == "answer 'seven' is not a number"


@pytest.mark.parametrize("reply, valid, expected", [
    ("Answer: B", "ABCD", "B"), ("答案：AB\n解析：……", "ABCD", "AB"), ("The correct options are A and C.", "ABCD", "AC"),
    ("我认为应该选B。", "ABCD", "B"), ("(A)", "ABCD", "A"), ("A、C、D", "ABCD", "ACD"),
    ("Answer: E", "ABCD", None), ("I cannot tell.", "ABCD", None),
    # the explicit answer marker, and the first one, decides; an explanation's options are not answers
    ("答案：C\n解析：选项A错误，选项B错误，选项D错误。", "ABCD", "C"), ("故选D。选项A说法错误", "ABCD", "D"),
    ("选项A错误，选项B正确，故选B", "ABCD", "B"), ("The answer is B. Option A is wrong.", "ABCD", "B"),
    ("答案：c", "ABCD", "C"), ("正确答案是 b、d", "ABCD", "BD"), ("Answer: a bond is a debt", "ABCD", None),
])
def test_letters_are_extracted_from_replies(reply, valid, expected):
    assert extract_letters(reply, valid) == expected


@pytest.mark.parametrize("reply, unit, expected", [
    ("The NPV is -810,976.15 yuan.", "yuan", -810976.15), ("答案：12.68万元", "10k_yuan", 12.68),
    ("IRR = 12.5%", "%", 12.5), ("so it is 3.2 million", "yuan", 3_200_000.0), ("答案是三百二十五", "units", 325.0),
    ("First 98.5, then after rounding 101.2", "yuan", 101.2), ("no number", "yuan", None),
    # an amount stated in yuan where the answer is in 10k or 100m yuan is converted, not compared as is
    ("应纳税额为126,800元", "10k_yuan", 12.68), ("Answer: 350,000,000 yuan", "100m_yuan", 3.5),
    ("应纳税额为12.68", "10k_yuan", 12.68),
])
def test_numbers_are_extracted_in_the_answer_unit(reply, unit, expected):
    assert answer_value(reply, unit) == (pytest.approx(expected) if expected is not None else None)


def test_numeric_tolerance_is_relative():
    assert numbers_match(100.4, 100.0, 0.005) and not numbers_match(100.6, 100.0, 0.005)
    assert not numbers_match(None, 1.0)


@pytest.mark.parametrize(("predicted", "expected", "relative", "match"), [
    (101.0, 100.0, 0.01, True),      # exactly at the tolerance still matches
    (200.0, 100.0, 0.005, False),    # a multiple of the answer is not the answer
    (1e-7, 0.0, 0.005, True),        # an answer of 0 is matched within the absolute tolerance
    (1e-5, 0.0, 0.005, False),
])
def test_numeric_tolerance_bounds(predicted, expected, relative, match):
    assert numbers_match(predicted, expected, relative) is match


@pytest.mark.parametrize(("reply", "expected"), [
    ("1 thousand", 1e3), ("2 million", 2e6), ("3 billion", 3e9), ("4k", 4e3), ("5m", 5e6), ("6bn", 6e9),
    ("7亿", 7e8), ("8万", 8e4), ("9万亿", 9e12), ("10 rmb", 10.0), ("11 CNY", 11.0),
])
def test_every_unit_word_multiplies_exactly(reply, expected):
    assert answer_value(reply) == expected


@pytest.mark.parametrize(("reply", "unit", "expected"), [
    ("答案：3.5亿元", "100m_yuan", 3.5),
    ("Answer: 12, up from 10 last year", "", 12.0),         # the first number after the marker
    ("Answer: first 10. Final answer: 12", "", 12.0),       # after the last marker
    ("we got 3, then 4; answer: unclear", "", 4.0),         # nothing after the marker: the last number before it
    ("Costs 3 then 4; answer: unclear", "", 4.0),
    ("先算得一百，最终为二百", "", 200.0),                    # no marker, no digits: the last Chinese numeral
])
def test_the_final_number_is_the_one_after_the_last_marker(reply, unit, expected):
    assert answer_value(reply, unit) == expected


@pytest.mark.parametrize(("numeral", "value"), [
    ("零", 0), ("〇", 0), ("一", 1), ("两百", 200), ("十", 10), ("十二", 12), ("二十三", 23), ("四千", 4000),
    ("六", 6), ("七", 7), ("八", 8), ("九十九", 99), ("三千零五十", 3050), ("三元", None), ("", None),
])
def test_chinese_numerals(numeral, value):
    assert chinese_numeral(numeral) == value


@pytest.mark.parametrize(("reply", "expected"), [
    ("答案：(B)\n解析：选项A错误", "B"),          # the letter one character after the marker, not the explanation's
    ("答案：B。选择A是常见错误。", "B"),           # an explicit marker outranks a later weak one
    ("答案：B。解析：有人认为答案是A，但这不对。", "B"),  # the first explicit marker, not a later one
])
def test_the_explicit_answer_marker_decides(reply, expected):
    assert extract_letters(reply) == expected


SCENARIO = {"id": "s1", "task": "Minutes summary", "prompt": "Summarise the meeting.", "high_stakes": False,
            "weights": {"accuracy": 30, "completeness": 30, "clarity": 10, "practicality": 10,
                        "instruction_following": 20},
            "checklist": ["Lists the decisions", {"text": "Under 200 words", "primary": False}]}


def test_scenario_final_score_usable_rule_and_checklist_metrics():
    scores = {"accuracy": 4, "completeness": 3, "clarity": 5, "practicality": 3, "instruction_following": 4}
    assert final_score(scores, SCENARIO["weights"]) == pytest.approx((120 + 90 + 50 + 30 + 80) / 100)
    assert is_usable(scores, SCENARIO["weights"], high_stakes=False)
    assert not is_usable(scores, SCENARIO["weights"], high_stakes=True)  # 3.7 < 4
    assert not is_usable({**scores, "clarity": -1, "accuracy": 5}, SCENARIO["weights"], high_stakes=False)
    assert checklist_metrics([True, False], [True, False]) == {"csr": 0.5, "isr": 0.0, "psr": 0.0}  # 0.5+0.25 <= 0.8
    assert checklist_metrics([True, True, False], [True, False, False])["psr"] == 0.0
    assert checklist_metrics([True, True, True], [True, False, False]) == {"csr": 1.0, "isr": 1.0, "psr": 1.0}
    assert checklist_metrics([False, True], [True, True])["psr"] == 0.0
    assert checklist_metrics([True, True, True, True, False], [False] * 5)["psr"] == 0.0  # CSR 0.8 is not > 0.8


def test_judge_prompt_and_reply_parsing():
    prompt = judge_prompt(SCENARIO, "The board approved the budget.")
    assert "instruction_following" in prompt and "1. Lists the decisions" in prompt and "2. Under 200 words" in prompt
    good = ('Here is my review: {"accuracy": 4, "completeness": 3, "clarity": 5, "practicality": 3, '
            '"instruction_following": 4, "checklist": [true, false]}')
    assert parse_judgement(good, SCENARIO) == {"scores": {"accuracy": 4.0, "completeness": 3.0, "clarity": 5.0,
                                                          "practicality": 3.0, "instruction_following": 4.0},
                                               "checklist": [True, False]}
    assert parse_judgement(good.replace('"clarity": 5', '"clarity": 7'), SCENARIO) is None
    assert parse_judgement(good.replace("[true, false]", "[true]"), SCENARIO) is None
    assert parse_judgement("The answer is fine.", SCENARIO) is None


def test_a_cut_of_the_scenarios_keeps_every_family(tmp_path):
    import json

    from finloom.eval import harness
    from finloom.recipe import STARTER_DATA_DIR

    prepared = harness.prepare("scenarios", "scenario", "scenario", [STARTER_DATA_DIR / "eval_scenarios.jsonl"],
                               "auto", tmp_path, 12)
    families = [item["family"] for item in prepared.items]
    assert len(families) == 12 and len(set(families)) == 10  # the file holds 10 families, sorted by id
    assert harness.spread([{"f": "a"}, {"f": "a"}, {"f": "b"}], "f") == [{"f": "a"}, {"f": "b"}, {"f": "a"}]
    assert json.loads((tmp_path / "data" / "scenarios" / "eval_scenarios.jsonl").read_text().splitlines()[0])["id"]
