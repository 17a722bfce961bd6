"""Generate finloom's bundled starter data from the hand-written knowledge base.

Why generated rather than collected: the quickstart has to run offline, under the project's own
license, and every later stage (cleaning, CPT, SFT, reward model, DPO, evaluation) needs data with
*known* properties. So every file here is rendered by this module from ``starter/kb/*.json``
(definitions, true facts, plausible false statements) and from ``starter/calc.py``; nothing is
copied from third-party datasets. ``python -m finloom.starter.generate [OUT_DIR]`` rewrites the
files; the same knowledge base and seed always give byte-identical output.

What the stages downstream rely on:

* The corpora hold only true material (definitions and facts, never the ``false`` statements), and
  carry planted exact duplicates, near-duplicates, spam pages and PII, each marked in the record
  (``planted``, ``dup_of``, ``pii``) so the cleaning stage can be scored against ground truth.
* No evaluation prompt occurs in any training file; ``check_heldout`` raises if one does.
* Held-out perplexity documents and classifier label texts are drawn separately and never equal a
  corpus document.

Randomness: one ``random.Random`` per output stream, seeded from ``(seed, stream name)``, so
changing how one file is drawn does not reshuffle the others.
"""

from __future__ import annotations

import datetime
import argparse
import hashlib
import json
import random
import re
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from finloom.files import atomic_write_text
from finloom.starter.calc import generate_calc_problems
from finloom.starter.kb_schema import KB_DIR, LangBlock, ScenarioEntry, load_kb

DATA_DIR = Path(__file__).parent / "data"
LANGS = ("en", "zh")
OTHER_LANG = {"en": "zh", "zh": "en"}
SENTENCE_JOIN = {"en": " ", "zh": ""}

# Sizes of what is drawn. Clean corpus documents are set so that each corpus passes 400,000
# characters on the full knowledge base; the planted shares are fractions of the final corpus.
CLEAN_DOCS_PER_CORPUS = 360
PLANTED_SHARES = {"exact_dup": 0.04, "near_dup": 0.04, "spam": 0.03, "pii": 0.05}
DOC_KIND_SHARES = {"explainer": 0.25, "news": 0.2, "report": 0.15, "qa": 0.15, "story": 0.15, "glossary": 0.1}
TOPICS_PER_DOC = {"explainer": (3, 6), "news": (2, 4), "report": (2, 3), "qa": (4, 6), "story": (2, 3), "glossary": (4, 8)}
HELDOUT_DOCS_PER_CORPUS = 150  # >= 50k tokens each with the quickstart tokenizer, for a 2% perplexity comparison
HELDOUT_TOPIC_EVERY = 5
SFT_SHAPE_SHARES = {"define": 0.3, "facts": 0.15, "compare": 0.15, "multi": 0.4}
SFT_SYSTEM_SHARE = 0.2
PREFERENCES = {"finance": 240, "general": 60}
PREFERENCE_SCORED_SHARE = 0.4
# Absolute quality scores per defect of the rejected answer; chosen answers score 0.8-1.0.
DEFECT_SCORES = {"false_fact": (0.1, 0.3), "vague": (0.25, 0.4), "off_topic": (0.0, 0.15), "wrong_language": (0.2, 0.35)}
DEFECT_SHARES = {"false_fact": 0.35, "vague": 0.2, "off_topic": 0.25, "wrong_language": 0.2}
MCQ_MULTI_SHARE = 0.3
MCQ_LETTERS = "ABCD"
QUALITY_LABELS = {"good": 130, "spam": 70, "garbled": 60}
# Short texts per finance domain / general category, at most LABEL_TEXTS_PER_TOPIC per topic in it.
DOMAIN_LABELS_PER_GROUP = {"finance": 24, "general": 11}
LABEL_TEXTS_PER_TOPIC = 3
LABEL_DOC_KINDS = ("explainer", "news", "report", "qa", "story")

CORPUS_SOURCE = {"finance": "starter-finance", "general": "starter-general"}
CORPUS_PREFIX = {"finance": "fin", "general": "gen"}

# ---------------------------------------------------------------------------------------------
# Checksums: planted identifiers must be valid, or a checksum-aware PII detector would rightly
# ignore them and the cleaning benchmark would measure nothing.
# ---------------------------------------------------------------------------------------------

CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def luhn_check_digit(payload: str) -> str:
    """The digit that, appended to ``payload``, makes a number pass the Luhn test (bank cards)."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:  # these digits sit at odd positions once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str(-total % 10)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits: the two digits that make the rearranged IBAN equal 1 mod 97."""
    rearranged = bban + country + "00"
    number = int("".join(str(int(char, 36)) for char in rearranged))
    return f"{98 - number % 97:02d}"


def cn_id_check_char(body: str) -> str:
    """ISO 7064 MOD 11-2 check character of an 18-character Chinese resident ID (from 17 digits)."""
    total = sum(int(digit) * weight for digit, weight in zip(body, CN_ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


# ---------------------------------------------------------------------------------------------
# Knowledge base
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Topic:
    """A finance or general entry seen uniformly: ``group`` is its domain or its category."""

    id: str
    group: str
    certification: str | None
    blocks: dict[str, LangBlock]


@dataclass(frozen=True)
class KnowledgeBase:
    finance: list[Topic]
    general: list[Topic]
    scenarios: list[ScenarioEntry]

    def topics(self, corpus: str) -> list[Topic]:
        return self.finance if corpus == "finance" else self.general

    def training_topics(self, corpus: str) -> list[Topic]:
        """The topics training text (corpora, SFT, preferences) is written about."""
        heldout = {topic.id for topic in self.heldout_topics(corpus)}
        return [topic for topic in self.topics(corpus) if topic.id not in heldout]

    def heldout_topics(self, corpus: str) -> list[Topic]:
        """The topics only held-out text is written about, so that no training sentence is a held-out one."""
        return heldout_split(self.topics(corpus))


def heldout_split(topics: list[Topic]) -> list[Topic]:
    """About one topic in five, chosen by its id: held-out text measures a model on text it has never seen, and
    documents written from the same entries with the same phrasings share long spans (53% of the general
    held-out text's 16-token spans did, when both were written about every topic). A small knowledge base
    still gets one held-out topic and keeps at least one to train on, so neither side's deck is empty."""
    if len(topics) < 2:
        raise ValueError(f"a corpus needs at least 2 topics to hold one out; this knowledge base has {len(topics)}")
    ranked = sorted(topics, key=_topic_hash)
    chosen = [topic for topic in ranked if _topic_hash(topic) % HELDOUT_TOPIC_EVERY == 0]
    chosen = chosen[: len(topics) - 1] or ranked[:1]
    ids = {topic.id for topic in chosen}
    return [topic for topic in topics if topic.id in ids]


def _topic_hash(topic: Topic) -> int:
    return int(hashlib.sha256(topic.id.encode()).hexdigest(), 16)


def _load_entries(kb_dir: Path, kind: str) -> list:
    """Validate every ``<kind>*.json`` in ``kb_dir``; sorted by id so file order cannot matter."""
    entries = load_kb(kind, kb_dir)
    if not entries:
        raise ValueError(f"no {kind}*.json entries in {kb_dir}")
    return sorted(entries, key=lambda entry: entry.id)


def load_knowledge_base(kb_dir: Path = KB_DIR) -> KnowledgeBase:
    finance = [Topic(e.id, e.domain, e.certification, {"en": e.en, "zh": e.zh}) for e in _load_entries(kb_dir, "finance")]
    general = [Topic(e.id, e.category, None, {"en": e.en, "zh": e.zh}) for e in _load_entries(kb_dir, "general")]
    return KnowledgeBase(finance, general, _load_entries(kb_dir, "scenarios"))


# ---------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------

EN_ARTICLES = {"A", "An", "The"}
# A definition opening with a clause ("After a fund is established, ...") is no noun phrase.
EN_CLAUSE_OPENERS = {"After", "Before", "When", "Whenever", "Where", "While", "If", "Once", "Although", "Because", "Unless", "As"}
_SIMPLE_CAPITALISED = re.compile(r"^[A-Z][a-z]+(?:-[a-z]+)*$")
_CAPITALISED_MID_SENTENCE = re.compile(r"(?<=[a-z0-9,;] )([A-Z][a-z]+)")
_LOWER_WORD = re.compile(r"\b[a-z]{2,}\b")
_EN_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ZH_SENTENCE_END = re.compile(r"(?<=[。！？])")


def proper_words(topics: Sequence[Topic]) -> frozenset[str]:
    """Words the knowledge base capitalises mid-sentence and never writes in lower case (names
    such as 'Basel' or 'Chinese', but not 'Insurance' from 'Insurance Law', which also occurs as
    'insurance'). English terms and definitions are lower-cased when they move into the middle of
    a sentence; this set keeps 'Buddhism' or 'Chinese ...' from becoming 'buddhism' or 'chinese'.
    """
    capitalised: set[str] = set()
    lower: set[str] = set()
    for topic in topics:
        block = topic.blocks["en"]
        for text in (block.definition, *block.facts, *block.false):
            capitalised.update(_CAPITALISED_MID_SENTENCE.findall(text))
            lower.update(_LOWER_WORD.findall(text))
    return frozenset(word for word in capitalised if word.lower() not in lower)


@dataclass(frozen=True)
class Phrasing:
    """How one language block reads in running text.

    ``term_start``/``term_mid`` carry the article the knowledge base itself uses with the term
    ("An initial public offering", "the boiling point"); ``bare`` is the term without it, cased for
    mid-sentence ("the term bare refers to ..."). ``definition_body`` is the definition as a
    predicate ("a loan on which ..."), or None where its first word must keep its capital.
    """

    term_start: str
    term_mid: str
    bare: str
    definition: str
    definition_body: str | None


_FOLLOWS_NOUN_PHRASE = (r"(?=\s(?:of|is|are|was|were|in|on|at|to|for|and|or|can|may|must|has|have|that|which|with|by"
                        r"|as|from|will|would|should|does|do)\b|[.,;:!?)]|$)")


def _lowerable(word: str, proper: frozenset[str]) -> bool:
    return bool(_SIMPLE_CAPITALISED.match(word)) and word.split("-")[0] not in proper


_DETERMINERS = {"its", "their", "this", "that", "these", "those", "each", "every", "any", "no", "our", "your", "his", "her",
                "another", "such"}


def _article(bare: str, block: LangBlock) -> str:
    """The article the block's own sentences mostly put before the term ('an initial public
    offering', 'the boiling point'), or '' where they mostly use it bare ('net interest margin')."""
    term = re.compile(rf"\b{re.escape(bare)}{_FOLLOWS_NOUN_PHRASE}", re.IGNORECASE)
    articles, bare_uses = [], 0
    for text in (block.definition, *block.facts, *block.false):
        for match in term.finditer(text):
            before = re.search(r"(\w+)\s+$", text[:match.start()])
            word = before.group(1).lower() if before else ""
            if word in ("a", "an", "the"):
                articles.append(word)
            elif word not in _DETERMINERS:
                bare_uses += 1
    if len(articles) <= bare_uses:
        return ""
    indefinite = [article for article in articles if article != "the"]
    return indefinite[0] if indefinite else "the"


def phrase(block: LangBlock, lang: str, proper: frozenset[str]) -> Phrasing:
    """Decide once per block how its term and definition fit into template sentences."""
    if lang == "zh":
        body = re.sub(r"^(是指|指的是|是|指)", "", block.definition)
        return Phrasing(block.term, block.term, block.term, block.definition, body)
    words = block.term.split()
    later_capitalised = any(word[0].isupper() and not word.isupper() for word in words[1:])  # a name, not an acronym
    bare = block.term
    if not later_capitalised and _lowerable(words[0], proper):
        bare = block.term[0].lower() + block.term[1:]
    article = _article(bare, block)
    term_mid = f"{article} {bare}" if article else bare
    first = block.definition.split()[0]
    body = None
    if first in EN_ARTICLES or (_lowerable(first, proper) and first not in EN_CLAUSE_OPENERS):
        body = block.definition[0].lower() + block.definition[1:]
    return Phrasing(capitalise(term_mid), term_mid, bare, block.definition, body)


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def join_items(items: Sequence[str], lang: str) -> str:
    """'a, b and c' / 'a、b和c'."""
    if len(items) == 1:
        return items[0]
    if lang == "zh":
        return "、".join(items[:-1]) + "和" + items[-1]
    return ", ".join(items[:-1]) + " and " + items[-1]


def split_sentences(paragraph: str, lang: str) -> list[str]:
    pattern = _ZH_SENTENCE_END if lang == "zh" else _EN_SENTENCE_END
    return [s for s in pattern.split(paragraph) if s]


# ---------------------------------------------------------------------------------------------
# Template tables. Each slot lists alternative phrasings; ``Writer.pick`` draws one. Fields:
# {Term}/{term} (sentence start / mid-sentence, with article), {bare} (no article), {definition},
# {body} (definition as predicate), {group}/{Group}, and slot-specific names. A new phrasing is a
# new list item, never new code.
# ---------------------------------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "en": {
        "define_predicate": [
            "{Term} is {body}", "{Term} can be described as {body}", "In simple terms, {term} is {body}",
            "The term {bare} refers to {body}", "{Term} refers to {body}",
        ],
        "define_verbal": ["{Term} means {body}", "The term {bare} refers to {body}", "{Term} refers to {body}"],
        "define_colon": ["{Term}: {definition}", "{Term} \u2014 {definition}"],
        "explainer_title": [
            "{Group}: {n} concepts explained", "A short guide to {terms}", "Understanding {group}: {first} and related ideas",
            "{n} ideas from {group} worth knowing", "Key concepts in {group}, explained simply",
        ],
        "explainer_intro": [
            "This article introduces {n} ideas from {group} that often come up together: {terms}.",
            "People new to {group} regularly ask about {terms}. Below, each of them is explained in turn.",
            "Anyone who studies or works in {group} will meet the following concepts sooner or later: {terms}. This guide takes them one at a time.",
            "The concepts below are basic building blocks of {group}. We look at {terms}, with a short definition and a few facts for each.",
        ],
        "explainer_bridge": [
            "A few points are worth remembering.", "Some further facts help put this in context.",
            "Several details are worth adding.", "Here is what else is useful to know.",
        ],
        "explainer_outro": [
            "Taken together, these concepts give a solid footing for further study of {group}.",
            "Each of these ideas deserves a closer look, but the summaries above cover the essentials.",
            "Once {first} and the other concepts above are clear, much of {group} becomes easier to follow.",
            "Readers who want to go further can use these definitions as a starting point.",
        ],
        "news_headline": [
            "{institution} publishes guide to {first}", "{Audience} urged to understand {terms}",
            "New briefing from {institution} explains {first}", "{institution} launches public series on {group}",
        ],
        "news_dateline": ["{city}, {month_name} {day}, {year} \u2014", "{city} ({weekday}, {day} {month_name} {year}) \u2014"],
        "news_lead": [
            "{institution} on {weekday} released a briefing note for {audience} that covers {terms}.",
            "At an event in {city} on {weekday}, {institution} presented a new guide for {audience} covering {terms}.",
            "{institution} has published a plain-language explainer on {terms}, aimed at {audience}.",
        ],
        "news_body": [
            "The note starts from the basics. {define}", "On {term}, the guide is clear. {define}", "{define}",
            "The briefing spells it out. {define}",
        ],
        "news_quote": [
            "{person}, {role} at {institution}, told reporters: \u201c{fact}\u201d",
            "Speaking to reporters, {person}, {role} at {institution}, stressed one point: \u201c{fact}\u201d",
        ],
        "news_close": [
            "The full note is available from the public information desk of {institution}.",
            "{institution} said it plans further briefings later in the year.",
            "Copies of the guide can be requested from {institution} in {city}.",
        ],
        "report_title": ["{company} \u2014 {period} report (excerpt)", "Extract from the {period} report of {company}", "{company}: {period} results summary"],
        "report_table_intro": ["Key figures ({unit} unless stated otherwise):", "Selected financial data ({unit} unless stated otherwise):"],
        "report_header": ["Item | {current} | {prior} | Change"],
        "report_notes_intro": ["Notes to the key figures", "Explanatory notes", "Management commentary"],
        "report_note": [
            "During the period, management paid close attention to {term}. {define}",
            "The board's review also covered {term}. {define}", "{define}",
        ],
        "report_close": [
            "Figures for the comparative period have been restated where necessary. This excerpt does not constitute the full report.",
            "The full report, including the auditor's opinion, is available on the investor relations page of {company}.",
        ],
        "lab_title_sites": ["{institution}: field survey report, {season} {year}", "Expedition notes from {place}, {season} {year}"],
        "lab_title_sessions": ["{institution} study group report \u2014 {group}, {year}", "{Group} reading circle at {institution}: {year} report"],
        "lab_table_intro": ["Summary of the work carried out:", "The table below summarises the activity."],
        "lab_header_sites": ["Site | Days | Samples | Mean temperature (\u00b0C)"],
        "lab_header_sessions": ["Session | Date | Participants | Hours"],
        "lab_notes_intro": ["Background notes prepared for participants", "Reading notes", "Briefing material"],
        "lab_note": ["Before starting, the team reviewed {term}. {define}", "Participants also discussed {term}. {define}", "{define}"],
        "lab_close": [
            "The group will meet again next {season} to continue the work.",
            "Raw records are kept by {institution} and are available to members on request.",
        ],
        "qa_title": ["Frequently asked questions: {group}", "Your questions about {group}, answered", "{Group}: questions and answers"],
        "qa_intro": [
            "Below are answers to questions that readers often send us about {group}.",
            "We collected common questions about {group} and answered them briefly.",
        ],
        "qa_question": [
            "What is {term}?", "What does {term} mean?", "Could you give me a quick definition of {term}?",
            "What should I know about {term}?", "I keep hearing about {term}. What is it?",
        ],
        "qa_pair": ["Q: {question}\nA: {answer}"],
        "story_open": [
            "{name} had just started as a {job} at {institution} when {mentor}, a colleague with many years of experience, offered to explain a few basics over coffee.",
            "On a rainy afternoon in {city}, {name}, a new {job} at {institution}, knocked on {mentor}'s door with a list of questions.",
            "It was {name}'s first week as a {job} at {institution}, and {mentor} had promised to help with the jargon.",
        ],
        "story_ask": [
            "\u201cWhat exactly is {term}?\u201d {name} asked.",
            "\u201cI keep seeing {term} in the files,\u201d said {name}. \u201cWhat does it mean?\u201d",
            "{name} pointed at a line in the handbook. \u201cAnd {term}? What is that?\u201d",
        ],
        "story_answer": [
            "{mentor} smiled and said: \u201c{define} {fact}\u201d", "\u201cGood question,\u201d said {mentor}. \u201c{define} {fact}\u201d",
            "{mentor} thought for a moment. \u201c{define} One more thing: {fact}\u201d",
        ],
        "story_close": [
            "By the end of the afternoon, {name} had filled three pages of notes and felt ready for the week ahead.",
            "{name} thanked {mentor} and went back to work, already a little more confident.",
            "That evening, {name} rewrote the notes neatly, determined to remember every point.",
        ],
        "glossary_title": ["Glossary: {group}", "{Group} glossary", "Key terms in {group}", "A\u2013Z of {group}"],
        "glossary_intro": ["Short definitions of terms used on this site.", "The following definitions are kept deliberately brief."],
        "glossary_line": ["{term}: {definition}", "{term} \u2014 {definition}"],
        "near_dup_tail": [
            "This page was last updated in {month_name} {year}.", "Share this article with a friend.",
            "Thanks for reading.", "Comments are closed for this article.",
        ],
        "pii_notice": [
            "For further details, readers can contact {name} at {email} or on {phone}.",
            "Refunds will be paid into the account with IBAN {iban}; questions can be sent to {email}.",
            "Correction: an earlier version of this page accidentally showed the card number {card} of a reader, {name}. Anyone affected can write to {email}.",
            "Case reference: applicant {name}, SSN {ssn}, contact {email}.",
            "Registration record: {name}, resident ID {cn_id}, mobile {phone}.",
            "To book a place, call {name} on {phone}.",
        ],
        "pii_story": [
            "Before leaving, {name} from the front desk handed over an email address, {email}, and a phone number, {phone}, for any follow-up questions.",
            "On the desk lay a form filled in by {name}, showing the card number {card} and the mobile number {phone}.",
            "A sticky note on the monitor read: \u201c{name}, SSN {ssn}, call back on {phone}.\u201d",
            "The file at the top of the pile belonged to {name}, resident ID {cn_id}, with refunds going to IBAN {iban}.",
        ],
        "sft_ask_define": [
            "What is {term}?", "Explain {term} to a new client.", "Could you briefly explain what {term} means?",
            "I keep hearing about {term}. What does it mean?", "Can you define {term} for me?", "What does {term} refer to?",
        ],
        "sft_answer_define": ["{define} {facts}", "Sure. {define} {facts}", "Happy to explain. {define} {facts}", "{define} A few points are worth knowing. {facts}"],
        "sft_ask_facts": ["List two facts about {term}.", "Give me two key facts about {term}.", "What are two important things to know about {term}?"],
        "sft_answer_facts": ["Here are two facts about {term}:\n1. {fact1}\n2. {fact2}", "Two things worth knowing about {term}:\n- {fact1}\n- {fact2}"],
        "sft_ask_compare": [
            "How does {term} differ from {other}?", "What is the difference between {term} and {other}?",
            "I often confuse {term} with {other}. How are they different?",
        ],
        "sft_answer_compare": ["{define} By contrast: {other_define} {closing}", "{define} {other_define} {closing}"],
        "compare_same_group": ["Both belong to {group}, but they describe different things.", "So although both come from {group}, they are not the same concept."],
        "compare_other_group": ["They come from different areas, {group} and {other_group}, and should not be confused."],
        "sft_ask_more": ["Can you tell me more?", "Anything else I should know?", "Interesting. What else is worth knowing?"],
        "sft_answer_more": ["Yes. {facts}", "A few more points: {facts}", "Certainly. {facts}"],
        "sft_ask_subject": ["Which area does this belong to?", "What field is this part of?"],
        "sft_answer_subject": ["{Term} is usually filed under the subject \u201c{subject}\u201d, within {group}.", "It belongs to {group}; more specifically, to the subject \u201c{subject}\u201d."],
        "sft_ask_summary": ["Can you sum that up in one sentence?", "So, in one sentence?"],
        "sft_answer_summary": ["In one sentence: {define}", "Put briefly: {define}"],
        "vague": [
            "That is a broad question, and the answer really depends on many factors. It is best to look into it further or ask a professional.",
            "{Term} is an important concept that people discuss a lot. There are many aspects to it, and it can mean different things in different situations.",
            "Good question! It's complicated, and there is no simple answer. Different sources describe it differently.",
        ],
        "mcq_single": ["Which of the following best describes {term}?", "Which of the following is the correct definition of {term}?"],
        "mcq_multi": ["Which of the following statements about {term} are correct?", "Which of the following statements about {term} are true? (Select all that apply.)"],
    },
    "zh": {
        "define": ["{term}是指{body}", "所谓{term}，是指{body}", "{term}，指的是{body}", "简单地说，{term}就是{body}"],
        "explainer_title": ["{group}入门：{n}个核心概念", "读懂{group}：从{first}说起", "{group}知识小讲堂：{terms}", "一文了解{group}中的{n}个概念"],
        "explainer_intro": [
            "本文介绍{group}领域中经常一起出现的{n}个概念：{terms}。",
            "刚接触{group}的读者常常会问到{terms}。下面逐一加以说明。",
            "无论是学习还是从事{group}相关工作，迟早都会遇到以下概念：{terms}。本文逐个进行讲解。",
        ],
        "explainer_bridge": ["有几点值得注意。", "以下几个事实有助于加深理解。", "此外还需要了解以下内容。"],
        "explainer_outro": [
            "综合来看，这些概念为进一步学习{group}打下了基础。", "以上只是简要介绍，但已涵盖了最核心的内容。",
            "理解了{first}等概念之后，{group}中的许多问题都会更容易把握。",
        ],
        "news_headline": ["{institution}发布{first}知识指南", "{institution}面向{audience}解读{terms}", "{city}举办{group}知识普及活动"],
        "news_dateline": ["本报{city}{year}年{month}月{day}日电", "{city}消息（{year}年{month}月{day}日，{weekday}）"],
        "news_lead": [
            "{institution}{weekday}面向{audience}发布了一份简报，对{terms}进行了解读。",
            "{weekday}，{institution}在{city}举办讲座，向{audience}介绍了{terms}。",
            "{institution}近日发布通俗读本，重点讲解{terms}，主要面向{audience}。",
        ],
        "news_body": ["简报指出，{define}", "读本开宗明义：{define}", "{define}"],
        "news_quote": ["{institution}{role}{person}表示：\u201c{fact}\u201d", "{person}（{institution}{role}）在接受采访时强调：\u201c{fact}\u201d"],
        "news_close": [
            "简报全文可在{institution}官方网站查阅。", "{institution}表示，年内还将举办更多类似活动。",
            "市民可前往{institution}在{city}的服务窗口领取读本。",
        ],
        "report_title": ["{company}{period}报告（摘要）", "{company}{period}业绩摘要"],
        "report_table_intro": ["主要财务数据（除特别注明外，单位：{unit}）：", "主要会计数据和财务指标（单位：{unit}，比率除外）："],
        "report_header": ["项目 | {current} | {prior} | 变动"],
        "report_notes_intro": ["管理层讨论与分析", "重要事项说明", "报表附注摘要"],
        "report_note": ["报告期内，公司持续关注{term}相关事项。{define}", "董事会审阅时亦涉及{term}。{define}", "{define}"],
        "report_close": ["比较期数据已按要求重述。本摘要不构成完整报告。", "完整报告（含审计意见）可在{company}投资者关系网页查阅。"],
        "lab_title_sites": ["{institution}野外考察报告（{year}年{season}）", "{place}考察纪要（{year}年{season}）"],
        "lab_title_sessions": ["{institution}{group}学习小组活动报告（{year}年）", "{institution}{group}读书会{year}年度总结"],
        "lab_table_intro": ["本次工作概况如下：", "下表汇总了活动情况。"],
        "lab_header_sites": ["地点 | 天数 | 样本数 | 平均气温（\u00b0C）"],
        "lab_header_sessions": ["场次 | 日期 | 参加人数 | 时长（小时）"],
        "lab_notes_intro": ["背景资料", "学习笔记", "行前说明"],
        "lab_note": ["出发前，团队复习了{term}的相关知识。{define}", "参加者还讨论了{term}。{define}", "{define}"],
        "lab_close": ["小组计划于明年{season}再次开展活动。", "原始记录由{institution}保存，成员可申请查阅。"],
        "qa_title": ["{group}常见问题解答", "关于{group}，你想知道的都在这里", "{group}问答"],
        "qa_intro": ["以下整理了读者关于{group}的常见问题。", "我们收集了有关{group}的常见疑问，并逐一作答。"],
        "qa_question": ["什么是{term}？", "{term}是什么意思？", "能简单解释一下{term}吗？", "关于{term}，需要了解些什么？", "经常听人提起{term}，它到底指什么？"],
        "qa_pair": ["问：{question}\n答：{answer}"],
        "story_open": [
            "{name}刚到{institution}担任{job}，经验丰富的同事{mentor}提议边喝咖啡边给{name}讲讲基础知识。",
            "一个下雨的午后，{institution}的新{job}{name}带着一串问题来找{mentor}。",
            "这是{name}在{institution}当{job}的第一周，{mentor}答应帮{name}弄懂那些专业术语。",
        ],
        "story_ask": ["\u201c{term}到底是什么？\u201d{name}问道。", "\u201c文件里经常出现{term}，这是什么意思？\u201d{name}问。", "{name}指着手册上的一行字问：\u201c那{term}呢？\u201d"],
        "story_answer": ["{mentor}笑着说：\u201c{define}{fact}\u201d", "\u201c问得好。\u201d{mentor}说，\u201c{define}{fact}\u201d", "{mentor}想了想，说：\u201c{define}另外要记住，{fact}\u201d"],
        "story_close": [
            "一个下午过去，{name}记满了三页笔记，对接下来的工作更有信心了。",
            "{name}向{mentor}道了谢，回到座位上，心里踏实了不少。", "当晚，{name}把笔记重新整理了一遍，决心把每一点都记牢。",
        ],
        "glossary_title": ["{group}术语表", "{group}常用词汇释义", "{group}名词解释"],
        "glossary_intro": ["以下为本站常用术语的简要释义。", "释义力求简明，仅供参考。"],
        "glossary_line": ["{term}：{definition}", "【{term}】{definition}"],
        "near_dup_tail": ["本文最后更新于{year}年{month}月。", "欢迎转发分享。", "感谢阅读。", "本文评论功能已关闭。"],
        "pii_notice": [
            "如需了解详情，请联系{name}，邮箱{email}，电话{phone}。",
            "退款将汇入IBAN为{iban}的账户，如有疑问请发邮件至{email}。",
            "更正：本页早前版本误将读者{name}的银行卡号{card}公开，受影响者请发邮件至{email}。",
            "登记信息：{name}，身份证号{cn_id}，手机{phone}。",
            "报名请致电{name}：{phone}。",
            "申请人{name}，社会安全号码{ssn}，联系邮箱{email}。",
        ],
        "pii_story": [
            "临走前，前台的{name}留下了邮箱{email}和电话{phone}，方便日后联系。",
            "桌上放着一份{name}填写的表格，上面写着银行卡号{card}和手机号{phone}。",
            "显示器上贴着一张便签：\u201c{name}，身份证号{cn_id}，回电{phone}。\u201d",
            "最上面那份档案属于{name}，退款账户的IBAN为{iban}，身份证号为{cn_id}。",
        ],
        "sft_ask_define": ["什么是{term}？", "请向一位新客户解释一下{term}。", "能简单说说{term}是什么意思吗？", "经常听到{term}这个说法，它指什么？", "请给{term}下个定义。"],
        "sft_answer_define": ["{define}{facts}", "好的。{define}{facts}", "很乐意为您解释。{define}{facts}", "{define}有几点值得了解：{facts}"],
        "sft_ask_facts": ["请列举关于{term}的两个事实。", "关于{term}，有哪两点值得了解？", "说说{term}的两个要点。"],
        "sft_answer_facts": ["关于{term}，有以下两点：\n1. {fact1}\n2. {fact2}", "{term}的两个要点：\n- {fact1}\n- {fact2}"],
        "sft_ask_compare": ["{term}和{other}有什么区别？", "{term}与{other}有何不同？", "我经常把{term}和{other}搞混，它们有什么不同？"],
        "sft_answer_compare": ["{define}相比之下，{other_define}{closing}", "{define}{other_define}{closing}"],
        "compare_same_group": ["两者都属于{group}领域，但含义并不相同。", "所以，两者虽然都属于{group}，却是不同的概念。"],
        "compare_other_group": ["两者分属{group}和{other_group}两个领域，不应混淆。"],
        "sft_ask_more": ["能再多讲一些吗？", "还有什么需要注意的吗？", "有意思，还有哪些值得了解的？"],
        "sft_answer_more": ["当然。{facts}", "再补充几点：{facts}", "好的。{facts}"],
        "sft_ask_subject": ["它属于哪个领域？", "这是哪个学科的内容？"],
        "sft_answer_subject": ["{term}通常归入“{subject}”这一科目，属于{group}领域。", "它属于{group}领域，具体来说是“{subject}”方面的内容。"],
        "sft_ask_summary": ["能用一句话概括一下吗？", "那么，一句话怎么说？"],
        "sft_answer_summary": ["一句话概括：{define}", "简单来说：{define}"],
        "vague": [
            "这个问题比较宽泛，答案取决于很多因素，建议您进一步了解或咨询专业人士。",
            "{term}是一个大家经常讨论的重要概念，涉及的方面很多，在不同情况下含义也可能不同。",
            "好问题！这个问题很复杂，没有简单的答案，不同资料的说法也不一样。",
        ],
        "mcq_single": ["下列关于{term}的描述，最准确的是：", "下列选项中，对{term}的定义正确的是："],
        "mcq_multi": ["关于{term}，下列说法正确的有：", "下列关于{term}的表述中，正确的有："],
    },
}

GROUP_NAMES = {
    "en": {
        "banking": "banking", "insurance": "insurance", "securities": "securities", "funds": "investment funds",
        "futures": "futures and derivatives", "accounting": "accounting", "tax": "taxation", "risk": "risk management",
        "regulation": "financial regulation", "science": "science", "history": "history", "geography": "geography",
        "nature": "the natural world", "health": "health", "technology": "technology", "culture": "culture",
        "arts": "the arts", "sports": "sport", "food": "food and cooking", "daily_life": "everyday life",
        "mathematics": "mathematics", "language": "language", "society": "society",
    },
    "zh": {
        "banking": "银行业务", "insurance": "保险", "securities": "证券", "funds": "基金", "futures": "期货与衍生品",
        "accounting": "会计", "tax": "税务", "risk": "风险管理", "regulation": "金融监管", "science": "科学",
        "history": "历史", "geography": "地理", "nature": "自然", "health": "健康", "technology": "科技",
        "culture": "文化", "arts": "艺术", "sports": "体育", "food": "饮食", "daily_life": "日常生活",
        "mathematics": "数学", "language": "语言", "society": "社会",
    },
}

# Invented names: the cast of the generated documents, per corpus and language.
WORLD = {
    "finance": {
        "en": {
            "institution": ["Harbourview Bank", "Northgate Securities", "Meridian Mutual Insurance", "Lakeshore Fund Management",
                            "Crestline Futures", "the Ashford Institute of Finance", "Kestrel Savings Bank", "the Fairmont Investor Forum"],
            "audience": ["retail investors", "small business owners", "first-time borrowers", "new bank employees", "pension savers"],
            "role": ["chief economist", "head of retail banking", "senior analyst", "spokesperson", "director of research"],
            "job": ["trainee analyst", "graduate teller", "junior accountant", "compliance intern", "client adviser"],
        },
        "zh": {
            "institution": ["澄湖银行", "北辰证券", "远山保险", "青禾基金", "溪川期货", "云港金融研究院", "东屿储蓄银行", "星澜投资者服务中心"],
            "audience": ["个人投资者", "小微企业主", "首次贷款的借款人", "银行新员工", "养老储蓄者"],
            "role": ["首席经济学家", "零售业务部负责人", "高级分析师", "新闻发言人", "研究部主任"],
            "job": ["实习分析师", "柜员", "初级会计", "合规实习生", "客户经理"],
        },
    },
    "general": {
        "en": {
            "institution": ["the Riverside Science Museum", "Northfield Public Library", "the Ashcombe Natural History Society",
                            "Westbrook Community College", "the Halden Observatory", "the Marlowe Heritage Trust"],
            "audience": ["students", "teachers", "museum visitors", "local residents", "amateur enthusiasts"],
            "role": ["curator", "senior lecturer", "spokesperson", "programme director", "head of education"],
            "job": ["student volunteer", "trainee teacher", "junior reporter", "museum guide", "library assistant"],
        },
        "zh": {
            "institution": ["澄湖科技馆", "云港市图书馆", "青禾自然博物学会", "溪川社区学院", "东屿天文台", "白鹭湾文化遗产中心"],
            "audience": ["学生", "教师", "博物馆观众", "社区居民", "业余爱好者"],
            "role": ["馆长", "高级讲师", "新闻发言人", "项目主任", "教育部主任"],
            "job": ["学生志愿者", "实习教师", "见习记者", "博物馆讲解员", "图书馆助理"],
        },
    },
}

PLACES = {
    "en": {
        "city": ["Port Aldwin", "Easthaven", "Marlowe Bay", "Kingsferry", "Westmere", "Brackenford", "Calder Point", "Norhaven"],
        "place": ["the Aldwin Hills", "Brackenford Marsh", "the Calder Valley", "Norhaven Sound"],
        "site": ["North ridge", "Lower meadow", "East creek", "Old quarry", "Harbour wall", "Pine hollow"],
        "season": ["spring", "summer", "autumn", "winter"],
        "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "month_name": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                       "October", "November", "December"],
    },
    "zh": {
        "city": ["澄湖市", "云港市", "青禾市", "溪川市", "东屿市", "白鹭湾市", "枫湾市", "星澜市"],
        "place": ["澄湖丘陵", "溪川湿地", "青禾河谷", "东屿海峡"],
        "site": ["北坡", "下草甸", "东溪", "旧采石场", "港口堤岸", "松林谷"],
        "season": ["春季", "夏季", "秋季", "冬季"],
        "weekday": ["周一", "周二", "周三", "周四", "周五", "周六", "周日"],
    },
}

PEOPLE = {
    "en": {
        "first": ["Emma", "Daniel", "Priya", "Tom", "Aisha", "Lucas", "Hannah", "Omar", "Grace", "Ben", "Sofia", "Liam"],
        "last": ["Clarke", "Hughes", "Patel", "Walsh", "Okafor", "Bennett", "Moreno", "Fischer", "Reid", "Lindqvist"],
    },
    # Chinese names with their pinyin, so invented e-mail addresses match the person.
    "zh": {
        "first": [("芳", "fang"), ("伟", "wei"), ("敏", "min"), ("静", "jing"), ("磊", "lei"), ("洋", "yang"), ("婷", "ting"),
                  ("欣然", "xinran"), ("子豪", "zihao"), ("思雨", "siyu"), ("浩然", "haoran"), ("雨桐", "yutong")],
        "last": [("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"), ("赵", "zhao"),
                 ("黄", "huang"), ("周", "zhou"), ("吴", "wu")],
    },
}

# Report tables: (English label, Chinese label, kind, low, high). Amount rows are derived from a
# revenue draw so that profit and assets stay plausible relative to each other.
REPORT_PROFILES = {
    "bank": {
        "companies": {"en": ["Harbourview Bank plc", "Kestrel Savings Bank", "Northmoor Commercial Bank", "Greystone Rural Bank"],
                      "zh": ["澄湖商业银行", "云港农村商业银行", "青禾银行", "东屿城市商业银行"]},
        "revenue": (2_000, 90_000), "margin": (0.25, 0.45), "assets": (35, 60),
        "rows": [("Operating income", "营业收入", "revenue"), ("Net profit", "净利润", "profit"), ("Total assets", "资产总额", "assets"),
                 ("Capital adequacy ratio", "资本充足率", (11.5, 17.5)), ("Non-performing loan ratio", "不良贷款率", (0.7, 2.4)),
                 ("Net interest margin", "净息差", (1.4, 2.8)), ("Return on equity", "加权平均净资产收益率", (6.0, 14.0))],
    },
    "insurer": {
        "companies": {"en": ["Meridian Mutual Insurance", "Bluecliff Life Assurance", "Ironbridge General Insurance"],
                      "zh": ["远山人寿保险", "白鹭财产保险", "星澜保险集团"]},
        "revenue": (1_500, 60_000), "margin": (0.05, 0.15), "assets": (8, 15),
        "rows": [("Insurance revenue", "保险服务收入", "revenue"), ("Net profit", "净利润", "profit"), ("Total assets", "资产总额", "assets"),
                 ("Comprehensive solvency ratio", "综合偿付能力充足率", (150.0, 280.0)), ("Combined ratio", "综合成本率", (92.0, 104.0)),
                 ("Return on equity", "加权平均净资产收益率", (5.0, 15.0))],
    },
    "firm": {
        "companies": {"en": ["Northgate Securities Ltd", "Lakeshore Fund Management", "Crestline Futures Co.", "Ashby & Rowe Holdings"],
                      "zh": ["北辰证券", "青禾基金管理", "溪川期货", "东屿控股"]},
        "revenue": (300, 20_000), "margin": (0.05, 0.2), "assets": (1.5, 4.0),
        "rows": [("Revenue", "营业收入", "revenue"), ("Net profit", "净利润", "profit"), ("Total assets", "资产总额", "assets"),
                 ("Gross margin", "毛利率", (18.0, 45.0)), ("Debt-to-asset ratio", "资产负债率", (30.0, 65.0)),
                 ("Return on equity", "加权平均净资产收益率", (5.0, 18.0))],
    },
}
DOMAIN_PROFILE = {"banking": "bank", "insurance": "insurer"}
REPORT_UNIT = {"en": "CNY million", "zh": "人民币百万元"}

NEAR_DUP_WORD_SWAPS = {
    "en": [("often", "frequently"), ("usually", "typically"), ("important", "significant"), ("because", "since"),
           ("helps", "assists"), ("large", "big"), ("many", "numerous"), ("shows", "indicates"), ("explains", "describes"),
           ("about", "regarding")],
    "zh": [("通常", "一般"), ("可以", "能够"), ("重要", "关键"), ("因此", "所以"), ("但是", "不过"), ("进行", "开展"),
           ("主要", "首要"), ("介绍", "讲解"), ("了解", "知道")],
}
ZH_TYPOS = [("的", "地"), ("在", "再"), ("做", "作"), ("已", "以"), ("像", "象"), ("和", "合")]

SPAM = {
    "en": {
        "cookie": [
            "We use cookies to give you the best experience on our website. By clicking \"Accept all\" you agree to the storage of cookies on your device. [Accept all] [Reject all] [Cookie settings]",
            "This site uses cookies and similar technologies for analytics and advertising. Continue browsing to accept. [OK] [More info]",
        ],
        "nav": ["Home | About us | Products | {kw} | News | Contact | Login | Register", "HOME \u00bb {kw} \u00bb Offers \u00bb Top deals \u00bb Sign up"],
        "win": [
            "CONGRATULATIONS!!! You are today's lucky visitor #{n}! Click here to win a FREE {prize}!!! Offer ends in {m} minutes. CLICK HERE >>>",
            "You have been selected!!! Claim your {prize} now - only {m} left!!! Click here to win, no purchase needed!!!",
        ],
        "seo": ["{kw} best {kw} cheap {kw} {kw} online {kw} near me {kw} {year} top {kw} {kw} deals {kw} free"],
        "footer": ["\u00a9 {year} All rights reserved. Privacy Policy | Terms of Use | Sitemap | Cookie Policy", "Copyright {year}. Powered by SiteBuilder {m}.0"],
        "prize": ["iPhone", "cash prize of $5,000", "luxury cruise", "gift card", "new car"],
    },
    "zh": {
        "cookie": [
            "本网站使用Cookie以提升您的浏览体验。继续浏览即表示您同意我们使用Cookie。【全部接受】【拒绝】【设置】",
            "为了给您提供更好的服务，本站会使用Cookie进行统计分析。点击“同意”继续访问。【同意】【了解更多】",
        ],
        "nav": ["首页 | 关于我们 | 产品中心 | {kw} | 新闻动态 | 联系我们 | 登录 | 注册", "首页 > {kw} > 优惠专区 > 热门推荐 > 立即注册"],
        "win": [
            "恭喜您！！！您是今天第{n}位幸运访客！点击这里立即领取免费{prize}！！！活动仅剩{m}分钟，先到先得>>>",
            "您已被选中！！！马上领取{prize}，仅剩{m}份！！！点击领取，无需任何费用！！！",
        ],
        "seo": ["{kw}，{kw}哪家好，{kw}排名，{kw}官网，最新{kw}，{kw}{year}，{kw}攻略，{kw}免费，{kw}推荐"],
        "footer": ["版权所有 \u00a9 {year} 保留所有权利 | 隐私政策 | 使用条款 | 网站地图", "Copyright {year} 本站由建站宝{m}.0提供技术支持"],
        "prize": ["手机", "五千元现金红包", "豪华游轮旅行", "购物卡", "新能源汽车"],
    },
}
HTML_DEBRIS = ["<div class=\"ad-slot\"></div>", "&nbsp;&nbsp;", "<br/><br/>", "</td></tr><tr><td>", "<!-- tracking pixel -->", "{{ page.title }}"]
MOJIBAKE_EN = ["\u00c3\u00a9", "\u00e2\u20ac\u2122", "\u00c3\u00bc", "\u00e2\u20ac\u0153", "\ufffd"]
NOISE_CHARS = "#@%&*~^|<>{}[]$"


# ---------------------------------------------------------------------------------------------
# Writer: one rng, one language, one corpus
# ---------------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Fills template slots for one language and corpus, drawing every choice from one rng."""

    rng: random.Random
    lang: str
    corpus: str
    proper: frozenset[str] = field(default_factory=frozenset)
    used: dict[str, list[str]] = field(default_factory=dict)

    def pick(self, slot: str, **values: object) -> str:
        """A phrasing for ``slot`` not yet used by this writer while unused ones remain, so one
        document does not repeat the same sentence frame for every topic."""
        used = self.used.setdefault(slot, [])
        fresh = [t for t in TEMPLATES[self.lang][slot] if t not in used]
        if not fresh:
            used.clear()
            fresh = TEMPLATES[self.lang][slot]
        template = self.rng.choice(fresh)
        used.append(template)
        return template.format(**values)

    def world(self, pool: str) -> str:
        return self.rng.choice(WORLD[self.corpus][self.lang][pool])

    def place(self, pool: str) -> str:
        return self.rng.choice(PLACES[self.lang][pool])

    def people(self, count: int) -> list[str]:
        """Invented full names with distinct given and family names."""
        pairs = zip(self.rng.sample(PEOPLE[self.lang]["first"], count), self.rng.sample(PEOPLE[self.lang]["last"], count))
        return [f"{first} {last}" if self.lang == "en" else last[0] + first[0] for first, last in pairs]

    def person(self) -> str:
        return self.people(1)[0]

    def phrasing(self, topic: Topic) -> Phrasing:
        return phrase(topic.blocks[self.lang], self.lang, self.proper)

    def group(self, topic: Topic) -> str:
        return GROUP_NAMES[self.lang][topic.group]

    def define(self, topic: Topic) -> str:
        """One sentence that names the term and gives its definition, in a drawn phrasing."""
        words = self.phrasing(topic)
        fields = {"Term": words.term_start, "term": words.term_mid, "bare": words.bare, "definition": words.definition,
                  "body": words.definition_body}
        if self.lang == "zh":
            return self.pick("define", **fields)
        if words.definition_body is None:
            return self.pick("define_colon", **fields)
        article = words.definition.split()[0] in EN_ARTICLES
        return self.pick("define_predicate" if article else "define_verbal", **fields)

    def facts(self, topic: Topic, count: int) -> list[str]:
        facts = list(topic.blocks[self.lang].facts)
        self.rng.shuffle(facts)
        return facts[:count]

    def sentences(self, sentences: Sequence[str]) -> str:
        return SENTENCE_JOIN[self.lang].join(s for s in sentences if s)

    def date(self) -> dict[str, object]:
        day = datetime.date(self.rng.randint(2020, 2024), self.rng.randint(1, 12), self.rng.randint(1, 28))
        fields: dict[str, object] = {"year": day.year, "month": day.month, "day": day.day,
                                     "weekday": PLACES[self.lang]["weekday"][day.weekday()]}
        if self.lang == "en":
            fields["month_name"] = PLACES["en"]["month_name"][day.month - 1]
        return fields


# ---------------------------------------------------------------------------------------------
# Documents: each builder returns paragraphs (title first) about topics from one group.
# ---------------------------------------------------------------------------------------------


def _topic_fields(writer: Writer, topics: Sequence[Topic]) -> dict[str, object]:
    names = [writer.phrasing(t).term_mid for t in topics]
    group = writer.group(topics[0])
    return {"terms": join_items(names, writer.lang), "first": names[0], "n": len(topics), "group": group, "Group": capitalise(group)}


def _explainer(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    fields = _topic_fields(writer, topics)
    headings = writer.rng.random() < 0.5
    blocks = [writer.pick("explainer_title", **fields), writer.pick("explainer_intro", **fields)]
    for index, topic in enumerate(topics, start=1):
        if headings:
            blocks.append(f"{index}. {topic.blocks[writer.lang].term}")
        bridge = writer.pick("explainer_bridge") if writer.rng.random() < 0.5 else ""
        blocks.append(writer.sentences([writer.define(topic), bridge, *writer.facts(topic, writer.rng.randint(2, 4))]))
    blocks.append(writer.pick("explainer_outro", **fields))
    return blocks


def _news(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    fields = {**_topic_fields(writer, topics), **writer.date(), "city": writer.place("city"),
              "institution": writer.world("institution"), "audience": writer.world("audience")}
    fields["Audience"] = capitalise(str(fields["audience"]))
    separator = " " if writer.lang == "en" else "\u3000"
    blocks = [capitalise(writer.pick("news_headline", **fields)),
              writer.pick("news_dateline", **fields) + separator + capitalise(writer.pick("news_lead", **fields))]
    for topic in topics:
        facts = writer.facts(topic, writer.rng.randint(2, 3))
        words = writer.phrasing(topic)
        blocks.append(writer.sentences([writer.pick("news_body", term=words.term_mid, define=writer.define(topic)), *facts[1:]]))
        blocks.append(writer.pick("news_quote", fact=facts[0], person=writer.person(), role=writer.world("role"),
                                  institution=fields["institution"]))
    blocks.append(capitalise(writer.pick("news_close", **fields)))
    return blocks


def _figure_rows(writer: Writer, profile: dict, quarterly: bool) -> list[str]:
    """Plain-text table rows 'label | current | prior | change' with mutually plausible figures."""
    rng = writer.rng
    revenue = rng.uniform(*profile["revenue"]) / (4 if quarterly else 1)
    amounts = {"revenue": revenue, "profit": revenue * rng.uniform(*profile["margin"]),
               "assets": revenue * rng.uniform(*profile["assets"]) * (4 if quarterly else 1)}
    rows = []
    for label_en, label_zh, kind in profile["rows"]:
        label = label_en if writer.lang == "en" else label_zh
        if isinstance(kind, str):
            current = amounts[kind]
            prior = current / (1 + rng.uniform(-0.08, 0.15))
            rows.append(f"{label} | {current:,.1f} | {prior:,.1f} | {(current / prior - 1) * 100:+.1f}%")
        else:
            current = rng.uniform(*kind)
            prior = current + rng.uniform(-0.05, 0.05) * current
            change = f"{current - prior:+.2f} pp" if writer.lang == "en" else f"{current - prior:+.2f}个百分点"
            rows.append(f"{label} | {current:.2f}% | {prior:.2f}% | {change}")
    return rows


def _period(writer: Writer, quarterly: bool) -> tuple[str, str, str]:
    """(title period, current column, prior column) for an annual or a quarterly report."""
    year = writer.rng.randint(2021, 2024)
    quarter = writer.rng.randint(1, 3)
    if writer.lang == "en":
        if quarterly:
            return f"Q{quarter} {year} quarterly", f"Q{quarter} {year}", f"Q{quarter} {year - 1}"
        return f"{year} annual", f"FY{year}", f"FY{year - 1}"
    if quarterly:
        return f"{year}年第{quarter}季度", f"{year}年Q{quarter}", f"{year - 1}年Q{quarter}"
    return f"{year}年年度", f"{year}年", f"{year - 1}年"


def _report_notes(writer: Writer, topics: Sequence[Topic], slot: str) -> list[str]:
    return [writer.sentences([writer.pick(slot, term=writer.phrasing(t).term_mid, define=writer.define(t)),
                              *writer.facts(t, writer.rng.randint(1, 3))]) for t in topics]


def _report(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    """Finance: a filings-like excerpt; general: a survey or study-group report. Both carry a table."""
    if writer.corpus == "general":
        return _lab_report(writer, topics)
    profile = REPORT_PROFILES[DOMAIN_PROFILE.get(topics[0].group, "firm")]
    quarterly = writer.rng.random() < 0.4
    period, current, prior = _period(writer, quarterly)
    company = writer.rng.choice(profile["companies"][writer.lang])
    table = "\n".join([writer.pick("report_header", current=current, prior=prior), *_figure_rows(writer, profile, quarterly)])
    return [writer.pick("report_title", company=company, period=period),
            writer.pick("report_table_intro", unit=REPORT_UNIT[writer.lang]), table,
            writer.pick("report_notes_intro"), *_report_notes(writer, topics, "report_note"),
            writer.pick("report_close", company=company)]


def _lab_report(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    rng = writer.rng
    fields = {**_topic_fields(writer, topics), **writer.date(), "institution": writer.world("institution"),
              "season": writer.place("season"), "place": writer.place("place")}
    flavour = rng.choice(("sites", "sessions"))
    if flavour == "sites":
        sites = rng.sample(PLACES[writer.lang]["site"], rng.randint(3, 5))
        rows = [f"{site} | {rng.randint(2, 9)} | {rng.randint(12, 240)} | {rng.uniform(-4, 31):.1f}" for site in sites]
    else:
        dates = sorted(datetime.date(int(fields["year"]), rng.randint(1, 12), rng.randint(1, 28)) for _ in range(rng.randint(3, 6)))
        rows = [f"{index} | {day.isoformat()} | {rng.randint(6, 48)} | {rng.choice((1.5, 2, 2.5, 3))}" for index, day in enumerate(dates, start=1)]
    header = writer.pick(f"lab_header_{flavour}")
    return [capitalise(writer.pick(f"lab_title_{flavour}", **fields)), writer.pick("lab_table_intro"), "\n".join([header, *rows]),
            writer.pick("lab_notes_intro"), *_report_notes(writer, topics, "lab_note"), writer.pick("lab_close", **fields)]


def _qa(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    fields = _topic_fields(writer, topics)
    blocks = [writer.pick("qa_title", **fields), writer.pick("qa_intro", **fields)]
    for topic in topics:
        answer = writer.sentences([writer.define(topic), *writer.facts(topic, writer.rng.randint(1, 2))])
        question = writer.pick("qa_question", term=writer.phrasing(topic).term_mid)
        blocks.append(writer.pick("qa_pair", question=capitalise(question), answer=answer))
    return blocks


def _story(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    name, mentor = writer.people(2)
    cast = {"name": name, "mentor": mentor, "job": writer.world("job"), "institution": writer.world("institution"), "city": writer.place("city")}
    blocks = [capitalise(writer.pick("story_open", **cast))]
    for topic in topics:
        term = writer.phrasing(topic).term_mid
        blocks.append(writer.pick("story_ask", term=term, **cast))
        blocks.append(writer.pick("story_answer", define=writer.define(topic), fact=writer.facts(topic, 1)[0], **cast))
    blocks.append(writer.pick("story_close", **cast))
    return blocks


def _glossary(writer: Writer, topics: Sequence[Topic]) -> list[str]:
    fields = _topic_fields(writer, topics)
    line = writer.rng.choice(TEMPLATES[writer.lang]["glossary_line"])
    entries = sorted((t.blocks[writer.lang] for t in topics), key=lambda block: block.term.casefold())
    lines = [line.format(term=block.term, definition=block.definition) for block in entries]
    return [writer.pick("glossary_title", **fields), writer.pick("glossary_intro"), "\n".join(lines)]


DOC_BUILDERS: dict[str, Callable[[Writer, Sequence[Topic]], list[str]]] = {
    "explainer": _explainer, "news": _news, "report": _report, "qa": _qa, "story": _story, "glossary": _glossary,
}


class Deck:
    """Deals the topics of each group in shuffled rounds, so topics are used about equally often
    and two documents rarely share more than one topic (which would blur the near-dup ground truth)."""

    def __init__(self, topics: Sequence[Topic], rng: random.Random):
        self.rng = rng
        self.groups: dict[str, list[Topic]] = {}
        for topic in topics:
            self.groups.setdefault(topic.group, []).append(topic)
        self.piles: dict[str, list[Topic]] = {group: [] for group in self.groups}

    def group(self) -> str:
        """A group drawn in proportion to its number of topics."""
        names = sorted(self.groups)
        return self.rng.choices(names, weights=[len(self.groups[n]) for n in names])[0]

    def deal(self, group: str, count: int) -> list[Topic]:
        count = min(count, len(self.groups[group]))
        hand: list[Topic] = []
        while len(hand) < count:
            pile = self.piles[group]
            if not pile:
                pile.extend(self.groups[group])
                self.rng.shuffle(pile)
            topic = pile.pop()
            if topic not in hand:
                hand.append(topic)
        return hand


def render(blocks: Sequence[str]) -> str:
    return "\n\n".join(block for block in blocks if block)


def draw_unique(taken: set[str], make: Callable[..., str], *args: object, outside: str = "") -> str:
    """Call ``make(*args)`` until its text is new (and not contained in ``outside``). A small
    knowledge base can repeat a document by chance, and an unplanted duplicate would corrupt the
    dedup ground truth or leak held-out text into a corpus."""
    for _ in range(100):
        text = make(*args)
        if text not in taken and text not in outside:
            taken.add(text)
            return text
    raise ValueError("knowledge base too small: could not draw a new unique document")


def kind_plan(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, lang) for ``count`` documents: kinds by their shares, languages alternating."""
    kinds = [kind for kind, share in DOC_KIND_SHARES.items() for _ in range(round(share * count))]
    kinds = (kinds + list(DOC_KIND_SHARES) * count)[:count]
    plan = [(kind, LANGS[index % 2]) for index, kind in enumerate(kinds)]
    rng.shuffle(plan)
    return plan


def build_document(writer: Writer, deck: Deck, kind: str, group: str | None = None,
                   topic_range: tuple[int, int] | None = None) -> list[str]:
    """Paragraphs of one document on topics dealt from ``group`` (default: a drawn group)."""
    low, high = topic_range or TOPICS_PER_DOC[kind]
    topics = deck.deal(group or deck.group(), writer.rng.randint(low, high))
    return DOC_BUILDERS[kind](writer, topics)


def document_text(writer: Writer, deck: Deck, kind: str, group: str | None = None,
                  topic_range: tuple[int, int] | None = None) -> str:
    return render(build_document(writer, deck, kind, group, topic_range))


# ---------------------------------------------------------------------------------------------
# Planted noise: near-duplicates, spam pages, PII
# ---------------------------------------------------------------------------------------------


def _drop_sentence(rng: random.Random, lang: str, text: str) -> str:
    paragraphs = text.split("\n\n")
    candidates = [i for i, p in enumerate(paragraphs)
                  if i > 0 and "\n" not in p and "\u201c" not in p and len(split_sentences(p, lang)) > 1]
    if not candidates:
        return text
    index = rng.choice(candidates)
    sentences = split_sentences(paragraphs[index], lang)
    del sentences[rng.randrange(1, len(sentences))]
    paragraphs[index] = SENTENCE_JOIN[lang].join(sentences)
    return "\n\n".join(paragraphs)


def _append_sentence(rng: random.Random, lang: str, text: str) -> str:
    writer = Writer(rng, lang, "general")
    return text + "\n\n" + writer.pick("near_dup_tail", **writer.date())


def _swap_words(rng: random.Random, lang: str, text: str) -> str:
    pattern = r"\b{}\b" if lang == "en" else "{}"
    swaps = [(old, new) for old, new in NEAR_DUP_WORD_SWAPS[lang] if re.search(pattern.format(old), text)]
    for old, new in rng.sample(swaps, min(len(swaps), 3)):
        text = re.sub(pattern.format(old), new, text, count=1)
    return text


def _typo(rng: random.Random, lang: str, text: str) -> str:
    if lang == "zh":
        found = [(old, new) for old, new in ZH_TYPOS if old in text]
        if not found:
            return text
        old, new = rng.choice(found)
        positions = [m.start() for m in re.finditer(old, text)]
        at = rng.choice(positions)
        return text[:at] + new + text[at + len(old):]
    words = list(re.finditer(r"\b[a-z]{6,}\b", text))
    if not words:
        return text
    match = rng.choice(words)
    word = match.group()
    at = rng.randrange(1, len(word) - 2)
    typo = word[:at] + word[at + 1] + word[at] + word[at + 2:]
    return text[:match.start()] + typo + text[match.end():]


NEAR_DUP_EDITS = (_drop_sentence, _append_sentence, _swap_words, _typo)


def near_duplicate(rng: random.Random, lang: str, text: str) -> str:
    """A copy with two small edits (a sentence dropped or appended, words swapped, a typo)."""
    edited = text
    for edit in rng.sample(NEAR_DUP_EDITS, 2):
        edited = edit(rng, lang, edited)
    return edited if edited != text else _append_sentence(rng, lang, text)


def spam_page(rng: random.Random, lang: str, keywords: Sequence[str]) -> str:
    """A boilerplate/spam page: cookie banner, repeated navigation, prize bait or keyword stuffing."""
    parts = SPAM[lang]

    def fill(template: str) -> str:
        return template.format(kw=rng.choice(keywords), n=rng.randint(1_000, 999_999), m=rng.randint(2, 59),
                               prize=rng.choice(parts["prize"]), year=rng.randint(2015, 2024))

    blocks = []
    if rng.random() < 0.6:
        blocks.append(fill(rng.choice(parts["cookie"])))
    nav = rng.choice(parts["nav"])
    blocks.append("\n".join(fill(nav) for _ in range(rng.randint(3, 8))))
    body_slots = rng.choice((("win",), ("seo",), ("win", "seo")))
    for slot in body_slots:
        blocks.append((" " if lang == "en" else "；").join(fill(rng.choice(parts[slot])) for _ in range(rng.randint(2, 5))))
    blocks.append(fill(rng.choice(parts["footer"])))
    return "\n\n".join(blocks)


def _grouped(text: str, size: int = 4) -> str:
    return " ".join(text[i:i + size] for i in range(0, len(text), size))


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def fake_card(rng: random.Random) -> str:
    prefix, length = rng.choice((("62", rng.randint(16, 19)), ("4", 16), (f"5{rng.randint(1, 5)}", 16)))
    payload = prefix + _digits(rng, length - len(prefix) - 1)
    number = payload + luhn_check_digit(payload)
    return _grouped(number) if length == 16 and rng.random() < 0.5 else number


def fake_iban(rng: random.Random) -> str:
    if rng.random() < 0.5:
        country, bban = "GB", "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(rng, 14)
    else:
        country, bban = "DE", _digits(rng, 18)
    iban = country + iban_check_digits(country, bban) + bban
    return _grouped(iban) if rng.random() < 0.5 else iban


CN_REGIONS = ("110101", "110105", "310104", "310115", "440305", "330106", "510107", "420106", "320102", "610113")


def fake_cn_id(rng: random.Random) -> str:
    birth = datetime.date(1955, 1, 1) + datetime.timedelta(days=rng.randrange(17_500))
    body = rng.choice(CN_REGIONS) + birth.strftime("%Y%m%d") + _digits(rng, 3)
    return body + cn_id_check_char(body)


def fake_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def fake_phone(rng: random.Random, lang: str) -> str:
    """CN mobile numbers, or numbers from Ofcom's and NANP's ranges reserved for fiction."""
    style = rng.choice(("cn", "cn", "uk", "us")) if lang == "zh" else rng.choice(("cn", "uk", "uk", "us", "us"))
    if style == "cn":
        return "1" + rng.choice("3456789") + _digits(rng, 9)
    if style == "uk":
        return rng.choice((f"+44 20 7946 0{_digits(rng, 3)}", f"+44 7700 900{_digits(rng, 3)}"))
    return f"+1 {rng.choice((202, 212, 312, 415, 617))}-555-01{_digits(rng, 2)}"


def fake_email(rng: random.Random, lang: str) -> str:
    first, last = rng.choice(PEOPLE[lang]["first"]), rng.choice(PEOPLE[lang]["last"])
    if lang == "zh":
        first, last = first[1], last[1]
    local = rng.choice((f"{first}.{last}", f"{first}{last}{rng.randint(1, 99)}", f"{first[0]}.{last}"))
    return f"{local.lower()}@{rng.choice(('example.com', 'example.org', 'example.net'))}"


PII_MAKERS: dict[str, Callable[[random.Random, str], str]] = {
    "email": fake_email, "phone": fake_phone, "card": lambda rng, lang: fake_card(rng), "iban": lambda rng, lang: fake_iban(rng),
    "cn_id": lambda rng, lang: fake_cn_id(rng), "ssn": lambda rng, lang: fake_ssn(rng),
}
PII_TYPE_NAMES = {"email": "email", "phone": "phone", "card": "bank_card", "iban": "iban", "cn_id": "cn_resident_id", "ssn": "us_ssn"}


def plant_pii(writer: Writer, kind: str, blocks: list[str]) -> tuple[str, list[dict[str, str]]]:
    """Add a paragraph carrying PII where such text occurs in real pages: a contact or correction
    notice near the end, or a detail inside a story. Returns the text and what was planted."""
    slot = "pii_story" if kind == "story" else "pii_notice"
    template = writer.rng.choice(TEMPLATES[writer.lang][slot])
    needed = [name for _, name, _, _ in string.Formatter().parse(template) if name and name != "name"]
    values = {name: PII_MAKERS[name](writer.rng, writer.lang) for name in needed}
    sentence = template.format(name=writer.person(), **values)
    low = 1 if kind == "story" else len(blocks) - 1
    blocks = list(blocks)
    blocks.insert(writer.rng.randint(low, len(blocks) - (kind == "story")), sentence)
    planted = sorted(({"type": PII_TYPE_NAMES[name], "value": value} for name, value in values.items()),
                     key=lambda item: sentence.index(item["value"]))
    return render(blocks), planted


# ---------------------------------------------------------------------------------------------
# Corpora and held-out documents
# ---------------------------------------------------------------------------------------------


def stream(seed: int, name: str) -> random.Random:
    """An independent rng per output stream (string seeds hash with SHA-512, stable across runs)."""
    return random.Random(f"{seed}/{name}")


@dataclass(eq=False)
class Draft:
    """A corpus document before ids are assigned; dups point at their original object, so
    ``dup_of`` stays right after the final shuffle."""

    text: str
    lang: str
    kind: str
    planted: str | None = None
    original: Draft | None = None
    pii: list[dict[str, str]] | None = None
    id: str = ""

    def record(self, corpus: str) -> dict:
        record = {"id": self.id, "text": self.text, "source": CORPUS_SOURCE[corpus], "lang": self.lang, "kind": self.kind}
        if self.planted:
            record["planted"] = self.planted
        if self.original is not None:
            record["dup_of"] = self.original.id
        if self.pii:
            record["pii"] = self.pii
        return record


def planted_counts(clean: int) -> dict[str, int]:
    total = clean / (1 - sum(PLANTED_SHARES.values()))
    return {name: round(share * total) for name, share in PLANTED_SHARES.items()}


def keywords(topics: Sequence[Topic], lang: str, proper: frozenset[str]) -> list[str]:
    return [phrase(t.blocks[lang], lang, proper).bare for t in topics]


def build_corpus(kb: KnowledgeBase, corpus: str, seed: int, taken: set[str], proper: frozenset[str]) -> list[dict]:
    """Clean documents plus planted duplicates, near-duplicates, spam and PII, shuffled together."""
    rng = stream(seed, f"{corpus}-corpus")
    topics = kb.training_topics(corpus)
    deck = Deck(topics, rng)
    counts = planted_counts(CLEAN_DOCS_PER_CORPUS)

    def draft(kind: str, lang: str, with_pii: bool) -> Draft:
        writer = Writer(rng, lang, corpus, proper)
        if not with_pii:
            return Draft(draw_unique(taken, document_text, writer, deck, kind), lang, kind)
        text, pii = plant_pii(writer, kind, build_document(writer, deck, kind))
        taken.add(text)
        return Draft(text, lang, kind, planted="pii", pii=pii)

    clean = [draft(kind, lang, False) for kind, lang in kind_plan(CLEAN_DOCS_PER_CORPUS, rng)]
    pii_kinds = [(kind, lang) for kind, lang in kind_plan(counts["pii"] * 3, rng) if kind != "glossary"][:counts["pii"]]
    drafts = clean + [draft(kind, lang, True) for kind, lang in pii_kinds]
    for index in range(counts["spam"]):
        lang = LANGS[index % 2]
        text = draw_unique(taken, spam_page, rng, lang, keywords(topics, lang, proper))
        drafts.append(Draft(text, lang, "spam", planted="spam"))
    for original in rng.sample(clean, counts["exact_dup"]):
        drafts.append(Draft(original.text, original.lang, original.kind, planted="exact_dup", original=original))
    for original in rng.sample(clean, counts["near_dup"]):
        text = draw_unique(taken, near_duplicate, rng, original.lang, original.text)
        drafts.append(Draft(text, original.lang, original.kind, planted="near_dup", original=original))
    rng.shuffle(drafts)
    for index, item in enumerate(drafts):
        item.id = f"{CORPUS_PREFIX[corpus]}-{index:05d}"
    return [item.record(corpus) for item in drafts]


def build_heldout(kb: KnowledgeBase, corpus: str, seed: int, taken: set[str], corpora: str, proper: frozenset[str]) -> list[dict]:
    """Clean documents drawn apart from the corpus, for measuring perplexity on unseen text."""
    rng = stream(seed, f"{corpus}-heldout")
    deck = Deck(kb.heldout_topics(corpus), rng)
    drafts = []
    for index, (kind, lang) in enumerate(kind_plan(HELDOUT_DOCS_PER_CORPUS, rng)):
        writer = Writer(rng, lang, corpus, proper)
        item = Draft(draw_unique(taken, document_text, writer, deck, kind, outside=corpora), lang, kind)
        item.id = f"{CORPUS_PREFIX[corpus]}-heldout-{index:03d}"
        drafts.append(item)
    return [item.record(corpus) for item in drafts]


# ---------------------------------------------------------------------------------------------
# SFT conversations and preference pairs
# ---------------------------------------------------------------------------------------------

SYSTEM_PROMPTS = {
    "finance": {
        "en": ["You are a careful financial assistant at a bank. Answer accurately and plainly, and do not guess.",
               "You are a helpful assistant for a securities firm's client service team. Keep answers concise and factual.",
               "You are FinTutor, an assistant that explains financial concepts to beginners in plain language."],
        "zh": ["你是一家银行的审慎的金融助手，请准确、清楚地回答问题，不要猜测。", "你是证券公司客服团队的智能助手，回答要简洁、准确。",
               "你是一位耐心的金融知识讲解员，请用通俗易懂的语言回答。"],
    },
    "general": {
        "en": ["You are a friendly and knowledgeable assistant.", "You are a helpful tutor who explains things clearly and accurately."],
        "zh": ["你是一个友好、知识渊博的助手。", "你是一位善于讲解的老师，回答要清楚准确。"],
    },
}


def distinct_topics(topic: Topic, topics: Sequence[Topic]) -> list[Topic]:
    """Topics about something else. Excludes same-term entries too: the knowledge base may define
    one concept twice (say, a daily price limit under futures and under securities), and a
    distractor or 'other term' that is really the same concept would be a wrong answer key."""
    terms = {block.term.casefold() for block in topic.blocks.values()}
    return [t for t in topics if not terms & {block.term.casefold() for block in t.blocks.values()}]


def _other_topic(rng: random.Random, topic: Topic, topics: Sequence[Topic]) -> Topic:
    """Another topic, from the same group when there is one: the realistic thing to confuse it with."""
    others = distinct_topics(topic, topics)
    return rng.choice([t for t in others if t.group == topic.group] or others)


def answer_define(writer: Writer, topic: Topic, fact_count: int) -> tuple[str, list[str]]:
    """A definition answer with ``fact_count`` facts; also returns the facts left unsaid."""
    facts = writer.facts(topic, 4)
    answer = writer.pick("sft_answer_define", define=writer.define(topic), facts=writer.sentences(facts[:fact_count]))
    return answer, facts[fact_count:]


def _compare_turn(writer: Writer, topic: Topic, other: Topic) -> tuple[str, str]:
    words, other_words = writer.phrasing(topic), writer.phrasing(other)
    ask = writer.pick("sft_ask_compare", term=words.term_mid, other=other_words.term_mid)
    if topic.group == other.group:
        closing = writer.pick("compare_same_group", group=writer.group(topic))
    else:
        closing = writer.pick("compare_other_group", group=writer.group(topic), other_group=writer.group(other))
    answer = writer.pick("sft_answer_compare", define=writer.define(topic), other_define=writer.define(other), closing=closing)
    return capitalise(ask), answer


def _follow_up(writer: Writer, kind: str, topic: Topic, other: Topic, unsaid: list[str]) -> tuple[str, str]:
    words = writer.phrasing(topic)
    if kind == "more":
        return writer.pick("sft_ask_more"), writer.pick("sft_answer_more", facts=writer.sentences(unsaid))
    if kind == "subject":
        return writer.pick("sft_ask_subject"), writer.pick("sft_answer_subject", Term=words.term_start, term=words.term_mid,
                                                           subject=topic.blocks[writer.lang].subject, group=writer.group(topic))
    if kind == "compare":
        return _compare_turn(writer, topic, other)
    return writer.pick("sft_ask_summary"), writer.pick("sft_answer_summary", define=writer.define(topic))


def conversation(writer: Writer, topic: Topic, topics: Sequence[Topic]) -> list[dict[str, str]]:
    """One chat: single-turn (define / two facts / compare) or 2-3 user turns with follow-ups."""
    rng = writer.rng
    shape = rng.choices(list(SFT_SHAPE_SHARES), weights=list(SFT_SHAPE_SHARES.values()))[0]
    words, other = writer.phrasing(topic), _other_topic(rng, topic, topics)
    turns: list[tuple[str, str]] = []
    if shape == "facts":
        fact1, fact2 = writer.facts(topic, 2)
        turns.append((capitalise(writer.pick("sft_ask_facts", term=words.term_mid)),
                      writer.pick("sft_answer_facts", term=words.term_mid, fact1=fact1, fact2=fact2)))
    elif shape == "compare":
        turns.append(_compare_turn(writer, topic, other))
    else:
        answer, unsaid = answer_define(writer, topic, 1 if shape == "multi" else 2)
        turns.append((capitalise(writer.pick("sft_ask_define", term=words.term_mid)), answer))
        if shape == "multi":
            options = ["subject", "compare", "summary"] + (["more"] if unsaid else [])
            for kind in rng.sample(options, rng.randint(1, 2)):
                turns.append(_follow_up(writer, kind, topic, other, unsaid))
    messages = []
    if rng.random() < SFT_SYSTEM_SHARE:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[writer.corpus][writer.lang])})
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def build_sft(kb: KnowledgeBase, corpus: str, seed: int, proper: frozenset[str]) -> list[dict]:
    """One conversation per topic and language, in a shuffled order."""
    rng = stream(seed, f"{corpus}-sft")
    topics = kb.training_topics(corpus)
    records = []
    for topic in topics:
        for lang in LANGS:
            records.append({"lang": lang, "messages": conversation(Writer(rng, lang, corpus, proper), topic, topics)})
    rng.shuffle(records)
    for index, record in enumerate(records):
        record["id"] = f"sft-{CORPUS_PREFIX[corpus]}-{index:05d}"
    return records


def rejected_answer(writer: Writer, defect: str, topic: Topic, topics: Sequence[Topic], chosen: str, chosen_facts: list[str]) -> str:
    """A worse answer with one realistic defect; a false fact replaces a true one in the chosen
    answer itself, so that the pair differs in nothing else."""
    rng = writer.rng
    if defect == "false_fact":
        return chosen.replace(rng.choice(chosen_facts), rng.choice(topic.blocks[writer.lang].false), 1)
    if defect == "vague":
        words = writer.phrasing(topic)
        return writer.pick("vague", Term=words.term_start, term=words.term_mid)
    if defect == "off_topic":
        return answer_define(writer, _other_topic(rng, topic, topics), 2)[0]
    return answer_define(Writer(rng, OTHER_LANG[writer.lang], writer.corpus, writer.proper), topic, 2)[0]


def build_preferences(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    rng = stream(seed, "preferences")
    records = []
    for corpus, count in PREFERENCES.items():
        topics = kb.training_topics(corpus)
        deck = Deck(topics, rng)
        for index in range(count):
            lang = LANGS[index % 2]
            writer = Writer(rng, lang, corpus, proper)
            topic = deck.deal(deck.group(), 1)[0]
            facts = writer.facts(topic, 2)
            chosen = writer.pick("sft_answer_define", define=writer.define(topic), facts=writer.sentences(facts))
            defect = rng.choices(list(DEFECT_SHARES), weights=list(DEFECT_SHARES.values()))[0]
            record = {
                "lang": lang,
                "prompt": [{"role": "user", "content": capitalise(writer.pick("sft_ask_define", term=writer.phrasing(topic).term_mid))}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected_answer(writer, defect, topic, topics, chosen, facts)}],
            }
            if rng.random() < PREFERENCE_SCORED_SHARE:
                record["score_chosen"] = round(rng.uniform(0.8, 1.0), 2)
                record["score_rejected"] = round(rng.uniform(*DEFECT_SCORES[defect]), 2)
            records.append(record)
    rng.shuffle(records)
    for index, record in enumerate(records):
        record["id"] = f"pref-{index:05d}"
    return records


# ---------------------------------------------------------------------------------------------
# Evaluation sets
# ---------------------------------------------------------------------------------------------


def _distractor_definitions(rng: random.Random, topic: Topic, topics: Sequence[Topic], lang: str) -> list[str]:
    """Three definitions of other topics, from the same group first so the item is not trivial."""
    own = topic.blocks[lang].definition
    others = distinct_topics(topic, topics)
    same = [t.blocks[lang].definition for t in others if t.group == topic.group]
    rest = [t.blocks[lang].definition for t in others if t.group != topic.group]
    pool = list(dict.fromkeys(d for d in same if d != own))
    rng.shuffle(pool)
    if len(pool) < 3:
        extra = list(dict.fromkeys(d for d in rest if d != own and d not in pool))
        pool += rng.sample(extra, 3 - len(pool))
    return pool[:3]


def mcq_item(writer: Writer, topic: Topic, topics: Sequence[Topic]) -> dict:
    """A FLAME-Cer style item: one correct definition, or 2-3 true facts mixed with false ones."""
    rng, lang = writer.rng, writer.lang
    block = topic.blocks[lang]
    term = writer.phrasing(topic).term_mid
    if rng.random() < MCQ_MULTI_SHARE:
        correct_count = rng.choice([n for n in (2, 3) if n <= len(block.facts) and 4 - n <= len(block.false)])
        options = [(s, True) for s in rng.sample(block.facts, correct_count)]
        options += [(s, False) for s in rng.sample(block.false, 4 - correct_count)]
        stem = writer.pick("mcq_multi", term=term)
    else:
        options = [(block.definition, True)] + [(d, False) for d in _distractor_definitions(rng, topic, topics, lang)]
        stem = writer.pick("mcq_single", term=term)
    rng.shuffle(options)
    separator = "\uff0e" if lang == "zh" and rng.random() < 0.5 else "."
    lines = [f"{letter}{separator}{text}" for letter, (text, _) in zip(MCQ_LETTERS, options)]
    answer = "".join(letter for letter, (_, correct) in zip(MCQ_LETTERS, options) if correct)
    return {"task_name": topic.certification or topic.group, "second_level": block.subject, "question": "\n".join([capitalise(stem), *lines]),
            "answer": answer, "lang": lang, "domain": topic.group}


def build_mcq(kb: KnowledgeBase, corpus: str, seed: int, proper: frozenset[str]) -> list[dict]:
    """One item per topic and language, shuffled so that any prefix is a fair sample."""
    rng = stream(seed, f"{corpus}-mcq")
    topics = kb.topics(corpus)
    items = [mcq_item(Writer(rng, lang, corpus, proper), topic, topics) for topic in topics for lang in LANGS]
    rng.shuffle(items)
    for index, item in enumerate(items):
        item["id"] = f"{CORPUS_PREFIX[corpus]}-mcq-{index:04d}"
    return items


def build_scenarios(kb: KnowledgeBase) -> list[dict]:
    return [
        {"id": f"{entry.id}-{lang}", "family": entry.family, "secondary": entry.secondary, "task": entry.task,
         "high_stakes": entry.high_stakes, "weights": dict(entry.weights), "lang": lang,
         "prompt": getattr(entry, lang).prompt, "checklist": list(getattr(entry, lang).checklist),
         "checks": scenario_checks(entry.family, lang, getattr(entry, lang).prompt, getattr(entry, lang).checklist)}
        for entry in kb.scenarios for lang in LANGS
    ]


# What a scenario's own words make machine-checkable (finloom.checks), derived here so that every bundled
# scenario carries them: the answer's language (a translation task's target language), a length limit the
# prompt states, a table or list it asks for, a risk warning in product and marketing answers, the results
# a calculation's checklist states, and the security codes the prompt gives (no others may be invented).
_WORD_LIMIT = re.compile(r"(?:under|at most|no more than|within|fewer than)\s+(\d+)\s+words", re.IGNORECASE)
_CHAR_LIMIT = re.compile(r"(\d+)\s*字以内|不超过\s*(\d+)\s*字|控制在\s*(\d+)\s*字")
_TO_ENGLISH = re.compile(r"译成英文|翻译成英文|英文译文")
_TO_CHINESE = re.compile(r"into (?:simplified )?chinese", re.IGNORECASE)
_ASKS_TABLE = {"en": re.compile(r"\btables?\b", re.IGNORECASE), "zh": re.compile(r"表格")}
_ASKS_LIST = {"en": re.compile(r"\b(?:list|bullet(?:s|ed)?|numbered)\b", re.IGNORECASE), "zh": re.compile(r"列出|分点|逐条|要点")}
_RESULT = re.compile(r"=\s*(?:EUR|USD|CNY)?\s*(-?\d[\d,]*(?:\.\d+)?%?)")
_SECURITY_CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")
DISCLAIMER_FAMILIES = ("investment_wealth", "marketing")


def scenario_checks(family: str, lang: str, prompt: str, checklist: list[str]) -> list[dict]:
    target = "en" if _TO_ENGLISH.search(prompt) else "zh" if _TO_CHINESE.search(prompt) else lang
    checks: list[dict] = [{"type": "language", "value": target}]
    if words := _WORD_LIMIT.search(prompt):
        checks.append({"type": "max_words", "value": int(words.group(1))})
    if chars := _CHAR_LIMIT.search(prompt):
        checks.append({"type": "max_chars", "value": int(next(g for g in chars.groups() if g))})
    if _ASKS_TABLE[lang].search(prompt):
        checks.append({"type": "has_table"})
    elif _ASKS_LIST[lang].search(prompt):
        checks.append({"type": "has_list"})
    if family in DISCLAIMER_FAMILIES:
        checks.append({"type": "risk_disclaimer"})
    if family == "data_calculation":
        results = [found[-1] for item in checklist if (found := _RESULT.findall(item))]
        if results:
            checks.append({"type": "required_figures", "value": results[:3]})
    if codes := sorted(set(_SECURITY_CODE.findall(prompt))):
        checks.append({"type": "allowed_tickers", "value": codes})
    return checks


def question_stem(question: str) -> str:
    """The text before the first option line."""
    return re.split(r"\n[A-D][.\uff0e]", question, maxsplit=1)[0]


# ---------------------------------------------------------------------------------------------
# Classifier labels
# ---------------------------------------------------------------------------------------------


def garble(rng: random.Random, lang: str, text: str) -> str:
    """Text a quality filter must reject: word salad, character noise, mojibake or markup debris."""
    style = rng.choice(("salad", "noise", "mojibake", "debris"))
    if style == "salad":
        pieces = text.split() if lang == "en" else [text[i:i + rng.randint(2, 4)] for i in range(0, len(text), 3)]
        rng.shuffle(pieces)
        return (" " if lang == "en" else "").join(pieces)
    if style == "noise":
        return "".join(rng.choice(NOISE_CHARS) if rng.random() < 0.15 and not c.isspace() else c for c in text)
    if style == "mojibake":
        if lang == "zh":
            return text.encode("utf-8").decode("gbk", errors="replace")
        return "".join(rng.choice(MOJIBAKE_EN) if c in "aeiou'" and rng.random() < 0.3 else c for c in text)
    return "\n".join(rng.choice(HTML_DEBRIS) + line + rng.choice(HTML_DEBRIS) for line in text.split("\n") if line)


def build_quality_labels(kb: KnowledgeBase, seed: int, taken: set[str], corpora: str, proper: frozenset[str]) -> list[dict]:
    """Good = clean generated documents; bad = spam pages and garbled documents. None is in a corpus."""
    rng = stream(seed, "quality-labels")
    decks = {corpus: Deck(kb.topics(corpus), rng) for corpus in ("finance", "general")}
    records = []

    def fresh_document(index: int) -> tuple[str, str]:
        corpus, lang = ("finance", "general")[index % 2], LANGS[(index // 2) % 2]
        writer = Writer(rng, lang, corpus, proper)
        kind = rng.choice(list(DOC_BUILDERS))
        return lang, draw_unique(taken, document_text, writer, decks[corpus], kind, outside=corpora)

    for index in range(QUALITY_LABELS["good"]):
        records.append({"text": fresh_document(index)[1], "label": "good"})
    for index in range(QUALITY_LABELS["spam"]):
        corpus, lang = ("finance", "general")[index % 2], LANGS[(index // 2) % 2]
        page = draw_unique(taken, spam_page, rng, lang, keywords(kb.topics(corpus), lang, proper), outside=corpora)
        records.append({"text": page, "label": "bad"})
    for index in range(QUALITY_LABELS["garbled"]):
        lang, text = fresh_document(index)
        records.append({"text": draw_unique(taken, garble, rng, lang, text, outside=corpora), "label": "bad"})
    rng.shuffle(records)
    return records


def build_domain_labels(kb: KnowledgeBase, seed: int, taken: set[str], corpora: str, proper: frozenset[str]) -> list[dict]:
    """Short documents on one or two topics, balanced over the finance domains and general categories."""
    rng = stream(seed, "domain-labels")
    records = []
    for corpus, per_group in DOMAIN_LABELS_PER_GROUP.items():
        deck = Deck(kb.topics(corpus), rng)
        for group in sorted(deck.groups):
            for index in range(min(per_group, LABEL_TEXTS_PER_TOPIC * len(deck.groups[group]))):
                writer = Writer(rng, LANGS[index % 2], corpus, proper)
                kind = rng.choice(LABEL_DOC_KINDS)
                text = draw_unique(taken, document_text, writer, deck, kind, group, (1, 2), outside=corpora)
                records.append({"text": text, "label": corpus, "subdomain": group if corpus == "finance" else None})
    rng.shuffle(records)
    return records


# ---------------------------------------------------------------------------------------------
# Checks and output
# ---------------------------------------------------------------------------------------------

TRAINING_FILES = ("general_corpus.jsonl", "finance_corpus.jsonl", "sft_finance.jsonl", "sft_general.jsonl", "preferences.jsonl",
                  "prompt_pool.jsonl", "prompt_tags.jsonl", "rl_prompts.jsonl", "pas_fewshot.jsonl", "pas_complements.jsonl")


def training_texts(files: dict[str, list[dict]]) -> list[str]:
    """Every string a model is trained on: corpus texts, all chat message contents, RL reference replies and PAS
    complements."""
    texts = []
    for name in TRAINING_FILES:
        for record in files[name]:
            if "text" in record:
                texts.append(record["text"])
            for key in ("messages", "prompt", "chosen", "rejected", "reference", "complement"):
                if isinstance(record.get(key), str):
                    texts.append(record[key])
                    continue
                texts += [message["content"] for message in record.get(key, [])]
    return texts


def eval_prompts(files: dict[str, list[dict]]) -> list[str]:
    prompts = [question_stem(r["question"]) for name in ("eval_finance_mcq.jsonl", "eval_general_mcq.jsonl") for r in files[name]]
    prompts += [r["question"] for r in files["eval_finance_calc.jsonl"]]
    return prompts + [r["prompt"] for r in files["eval_scenarios.jsonl"]]


def check_heldout(files: dict[str, list[dict]]) -> None:
    """Raise if an evaluation prompt occurs in training data, or if held-out or label texts
    overlap a corpus document: either would inflate every score computed downstream."""
    training = "\x00".join(training_texts(files))
    leaked = [prompt for prompt in eval_prompts(files) if prompt in training]
    if leaked:
        raise ValueError(f"{len(leaked)} evaluation prompt(s) occur in training files, e.g. {leaked[0]!r}")
    corpus = "\x00".join(r["text"] for name in ("general_corpus.jsonl", "finance_corpus.jsonl") for r in files[name])
    for name in ("general_heldout.jsonl", "finance_heldout.jsonl", "quality_labels.jsonl", "domain_labels.jsonl"):
        overlapping = [r["text"] for r in files[name] if r["text"] in corpus]
        if overlapping:
            raise ValueError(f"{name}: {len(overlapping)} text(s) occur in a corpus, e.g. {overlapping[0][:80]!r}")


def build_all(kb: KnowledgeBase, seed: int) -> dict[str, list[dict]]:
    """Every bundled file's records, keyed by file name; checked for held-out leaks."""
    from finloom.starter.pas_data import build_pas_complements  # they build on this module
    from finloom.starter.pas_examples import build_pas_fewshot
    from finloom.starter.prompt_pool import build_prompt_pool, build_prompt_tags
    from finloom.starter.rl_prompts import build_rl_prompts

    proper = proper_words(kb.finance + kb.general)
    taken: set[str] = set()
    files = {name: build_corpus(kb, corpus, seed, taken, proper)
             for name, corpus in (("general_corpus.jsonl", "general"), ("finance_corpus.jsonl", "finance"))}
    corpora = "\x00".join(doc["text"] for docs in files.values() for doc in docs)
    files |= {
        "general_heldout.jsonl": build_heldout(kb, "general", seed, taken, corpora, proper),
        "finance_heldout.jsonl": build_heldout(kb, "finance", seed, taken, corpora, proper),
        "sft_finance.jsonl": build_sft(kb, "finance", seed, proper),
        "sft_general.jsonl": build_sft(kb, "general", seed, proper),
        "preferences.jsonl": build_preferences(kb, seed, proper),
        "eval_finance_mcq.jsonl": build_mcq(kb, "finance", seed, proper),
        "eval_general_mcq.jsonl": build_mcq(kb, "general", seed, proper),
        "eval_finance_calc.jsonl": generate_calc_problems(seed=seed),
        "eval_scenarios.jsonl": build_scenarios(kb),
        "quality_labels.jsonl": build_quality_labels(kb, seed, taken, corpora, proper),
        "domain_labels.jsonl": build_domain_labels(kb, seed, taken, corpora, proper),
        "prompt_pool.jsonl": build_prompt_pool(kb, seed, proper),
        "prompt_tags.jsonl": build_prompt_tags(kb, seed, proper),
        "rl_prompts.jsonl": build_rl_prompts(kb, seed, proper),
        "pas_fewshot.jsonl": build_pas_fewshot(),
    }
    files["pas_complements.jsonl"] = build_pas_complements(kb, files["prompt_pool.jsonl"], files["eval_scenarios.jsonl"], seed)
    check_heldout(files)
    return files


def to_jsonl(records: Sequence[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records)


def generate_starter_data(out_dir: Path, kb_dir: Path = KB_DIR, seed: int = 0) -> dict[str, int]:
    """Write every starter file into ``out_dir``; returns the number of records per file."""
    files = build_all(load_knowledge_base(Path(kb_dir)), seed)
    for name, records in files.items():
        atomic_write_text(Path(out_dir) / name, to_jsonl(records))
    return {name: len(records) for name, records in files.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finloom.starter.generate",
        description="Write the bundled starter data (corpora, held-out text, SFT, preferences, benchmarks, labels, "
        "prompts, RL prompts, PAS pairs) "
        "from the project-written knowledge base; the same knowledge base always gives the same files.",
    )
    parser.add_argument("out_dir", nargs="?", type=Path, default=DATA_DIR, help=f"where to write (default: {DATA_DIR})")
    out_dir = parser.parse_args(argv).out_dir
    counts = generate_starter_data(out_dir)
    for name, count in counts.items():
        chars = sum(len(json.loads(line).get("text", "")) for line in (out_dir / name).read_text(encoding="utf-8").splitlines())
        print(f"{name:28s} {count:6d} records" + (f" {chars:10,d} text characters" if chars else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
