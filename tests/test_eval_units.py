"""lm-eval task document functions (``finloom/eval/tasks/utils.py``) on hand-built canonical records: the
prompts they write and the per-document ``acc`` / ``parsed`` they score."""

from __future__ import annotations

import pytest

from finloom.eval.tasks import utils

SINGLE = {"question": "Which is a bond?", "options": ["Stock", "Treasury note", "Option", "Future", "Swap"],
          "letters": ["A", "B", "C", "D", "E"], "answer": "B", "multi": False, "answer_index": 1,
          "subsets": ["AB", "AC"]}
MULTI_ZH = {"question": "下列属于资产的有（ ）。", "options": ["应收账款", "存货", "应付账款"], "letters": ["A", "B", "C"],
            "answer": "AB", "multi": True, "answer_index": 0, "subsets": ["AB", "AC", "BC", "ABC"]}


class Docs(list):
    """The one part of a ``datasets.Dataset`` the split functions use."""

    def filter(self, keep):
        return Docs(doc for doc in self if keep(doc))


def test_split_functions_keep_single_or_multi_answer_documents():
    docs = Docs([SINGLE, MULTI_ZH])
    assert utils.single_answer(docs) == [SINGLE] and utils.multi_answer(docs) == [MULTI_ZH]


def test_cloze_letters_and_subset_documents():
    assert utils.cloze_text(SINGLE) == "Which is a bond?"
    assert utils.cloze_choices(SINGLE) == ["Stock", "Treasury note", "Option", "Future", "Swap"]
    assert utils.letters_choices(MULTI_ZH) == ["A", "B", "C"]
    assert utils.subsets_choices(MULTI_ZH) == ["AB", "AC", "BC", "ABC"]
    assert utils.target(SINGLE) == 1
    assert utils.letters_text(MULTI_ZH) == "下列属于资产的有（ ）。\nA. 应收账款\nB. 存货\nC. 应付账款\nAnswer:"


@pytest.mark.parametrize(("question", "multi", "instruction"), [
    ("Which is a bond?", False, "The following question has one correct option. Start your reply with 'Answer:' "
                                "followed by its letter."),
    ("Which is a bond?", True, "The following question may have several correct options. Start your reply with "
                               "'Answer:' followed by the letters of every correct option."),
    ("哪一项是债券?", False, "以下是单项选择题。请在第一行以“答案：”开头给出正确选项的字母。"),
    ("哪一项是债券?", True, "以下是多项选择题，可能有多个正确答案。请在第一行以“答案：”开头给出所有正确选项的字母。"),
])
def test_generation_prompt_is_in_the_question_language_and_answer_kind(question, multi, instruction):
    doc = {"question": question, "options": ["x", "y"], "letters": ["A", "B"], "multi": multi}
    assert utils.generate_text(doc) == f"{instruction}\n\n{question}\nA. x\nB. y"


@pytest.mark.parametrize(("doc", "reply", "acc", "parsed"), [
    (SINGLE, "Answer: B", 1.0, 1.0),
    (SINGLE, "Answer: E", 0.0, 1.0),        # E is one of this question's five letters: read, and wrong
    (SINGLE, "I cannot tell.", 0.0, 0.0),
    (MULTI_ZH, "答案：BA", 1.0, 1.0),
    (MULTI_ZH, "答案：A", 0.0, 1.0),         # a subset of a multi-answer key is wrong
    (MULTI_ZH, "答案：D", 0.0, 0.0),         # D is not an option of a three-option question
])
def test_generated_letters_score_exact_set_match(doc, reply, acc, parsed):
    assert utils.generate_results(doc, [reply]) == {"acc": acc, "parsed": parsed}


@pytest.mark.parametrize(("question", "suffix"), [
    ("What is 2+2?", "Show your working, then give the final number on a last line starting with 'Answer:'."),
    ("二加二等于几？", "请给出计算过程，最后一行以“答案：”开头给出数值。"),
])
def test_calculation_prompt_is_in_the_question_language(question, suffix):
    assert utils.calc_text({"question": question}) == f"{question}\n{suffix}"


@pytest.mark.parametrize(("reply", "unit", "tolerance", "acc", "parsed"), [
    ("答案：12.68万元", "10k_yuan", 0.005, 1.0, 1.0),
    ("Answer: 126,800 yuan", "10k_yuan", 0.005, 1.0, 1.0),   # converted into the answer's unit
    ("Answer: 126,800 yuan", "", 0.005, 0.0, 1.0),           # no unit: compared in yuan
    ("Answer: 12.9", "10k_yuan", 0.005, 0.0, 1.0),           # 1.7% off
    ("Answer: 12.9", "10k_yuan", 0.02, 1.0, 1.0),            # within the item's own tolerance
    ("no number here", "10k_yuan", 0.005, 0.0, 0.0),
])
def test_calculation_scores_in_the_answer_unit_within_the_item_tolerance(reply, unit, tolerance, acc, parsed):
    doc = {"question": "q", "answer": 12.68, "unit": unit, "tolerance": tolerance}
    assert utils.calc_results(doc, [reply]) == {"acc": acc, "parsed": parsed}


@pytest.mark.parametrize(("reply", "responded"), [("A plan.", 1.0), (" \n\t", 0.0), ("", 0.0)])
def test_open_generation_counts_a_non_blank_reply(reply, responded):
    assert utils.open_results({"prompt": "p"}, [reply]) == {"responded": responded}


def test_open_generation_prompt_is_the_record_prompt():
    assert utils.open_text({"prompt": "Summarise the meeting."}) == "Summarise the meeting."
