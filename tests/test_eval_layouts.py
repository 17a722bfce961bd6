"""Public benchmark records, in the field names and types they have on the Hub, turned into canonical items
(``finloom/eval/layouts.py``): the exact fields they get, and the reason each unusable record is rejected with."""

from __future__ import annotations

import pytest

from finloom.eval.layouts import convert

# cais/mmlu, abstract_algebra test[0]: ``answer`` is a ClassLabel index
MMLU = {"question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",
        "subject": "abstract_algebra", "choices": ["0", "4", "2", "6"], "answer": 1}
# allenai/ai2_arc, ARC-Challenge test[0]
ARC = {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a meteorite "
       "impact. Which is the most likely effect of this increase in rotation?",
       "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                            "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                   "label": ["A", "B", "C", "D"]}, "answerKey": "C"}
# Rowan/hellaswag validation[0]: ``label`` is a string, empty in the test split
HELLASWAG = {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
             "ctx": "A man is sitting on a roof. he",
             "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                         "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
             "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": "3"}
# ceval/ceval-exam val: integer ids, the answer empty in the test split
CEVAL = {"id": 0, "question": "下列关于税法基本原则的表述中，不正确的是____。", "A": "税收法定原则包括税收要件法定原则和税务合法性原则",
         "B": "税收公平原则源于法律上的平等性原则", "C": "税收效率原则包含经济效率和行政效率两个方面",
         "D": "税务机关按法定程序依法征税，可以自由做出减征、停征或免征税款的决定", "answer": "D", "explanation": ""}
# openai/gsm8k main train[0]
GSM8K = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                     "How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                   "altogether in April and May.\n#### 72"}


def reasons(records, layout):
    items, rejects = convert(records, layout)
    assert items == []
    return [reason for _, reason in rejects]


def test_mmlu_index_answers_and_letter_answers():
    items, rejects = convert([MMLU, {**MMLU, "answer": 0}, {**MMLU, "answer": 3}, {**MMLU, "answer": "c"}], "mmlu")
    assert rejects == []
    assert items[0] == {"id": "0", "question": MMLU["question"], "options": ["0", "4", "2", "6"],
                        "letters": ["A", "B", "C", "D"], "answer": "B", "multi": False,
                        "subsets": ["AB", "AC", "AD", "BC", "BD", "CD", "ABC", "ABD", "ACD", "BCD", "ABCD"],
                        "answer_index": 1, "task_name": "abstract_algebra", "second_level": ""}
    assert [(item["answer"], item["answer_index"], item["id"]) for item in items[1:]] == [
        ("A", 0, "1"), ("D", 3, "2"), ("C", 2, "3")]


@pytest.mark.parametrize(("answer", "reason"), [
    (4, "answer index 4 is not among the 4 choices"), (-1, "answer index -1 is not among the 4 choices"),
    (9, "answer index 9 is not among the 4 choices"), ("E", "answer 'E' is not among the options ABCD"),
])
def test_mmlu_answers_outside_the_choices_are_rejected(answer, reason):
    assert reasons([{**MMLU, "answer": answer}], "mmlu") == [reason]


def test_arc_and_hellaswag_as_published():
    arc, rejects = convert([ARC, {**ARC, "answerKey": "E"}], "arc")
    assert [(item["id"], item["answer"], item["options"][2], item["task_name"]) for item in arc] == [
        ("Mercury_7175875", "C", "Planetary days will become shorter.", "arc")]
    assert rejects == [(1, "answerKey 'E' is not among the labels ['A', 'B', 'C', 'D']")]
    hellaswag, rejects = convert([HELLASWAG, {key: value for key, value in HELLASWAG.items() if key != "ind"},
                                  {**HELLASWAG, "label": "0"}], "hellaswag")
    assert rejects == []
    assert [(item["id"], item["question"], item["answer"], item["answer_index"], item["task_name"])
            for item in hellaswag] == [("24", "A man is sitting on a roof. he", "D", 3, "Roof shingle removal"),
                                       ("1", "A man is sitting on a roof. he", "D", 3, "Roof shingle removal"),
                                       ("24", "A man is sitting on a roof. he", "A", 0, "Roof shingle removal")]
    assert hellaswag[0]["options"] == HELLASWAG["endings"]


@pytest.mark.parametrize(("label", "reason"), [
    ("", "missing field label"),  # the test split publishes no labels
    ("4", "label 4 is not among the 4 endings"), ("9", "label 9 is not among the 4 endings"),
    ("-1", "label -1 is not among the 4 endings"),
    ("three", "ValueError: invalid literal for int() with base 10: 'three'"),
])
def test_hellaswag_labels_that_name_no_ending_are_rejected(label, reason):
    assert reasons([{**HELLASWAG, "label": label}], "hellaswag") == [reason]


def test_columns_ceval_and_a_gap_in_the_options():
    items, rejects = convert([CEVAL, {**CEVAL, "answer": ""}, {**CEVAL, "C": "", "answer": "C"},
                              {**CEVAL, "C": None, "answer": "B"}, {"question": "单选", "A": "是", "answer": "A"},
                              {**CEVAL, "D": ""}], "columns")
    assert [(item["id"], item["answer"], item["options"][3]) for item in items] == [("0", "D", CEVAL["D"])]
    assert [(index, reason) for index, reason in rejects] == [
        (1, "missing field answer / Answer"),
        (2, "option letters ABD are not ABC"), (3, "option letters ABD are not ABC"),  # not D's text as C
        (4, "fewer than two options"),
        (5, "answer 'D' is not among the options ABC")]


def test_cflue_choices_that_are_not_a_dict_literal():
    record = {"名称": "证券专项考试", "task": "单项选择题", "question": "复利终值公式为（）。", "answer": "B"}
    items, rejects = convert([
        {**record, "choices": "{'A': 'FV=PV×(1+I×n)', 'B': 'FV=PV×(1+I)^n'"},  # cut short: SyntaxError
        {**record, "choices": "{'A': FV, 'B': PV}"},  # names, not strings: ValueError
        {**record, "choices": "['FV=PV×(1+I×n)', 'FV=PV×(1+I)^n']"},
        {**record, "choices": {"A": "FV=PV×(1+I×n)", "C": "FV=PV×(1+I)^n"}},
        {**record, "choices": {"B": "FV=PV×(1+I)^n", "A": "FV=PV×(1+I×n)"}, "id": "x7"},
        {**record, "choices": "{'1': 'FV=PV×(1+I×n)', '2': 'FV=PV×(1+I)^n'}"},  # numbered, not lettered
    ], "cflue")
    assert [reason.split(":")[0] for _, reason in rejects[:2]] == ["choices is not a dict literal"] * 2
    assert rejects[0][1].startswith("choices is not a dict literal: '{' was never closed")
    assert rejects[1][1].startswith("choices is not a dict literal: malformed node or string")
    assert rejects[2:] == [(2, "choices is not a mapping of letters to options"), (3, "option letters AC are not AB"),
                           (5, "option letters 12 are not AB")]
    assert [(item["id"], item["options"], item["answer_index"], item["task_name"], item["second_level"])
            for item in items] == [("x7", ["FV=PV×(1+I×n)", "FV=PV×(1+I)^n"], 1, "证券专项考试", "单项选择题")]


def test_calc_gsm8k_and_number_answers():
    items, rejects = convert([GSM8K, {"question": "q", "answer": "#### 1,234.5", "unit": "10k_yuan", "kind": "npv"},
                              {"question": "q", "answer": "-3.25", "tolerance": 0.01, "task_name": "fx"},
                              {"id": 9, "question": "q", "answer": 7}], "calc")
    assert rejects == []
    assert items[0] == {"id": "0", "question": GSM8K["question"], "answer": 72.0, "unit": "", "tolerance": 0.005,
                        "task_name": "calc"}
    assert [(item["id"], item["answer"], item["unit"], item["tolerance"], item["task_name"]) for item in items[1:]] == [
        ("1", 1234.5, "10k_yuan", 0.005, "npv"), ("2", -3.25, "", 0.01, "fx"), ("9", 7.0, "", 0.005, "calc")]


def test_calc_answers_and_tolerances_that_are_not_numbers():
    long = "The answer depends on the discount rate, which is not given here."
    assert reasons([{"question": "q", "answer": long}, {"question": "q", "answer": 3, "tolerance": "1%"},
                    {"question": "q", "answer": [3]}, {"answer": 3}], "calc") == [
        "answer 'The answer depends on the discount rate,' is not a number",  # the first 40 characters
        "ValueError: could not convert string to float: '1%'",
        "TypeError: float() argument must be a string or a real number, not 'list'",
        "missing field question"]


def test_scenarios_keep_their_fields_and_need_a_prompt():
    items, rejects = convert([{"prompt": "Draft a reply.", "family": "email", "id": 5}, {"family": "email"}],
                             "scenario")
    assert items == [{"prompt": "Draft a reply.", "family": "email", "id": "5"}]
    assert rejects == [(1, "missing field prompt")]
