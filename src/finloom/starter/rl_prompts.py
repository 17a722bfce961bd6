"""Prompts with verifiable answers for online RL (GRPO), written by this project from its knowledge base.

``rl_prompts.jsonl``: each record is a chat prompt (``prompt``: one user message), a ``reference`` reply that
earns 1.0 on every component of ``finloom.grading.rewards.verifiable_rewards``, and the task fields those
rewards read. Three categories:

* ``mcq``: FLAME-Cer-like items (four options A-D; one correct definition, or 2-3 true facts among false
  statements) on training topics, finance and general. The stems are RL templates of their own, never the
  evaluation's, and end with the instruction to reply with the letters only, a format a tiny model can learn;
  ``answer`` holds the letters, ``valid`` the option letters.
* ``calculation``: problems from ``finloom.starter.calc``'s generators, drawn from a random stream of their
  own (no question equals an evaluation question), with calc's unit and rounding instruction and a request
  to end on an answer line; ``expected``, ``unit`` (calc's: ``yuan``, ``10k_yuan``, ``%``, ``ratio``,
  ``units``) and ``tolerance`` are calc's.
* ``constraints``: short questions about finance training topics with 1-3 rule checks (``finloom.checks``:
  a word or character limit, the answer's language, a list, a risk warning); the reference, built from the
  entry's definition and true facts, meets every one.

MCQ and constraints prompts are written about training topics only (never ``heldout_split`` ones), and
``check_heldout`` covers the file: no evaluation prompt occurs in it. Prompts are kept short (MCQ items over
``MCQ_MAX_LENGTH`` are passed over) because a tiny model trains on them with short sequences.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from finloom.checks import check_response
from finloom.starter.calc import KINDS, _show_answer, generate_calc_problems
from finloom.starter.generate import (
    LANGS,
    MCQ_LETTERS,
    MCQ_MULTI_SHARE,
    OTHER_LANG,
    KnowledgeBase,
    Topic,
    Writer,
    _distractor_definitions,
    capitalise,
    stream,
)

# Records per category: MCQ per corpus, the rest finance only; each split evenly between the languages
# (a small knowledge base gives fewer, one per topic and language at most).
MCQ_COUNTS = {"finance": 160, "general": 40}
CALC_PER_KIND = 6  # x 17 kinds in finloom.starter.calc
CONSTRAINT_COUNT = 200
# Longest MCQ prompt kept: words (English) or non-space characters (Chinese).
MCQ_MAX_LENGTH = {"en": 120, "zh": 250}
# How many rule checks a constraints prompt carries, and how often a language check asks for the other language.
CHECK_COUNT_WEIGHTS = {1: 0.4, 2: 0.4, 3: 0.2}
CROSS_LANGUAGE_SHARE = 0.3

MCQ_STEMS = {
    "en": {
        "single": ["Which option gives the correct definition of {term}?", "{Term}: which option defines it correctly?",
                   "Pick the option that correctly defines {term}."],
        "multi": ["Which statements about {term} are true? More than one may be.",
                  "Select every true statement about {term} (there may be several).",
                  "{Term}: which of these statements are correct? Choose all that apply."],
    },
    "zh": {
        "single": ["哪一项是{term}的正确定义？", "请选出正确定义{term}的一项。", "{term}的正确定义是哪一项？"],
        "multi": ["关于{term}，哪些说法是正确的？可能不止一项。", "请选出所有关于{term}的正确表述（可多选）。",
                  "{term}：以下哪些表述正确？选出全部正确项。"],
    },
}
MCQ_REPLY = {
    "en": {"single": "Reply with the letter only.", "multi": "Reply with the letters only, e.g. AC."},
    "zh": {"single": "只回答选项字母。", "multi": "只回答选项字母，如AC。"},
}
CALC_REPLY = {"en": ' End your reply with a line "Answer: <number>".', "zh": "请在最后一行写出“答案：数值”。"}
CALC_ANSWER_LINE = {"en": "\nAnswer: {answer}", "zh": "\n答案：{answer}"}

QUESTIONS = {
    "en": ["What is {term}?", "Explain {term} briefly.", "Describe {term} for a new client.",
           "What should a customer know about {term}?", "Give a short explanation of {term}."],
    "zh": ["什么是{term}？", "请简要解释{term}。", "请向新客户介绍一下{term}。", "客户需要了解{term}的哪些要点？", "请简单说明{term}。"],
}
# Constraint clauses by prompt language; the length clause also by the answer's language (what it counts).
CLAUSES = {
    "en": {"language": {"en": " Answer in English.", "zh": " Answer in Chinese."},
           "length": {"en": " Use at most {n} words.", "zh": " Use at most {n} Chinese characters."},
           "list": " Use a numbered list.", "risk": " Include a risk warning."},
    "zh": {"language": {"en": "请用英文回答。", "zh": "请用中文回答。"},
           "length": {"en": "回答不超过{n}个英文单词。", "zh": "回答不超过{n}字。"},
           "list": "请分点作答。", "risk": "请附上风险提示。"},
}
RISK_WARNINGS = {
    "en": ["Investing involves risk; this is not investment advice.", "Risk warning: past performance does not guarantee "
           "future results.", "Please note that investing involves risk and you may lose money."],
    "zh": ["投资有风险，以上内容不构成投资建议。", "风险提示：市场有风险，投资需谨慎。", "请注意风险，以上内容仅供参考。"],
}
CHECK_TYPES = {"language": "language", "list": "has_list", "risk": "risk_disclaimer"}
# Domains whose questions a client-facing answer may close with a risk warning (not tax or accounting rules).
RISK_WARNING_DOMAINS = ("banking", "insurance", "securities", "funds", "futures", "risk")


def text_length(text: str, lang: str) -> int:
    """Words for English, non-space characters for Chinese: what ``max_words`` / ``max_chars`` count."""
    return len(text.split()) if lang == "en" else len(re.sub(r"\s", "", text))


def _pairs(rng: random.Random, topics: Sequence[Topic]) -> list[tuple[Topic, str]]:
    """Candidate (topic, language) pairs: per language, the topics in a shuffled order."""
    pairs = []
    for lang in LANGS:
        order = list(topics)
        rng.shuffle(order)
        pairs.append([(topic, lang) for topic in order])
    return [pair for lang_pairs in pairs for pair in lang_pairs]


def _per_language(candidates: list[tuple[Topic, str]], count: int, make) -> list[dict]:
    """The first ``count // 2`` records per language that ``make(topic, lang)`` accepts (None: passed over)."""
    records, taken = [], {lang: 0 for lang in LANGS}
    for topic, lang in candidates:
        if taken[lang] >= count // 2:
            continue
        record = make(topic, lang)
        if record is not None:
            records.append(record)
            taken[lang] += 1
    return records


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


def rl_mcq_item(writer: Writer, topic: Topic, topics: Sequence[Topic]) -> dict:
    """One item in the evaluation's option layout with an RL stem and a letters-only reply instruction."""
    rng, lang = writer.rng, writer.lang
    block = topic.blocks[lang]
    words = writer.phrasing(topic)
    if rng.random() < MCQ_MULTI_SHARE:
        kind = "multi"
        correct_count = rng.choice([n for n in (2, 3) if n <= len(block.facts) and 4 - n <= len(block.false)])
        options = [(s, True) for s in rng.sample(block.facts, correct_count)]
        options += [(s, False) for s in rng.sample(block.false, 4 - correct_count)]
    else:
        kind = "single"
        options = [(block.definition, True)] + [(d, False) for d in _distractor_definitions(rng, topic, topics, lang)]
    stem = capitalise(rng.choice(MCQ_STEMS[lang][kind]).format(term=words.term_mid, Term=words.term_start))
    rng.shuffle(options)
    lines = [f"{letter}. {text}" for letter, (text, _) in zip(MCQ_LETTERS, options)]
    answer = "".join(letter for letter, (_, correct) in zip(MCQ_LETTERS, options) if correct)
    content = "\n".join([stem, *lines, MCQ_REPLY[lang][kind]])
    return {"category": "mcq", "lang": lang, "topic": topic.id, "prompt": [{"role": "user", "content": content}],
            "reference": answer, "answer": answer, "valid": MCQ_LETTERS}


def build_rl_mcq(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    rng = stream(seed, "rl-mcq")
    records = []
    for corpus, count in MCQ_COUNTS.items():
        topics = kb.training_topics(corpus)

        def make(topic: Topic, lang: str) -> dict | None:
            item = rl_mcq_item(Writer(rng, lang, corpus, proper), topic, topics)
            return item if text_length(item["prompt"][0]["content"], lang) <= MCQ_MAX_LENGTH[lang] else None

        records += _per_language(_pairs(rng, topics), count, make)
    return records


# ---------------------------------------------------------------------------------------------
# Calculations
# ---------------------------------------------------------------------------------------------


def calc_seed(seed: int) -> int:
    """calc's generator takes an integer seed: derived from (seed, stream name) like every other stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/rl-calculation".encode()).digest()[:8], "big")


def build_rl_calculation(seed: int) -> list[dict]:
    """calc's problems from another random stream, less any whose question is an evaluation question."""
    evaluation = {problem["question"] for problem in generate_calc_problems(seed=seed)}
    decimals = {kind.name: kind.decimals for kind in KINDS}
    records = []
    for problem in generate_calc_problems(seed=calc_seed(seed), per_kind=CALC_PER_KIND):
        if problem["question"] in evaluation:
            continue
        lang = problem["lang"]
        answer = _show_answer(problem["answer"], problem["unit"], decimals[problem["kind"]], lang)  # as calc writes it
        records.append({
            "category": "calculation", "lang": lang, "kind": problem["kind"],
            "prompt": [{"role": "user", "content": problem["question"] + CALC_REPLY[lang]}],
            "reference": problem["solution"] + CALC_ANSWER_LINE[lang].format(answer=answer),
            "expected": problem["answer"], "unit": problem["unit"], "tolerance": problem["tolerance"],
        })
    return records


# ---------------------------------------------------------------------------------------------
# Rule-checked constraints
# ---------------------------------------------------------------------------------------------


def _limit(length: int, lang: str) -> int:
    """A round limit 10-19 words (20-29 characters) above the reference's length."""
    step = 10
    return (length // step + 2) * step if lang == "en" else (length // step + 3) * step


def constrained_item(rng: random.Random, topic: Topic, lang: str, proper: frozenset[str]) -> dict | None:
    """A question about ``topic`` with 1-3 constraints, and a reference that meets them (None if it cannot)."""
    count = rng.choices(list(CHECK_COUNT_WEIGHTS), weights=list(CHECK_COUNT_WEIGHTS.values()))[0]
    kinds = rng.sample(["language", "length", "list"] + (["risk"] if topic.group in RISK_WARNING_DOMAINS else []), count)
    answer_lang = OTHER_LANG[lang] if "language" in kinds and rng.random() < CROSS_LANGUAGE_SHARE else lang
    asker, writer = Writer(rng, lang, "finance", proper), Writer(rng, answer_lang, "finance", proper)
    facts = writer.facts(topic, rng.randint(1, 2))
    risk = rng.choice(RISK_WARNINGS[answer_lang]) if "risk" in kinds else ""
    if "list" in kinds:
        reference = "\n".join(f"{i}. {text}" for i, text in enumerate([writer.define(topic), *facts], 1))
        reference += f"\n{risk}" if risk else ""
    else:
        reference = writer.sentences([writer.define(topic), *facts, risk])
    checks, clauses = [], []
    for kind in kinds:
        if kind == "length":
            limit = _limit(text_length(reference, answer_lang), answer_lang)
            checks.append({"type": "max_words" if answer_lang == "en" else "max_chars", "value": limit})
            clauses.append(CLAUSES[lang]["length"][answer_lang].format(n=limit))
        elif kind == "language":
            checks.append({"type": "language", "value": answer_lang})
            clauses.append(CLAUSES[lang]["language"][answer_lang])
        else:
            checks.append({"type": CHECK_TYPES[kind]})
            clauses.append(CLAUSES[lang][kind])
    if not all(result.passed for result in check_response(reference, checks)):
        return None  # e.g. a language identifier reading a short, name-heavy answer as another language
    question = capitalise(rng.choice(QUESTIONS[lang]).format(term=asker.phrasing(topic).term_mid))
    return {"category": "constraints", "lang": lang, "topic": topic.id,
            "prompt": [{"role": "user", "content": question + "".join(clauses)}], "reference": reference, "checks": checks}


def build_rl_constraints(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    rng = stream(seed, "rl-constraints")
    topics = kb.training_topics("finance")
    return _per_language(_pairs(rng, topics), CONSTRAINT_COUNT,
                         lambda topic, lang: constrained_item(rng, topic, lang, proper))


# ---------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------


def build_rl_prompts(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    """MCQ, calculation and constraints records, each category shuffled (any prefix is a fair sample), with ids."""
    records = []
    for category, items in (("mcq", build_rl_mcq(kb, seed, proper)), ("calculation", build_rl_calculation(seed)),
                            ("constraints", build_rl_constraints(kb, seed, proper))):
        stream(seed, f"rl-{category}-order").shuffle(items)
        for index, item in enumerate(items):
            item["id"] = f"rl-{category}-{index:04d}"
        records += items
    return records
