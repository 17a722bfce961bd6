"""The prompts stage's bundled inputs, written by this project from its knowledge base.

``prompt_pool.jsonl``: conversations to select SFT data from. The last assistant turn of each is a
project-written reference answer, and ``quality`` a project-written quality annotation (0-1): the
bundled annotations the quickstart builds responses and quality scores from, since a tiny model is no
teacher. Planted among them, for the selection to find: repeats of long task templates that differ
only in a slot (``planted: template``), near and exact duplicates, and vague or garbled prompts with
low quality annotations.

``prompt_tags.jsonl``: other prompts from the same generators with their tags on the six
dimensions (ability, attributes, domain, language, difficulty, constraint), to train the tag
classifiers offline. ``constraint`` records which explicit constraints the generator wrote in, so the
stage's constraint counter can be checked against it.

Tag values: ``ability`` is the task; ``domain`` is the finance scenario family of the evaluation
suite (FLAME-Sce's ten) or ``general``; ``attributes`` is the subject (a finance domain or a
general category); ``difficulty`` easy / medium / hard; ``constraint`` none / simple / strong.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from finloom.starter.generate import (
    LANGS,
    KnowledgeBase,
    Topic,
    Writer,
    _compare_turn,
    _other_topic,
    answer_define,
    capitalise,
    near_duplicate,
    stream,
)

# kind: (ability, scenario family of a finance prompt, difficulty, base quality annotation)
KINDS = {
    "define": ("knowledge_qa", "knowledge_theory", "easy", 0.7),
    "facts": ("knowledge_qa", "knowledge_theory", "medium", 0.75),
    "compare": ("comparison", "analysis_research", "medium", 0.8),
    "client_note": ("writing", "customer_service", "medium", 0.8),
    "blurb": ("writing", "marketing", "hard", 0.85),
    "risk": ("advice", "risk_control", "medium", 0.85),
    "summarise": ("summarisation", "text_processing", "medium", 0.75),
    "translate": ("translation", "text_processing", "easy", 0.65),
    "calc": ("calculation", "data_calculation", "hard", 0.9),
}
FINANCE_KINDS = {"define": 0.2, "facts": 0.1, "compare": 0.1, "client_note": 0.12, "blurb": 0.1, "risk": 0.12,
                 "summarise": 0.08, "translate": 0.06, "calc": 0.12}
GENERAL_KINDS = {"define": 0.35, "facts": 0.2, "compare": 0.2, "summarise": 0.15, "translate": 0.1}
CONSTRAINT_SHARE = 0.3
"""Share of prompts given one explicit constraint; a fifth of those get a second one."""
PLANTED = {"near_dup": 0.04, "exact_dup": 0.02, "low_quality": 0.07}
TEMPLATE_FILLS = 11

PROMPTS = {
    "en": {
        "define": ["What is {term}?", "Could you explain {term} to me?", "What does {term} mean?"],
        "facts": ["Tell me two important facts about {term}.", "What are two key points about {term}?"],
        "client_note": ["Write a short reply to a client who asked what {term} is.",
                        "A customer emailed to ask about {term}. Draft a reply."],
        "blurb": ["Write a short product introduction about {term} for retail investors.",
                  "Draft two sentences introducing {term} to ordinary customers."],
        "risk": ["What should a {group} team watch out for when dealing with {term}?",
                 "From a risk-control point of view, what matters about {term}?"],
        "summarise": ["Summarise the following passage:\n\n{passage}", "Give me the gist of this text:\n\n{passage}"],
        "translate": ["Translate into Chinese: {sentence}", "Please translate this sentence into Chinese: {sentence}"],
    },
    "zh": {
        "define": ["什么是{term}？", "请解释一下{term}。", "{term}是什么意思？"],
        "facts": ["请说出关于{term}的两个要点。", "{term}有哪两点最值得了解？"],
        "client_note": ["一位客户询问{term}是什么，请写一段简短的回复。", "客户来信咨询{term}，请起草一封回复。"],
        "blurb": ["请为{term}写一段面向普通投资者的简短介绍。", "用两句话向普通客户介绍{term}。"],
        "risk": ["{group}团队在处理{term}时应注意什么？", "从风控角度看，{term}有哪些要点？"],
        "summarise": ["请概括下面这段话：\n\n{passage}", "请提炼这段文字的要点：\n\n{passage}"],
        "translate": ["请把这句话翻译成英文：{sentence}", "翻译成英文：{sentence}"],
    },
}
ANSWERS = {
    "en": {
        "client_note": "Dear client, thank you for your question. {define} {fact} Please let us know if you have any "
                       "other questions.",
        "blurb": "{define} {fact} Investing involves risk; please read the product documents carefully.",
        "risk": "{define} Points to watch: {facts} Teams should review these regularly and escalate exceptions.",
        "risk_warning": " Investing involves risk.",
    },
    "zh": {
        "client_note": "尊敬的客户，感谢您的来信。{define}{fact}如有其他问题，欢迎随时联系我们。",
        "blurb": "{define}{fact}投资有风险，请仔细阅读产品资料。",
        "risk": "{define}需要关注的要点：{facts}团队应定期复核，并及时上报异常情况。",
    },
}
# Constraint kind -> (prompt suffix, how the answer is made to meet it); "length" and "list" only.
CONSTRAINTS = {
    "en": {"length": " Answer in no more than {n} words.", "list": " Use a numbered list."},
    "zh": {"length": "回答不超过{n}字。", "list": "请分点作答。"},
}
# Long task frames that differ only in the slot: the "template + context" repeats the selection must catch.
TEMPLATES = {
    "en": [
        ("You are the assistant of a retail bank's service desk. A customer has written in to ask about {term}. "
         "Reply in a polite, professional tone, explain it in plain words, do not give personal investment advice, "
         "and close by inviting them to call the service hotline if they have more questions.",
         "Thank you for contacting us. {define} If you have more questions, please call our service hotline."),
        ("Our compliance team is preparing the quarterly staff training. Write one paragraph for the training "
         "handout that explains {term}, mention why front-line staff need to understand it, and do not include "
         "any client names or account numbers.",
         "{define} Front-line staff need to understand this because clients ask about it and mistakes create risk."),
    ],
    "zh": [
        ("你是某银行客服中心的智能助手。一位客户来信咨询{term}。请用礼貌、专业的语气，用通俗的话解释清楚，"
         "不要提供个性化的投资建议，并在结尾提醒客户如有疑问可拨打客服热线。",
         "感谢您的来信。{define}如有其他疑问，请拨打我们的客服热线。"),
        ("合规部正在准备本季度的员工培训材料。请写一段培训讲义，解释{term}，说明一线员工为什么需要掌握它，"
         "不要出现任何客户姓名或账号，并在结尾注明“仅供内部培训使用”。",
         "{define}一线员工需要掌握这一点，因为客户经常问到，而处理不当会带来风险。（仅供内部培训使用）"),
    ],
}
LOW_QUALITY = {
    "en": ["help", "what about it", "explain", "Tell me something.", "is it good or", "asdf qwer zxcv", "???",
           "can you do the thing from before", "finance", "I need an answer now"],
    "zh": ["帮我", "这个呢", "解释", "随便说点什么", "好不好还是", "啊啊啊啊", "？？？", "就是上次那个", "金融", "快点回答"],
}
LOW_QUALITY_ANSWER = {"en": "Could you tell me a little more about what you would like to know?",
                      "zh": "能否具体说明一下您想了解什么？"}
CALC = {
    "en": ("A deposit of {amount:,} yuan earns simple interest of {rate}% a year. How much interest does it earn in "
           "{years} years?", "Interest = {amount:,} x {rate}% x {years} = {result:,.2f} yuan."),
    "zh": ("{amount}元存款按年单利{rate}%计息，{years}年的利息是多少？", "利息 = {amount} × {rate}% × {years} = {result:.2f}元。"),
}
CHANGE = {
    "en": ("A fund's net asset value went from {start} to {end}. What is the percentage change?",
           "Change = ({end} - {start}) / {start} = {result:.2f}%."),
    "zh": ("某基金单位净值从{start}元变为{end}元，变动幅度是多少？", "变动幅度 = ({end} - {start}) / {start} = {result:.2f}%。"),
}


def _draw(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _constraints(rng: random.Random) -> list[str]:
    if rng.random() >= CONSTRAINT_SHARE:
        return []
    return ["length", "list"] if rng.random() < 0.2 else [rng.choice(["length", "list"])]


def _level(constraints: Sequence[str]) -> str:
    return "none" if not constraints else "simple" if len(constraints) == 1 else "strong"


def _calculation(rng: random.Random, lang: str) -> tuple[str, str]:
    if rng.random() < 0.5:
        amount, rate, years = rng.randrange(10_000, 500_000, 1000), rng.choice([1.5, 2, 2.25, 2.75, 3.1]), rng.randint(2, 5)
        ask, answer = CALC[lang]
        values = {"amount": amount, "rate": rate, "years": years, "result": amount * rate / 100 * years}
    else:
        start = round(rng.uniform(0.8, 2.5), 3)
        end = round(start * rng.uniform(0.85, 1.3), 3)
        ask, answer = CHANGE[lang]
        values = {"start": start, "end": end, "result": (end - start) / start * 100}
    return ask.format(**values), answer.format(**values)


def _turn(writer: Writer, kind: str, topic: Topic, topics: Sequence[Topic]) -> tuple[str, str]:
    """(prompt, reference answer) of one kind about ``topic``."""
    rng, lang = writer.rng, writer.lang
    words = writer.phrasing(topic)
    block = topic.blocks[lang]
    if kind == "define":
        return capitalise(rng.choice(PROMPTS[lang]["define"]).format(term=words.term_mid)), answer_define(writer, topic, 1)[0]
    if kind == "compare":
        return _compare_turn(writer, topic, _other_topic(rng, topic, topics))
    if kind == "calc":
        return _calculation(rng, lang)
    ask = rng.choice(PROMPTS[lang][kind])
    facts = writer.facts(topic, 2)
    if kind == "facts":
        answer = "\n".join(f"{i}. {fact}" for i, fact in enumerate(facts, 1))
    elif kind == "summarise":
        passage = writer.sentences([writer.define(topic), *facts])
        return ask.format(passage=passage), block.definition if lang == "zh" else writer.define(topic)
    elif kind == "translate":
        other = "zh" if lang == "en" else "en"
        return ask.format(sentence=block.facts[0]), topic.blocks[other].facts[0]
    else:
        answer = ANSWERS[lang][kind].format(define=writer.define(topic), fact=facts[0], facts=writer.sentences(facts))
    return capitalise(ask.format(term=words.term_mid, group=writer.group(topic))), answer


def _constrained(lang: str, prompt: str, answer: str, constraints: Sequence[str]) -> tuple[str, str]:
    """The prompt with its constraints stated, and the answer made to meet them."""
    for constraint in constraints:
        if constraint == "list" and not answer.startswith("1. "):
            sentences = [s for s in (answer.replace("\n", " ").split(". ") if lang == "en" else answer.split("。")) if s.strip()]
            end = "." if lang == "en" else "。"
            answer = "\n".join(f"{i}. {s.strip().rstrip('.')}{end}" for i, s in enumerate(sentences, 1))
        length = len(answer.split()) if lang == "en" else len(answer)
        if constraint == "length":
            limit = ((length // 10) + 2) * 10
            prompt += CONSTRAINTS[lang]["length"].format(n=limit)
        else:
            prompt += CONSTRAINTS[lang]["list"]
    return prompt, answer


def _record(prompt: str, answer: str, lang: str, tags: dict, quality: float) -> dict:
    return {"lang": lang, "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "quality": round(quality, 2), "generator_tags": tags}


def _prompt(writer: Writer, topic: Topic, topics: Sequence[Topic], corpus: str) -> dict:
    rng = writer.rng
    kind = _draw(rng, FINANCE_KINDS if corpus == "finance" else GENERAL_KINDS)
    ability, family, difficulty, quality = KINDS[kind]
    prompt, answer = _turn(writer, kind, topic, topics)
    constraints = [] if kind in ("translate", "calc") else _constraints(rng)
    prompt, answer = _constrained(writer.lang, prompt, answer, constraints)
    tags = {"ability": ability, "attributes": topic.group, "domain": family if corpus == "finance" else "general",
            "language": writer.lang, "difficulty": "hard" if len(constraints) == 2 else difficulty,
            "constraint": _level(constraints)}
    return _record(prompt, answer, writer.lang, tags, min(1.0, quality + 0.05 * len(constraints) + rng.uniform(-0.05, 0.05)))


def _prompts(kb: KnowledgeBase, seed: int, name: str, proper: frozenset[str]) -> list[dict]:
    """One prompt per training topic and language, of a kind drawn per corpus."""
    records = []
    for corpus in ("finance", "general"):
        rng = stream(seed, f"{name}-{corpus}")
        topics = kb.training_topics(corpus)
        for topic in topics:
            for lang in LANGS:
                records.append(_prompt(Writer(rng, lang, corpus, proper), topic, topics, corpus))
    return records


def _template_repeats(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    rng = stream(seed, "prompt-templates")
    topics = kb.training_topics("finance")
    records = []
    for lang in LANGS:
        for index, (frame, answer) in enumerate(TEMPLATES[lang]):
            for topic in rng.sample(topics, min(TEMPLATE_FILLS, len(topics))):
                writer = Writer(rng, lang, "finance", proper)
                tags = {"ability": "writing", "attributes": topic.group,
                        "domain": "customer_service" if index == 0 else "compliance", "language": lang,
                        "difficulty": "medium", "constraint": "strong"}
                record = _record(frame.format(term=writer.phrasing(topic).term_mid),
                                 answer.format(define=writer.define(topic)), lang, tags, rng.uniform(0.75, 0.9))
                records.append(record | {"planted": "template", "template": f"{lang}-{index}"})
    return records


def _low_quality(rng: random.Random, clean: list[dict], count: int) -> list[dict]:
    """Vague requests, and real prompts cut off after a few words (a paste gone wrong)."""
    records, seen = [], set()
    vague = [(lang, text) for lang in LANGS for text in LOW_QUALITY[lang]]
    while len(records) < count:
        if len(seen) < len(vague):
            lang, prompt = vague[len(seen)]
        else:
            source = rng.choice(clean)
            lang, text = source["lang"], source["messages"][0]["content"]
            prompt = " ".join(text.split()[:3]) if lang == "en" else text[:5]
        if prompt in seen:
            continue
        seen.add(prompt)
        tags = {"ability": "knowledge_qa", "attributes": "daily_life", "domain": "general", "language": lang,
                "difficulty": "easy", "constraint": "none"}
        records.append(_record(prompt, LOW_QUALITY_ANSWER[lang], lang, tags, rng.uniform(0.05, 0.3)) | {"planted": "low_quality"})
    return records


def build_prompt_pool(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    """Prompts on training topics, template repeats, duplicates and low-quality prompts, shuffled, with ids."""
    rng = stream(seed, "prompt-pool")
    clean = _prompts(kb, seed, "prompt-pool", proper)
    records = clean + _template_repeats(kb, seed, proper)
    originals = rng.sample(clean, round(PLANTED["near_dup"] * len(clean)))
    for original in originals:
        lang = original["lang"]
        edited = near_duplicate(rng, lang, original["messages"][0]["content"])
        copy = {**original, "messages": [{"role": "user", "content": edited}, original["messages"][1]]}
        records.append(copy | {"planted": "near_dup", "original": original})
    for original in rng.sample(clean, round(PLANTED["exact_dup"] * len(clean))):
        records.append(dict(original) | {"planted": "exact_dup", "original": original})
    records += _low_quality(rng, clean, round(PLANTED["low_quality"] * len(clean)))
    rng.shuffle(records)
    for index, record in enumerate(records):
        record["id"] = f"prompt-{index:05d}"
    for record in records:
        if "original" in record:
            record["dup_of"] = record.pop("original")["id"]
    return records


def build_prompt_tags(kb: KnowledgeBase, seed: int, proper: frozenset[str]) -> list[dict]:
    """Labelled prompts for the tag classifiers: the pool's generators, another draw (text and tags only)."""
    records = _prompts(kb, seed, "prompt-tags", proper)
    return [{"id": f"tagged-{index:05d}", "text": record["messages"][0]["content"], **record["generator_tags"]}
            for index, record in enumerate(records)]
