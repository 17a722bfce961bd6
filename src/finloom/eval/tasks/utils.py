"""Document functions of finloom's lm-eval task templates; they read the canonical records of
``finloom.eval.layouts`` and score with ``finloom.grading.answers`` (lm-eval imports this file by path)."""

import re

from finloom.grading.answers import answer_value, extract_letters, numbers_match

_CJK = re.compile(r"[\u4e00-\u9fff]")


def single_answer(dataset):
    return dataset.filter(lambda doc: not doc["multi"])


def multi_answer(dataset):
    return dataset.filter(lambda doc: doc["multi"])


def listing(doc) -> str:
    return "\n".join(f"{letter}. {option}" for letter, option in zip(doc["letters"], doc["options"]))


def cloze_text(doc) -> str:
    return doc["question"]


def cloze_choices(doc) -> list[str]:
    return list(doc["options"])


def letters_text(doc) -> str:
    return f"{doc['question']}\n{listing(doc)}\nAnswer:"


def letters_choices(doc) -> list[str]:
    return list(doc["letters"])


def subsets_choices(doc) -> list[str]:
    return list(doc["subsets"])


def target(doc) -> int:
    return doc["answer_index"]


def generate_text(doc) -> str:
    chinese = bool(_CJK.search(doc["question"]))
    if doc["multi"]:
        instruction = ("以下是多项选择题，可能有多个正确答案。请在第一行以“答案：”开头给出所有正确选项的字母。" if chinese else
                       "The following question may have several correct options. Start your reply with 'Answer:' "
                       "followed by the letters of every correct option.")
    else:
        instruction = ("以下是单项选择题。请在第一行以“答案：”开头给出正确选项的字母。" if chinese else
                       "The following question has one correct option. Start your reply with 'Answer:' followed by "
                       "its letter.")
    return f"{instruction}\n\n{doc['question']}\n{listing(doc)}"


def generate_results(doc, results) -> dict:
    letters = extract_letters(results[0], "".join(doc["letters"]))
    return {"acc": float(letters == doc["answer"]), "parsed": float(letters is not None)}


def calc_text(doc) -> str:
    chinese = bool(_CJK.search(doc["question"]))
    suffix = "请给出计算过程，最后一行以“答案：”开头给出数值。" if chinese else \
        "Show your working, then give the final number on a last line starting with 'Answer:'."
    return f"{doc['question']}\n{suffix}"


def calc_results(doc, results) -> dict:
    value = answer_value(results[0], doc["unit"])
    return {"acc": float(numbers_match(value, doc["answer"], doc["tolerance"])), "parsed": float(value is not None)}


def open_text(doc) -> str:
    return doc["prompt"]


def open_results(doc, results) -> dict:
    return {"responded": float(bool(results[0].strip()))}
