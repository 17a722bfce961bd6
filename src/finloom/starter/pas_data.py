"""(prompt, complement) pairs for training the PAS model, written by this project from its prompt pool.

``pas_complements.jsonl``: about ``PAS_COUNT`` user prompts from ``prompt_pool.jsonl`` (the first user turn),
each with a complement composed from the phrase banks below: a response requirement of the prompt's
category, an optional extension of the intent and a format phrase, in the prompt's language, within
``COMPLEMENT_LENGTH``. The phrases are written to fit every prompt of their category, so a complement never
departs from the intent, and they carry no fact or figure, so it never answers. The report's critic rules
shape the composition: a prompt that is already demanding (explicit constraints, a long text) gets no
extension, and a prompt that states its own limits gets a phrase telling the answerer to keep them instead
of a format phrase of ours that might contradict them.

About ``RAG_COUNT`` records are in RAG mode (``mode: rag``): ``keywords`` holds 3-5 "retrieved keywords"
drawn from the prompt itself, and the complement refers to nothing but them, since in retrieval-augmented
answering the complement must stay within the search keywords. The rest are ``mode: plain``.

Which prompts: the pool's clean ones and at most ``TEMPLATE_REPEATS_KEPT`` of each long task template (the
PAS selection removes duplicates, template repeats and low-quality prompts), spread evenly over the
(category, language) cells the pool has, and none equal to, contained in or a near copy of an evaluation
scenario prompt.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence

from finloom.starter.generate import LANGS, KnowledgeBase, stream
from finloom.starter.kb_schema import SCENARIO_FAMILIES
from finloom.starter.pas_examples import COMPLEMENT_LENGTH, PAS_CATEGORIES
from finloom.starter.rl_prompts import text_length

PAS_COUNT = 300
RAG_COUNT = 30  # split evenly between the languages
RAG_KEYWORDS = (3, 5)
TEMPLATE_REPEATS_KEPT = 3
SKIPPED_PLANTS = ("low_quality", "exact_dup", "near_dup")
# A prompt is a near copy of an evaluation prompt when their character 5-gram sets overlap this much (Jaccard).
NEAR_COPY_JACCARD = 0.5
# Prompts longer than this (words / non-space characters) are demanding already: no extension phrase.
LONG_PROMPT = {"en": 40, "zh": 80}
# Tasks a retrieval step does not serve (by the prompt's ability tag): no RAG-mode records for them.
NO_RAG_ABILITIES = ("translation", "calculation", "coding")
JOIN = {"en": " ", "zh": ""}

# category -> lang -> part -> phrases. "requirement": what this kind of answer must do; "extension": an
# optional widening of the intent; "format": shape and length. No phrase names a fact, a figure or a proper noun.
PHRASES = {
    "knowledge_qa": {
        "en": {"requirement": ["Answer accurately in plain language and make clear what the subject is and why it matters.",
                               "Explain the core idea first, then the points a curious non-specialist would most want to know.",
                               "Keep the explanation factual and accessible, defining any technical word you need to use."],
               "extension": ["Optionally add one everyday example that makes the idea concrete.",
                             "If a common misconception exists, it may be worth correcting briefly."],
               "format": ["Keep it to a short paragraph.", "Keep the reply brief and easy to scan."]},
        "zh": {"requirement": ["请用通俗准确的语言回答，讲清它是什么以及为什么重要。", "请先讲核心含义，再补充普通读者最关心的要点。",
                               "请保持客观准确，出现专业词汇时顺带解释。"],
               "extension": ["可酌情举一个生活中的例子帮助理解。", "如有常见误解，可简要澄清。"],
               "format": ["篇幅简短，一段话即可。", "回答简洁，便于快速阅读。"]},
    },
    "comparison": {
        "en": {"requirement": ["Say briefly what each one is, then set out the main differences side by side.",
                               "Contrast the two on a few clear dimensions and end with a one-line takeaway.",
                               "Explain each item on its own terms before drawing the contrast, keeping the comparison fair."],
               "extension": ["If the two belong to different fields, say so rather than forcing a parallel.",
                             "Optionally note any point they have in common."],
               "format": ["A compact table or two short paragraphs would suit.", "Keep it concise and balanced."]},
        "zh": {"requirement": ["请先分别说明两者各是什么，再对照列出主要区别。", "请从几个清晰的维度对比两者，最后用一句话总结。",
                               "请先各自解释清楚，再进行公平、客观的比较。"],
               "extension": ["如果两者分属不同领域，请直接指出，不必强行类比。", "可顺带说明两者的共同点。"],
               "format": ["可用简短表格或两小段呈现。", "篇幅适中，表述简洁平衡。"]},
    },
    "writing": {
        "en": {"requirement": ["Match the tone and length to the purpose and reader the request implies.",
                               "Write naturally and concretely, with a clear opening and a tidy close.",
                               "Keep the piece focused on its purpose and avoid filler or clichés."],
               "extension": ["A vivid detail or a personal touch may help, if it fits.", "Optionally offer a suitable title."],
               "format": ["Keep it short enough to read in a minute or two.", "Use plain paragraphs without headings."]},
        "zh": {"requirement": ["请根据用途和读者把握语气与篇幅，表达自然得体。", "请写得具体生动，开头清楚，结尾利落。",
                               "请紧扣写作目的，避免空话套话和陈词滥调。"],
               "extension": ["如合适，可加入一个生动的细节。", "可酌情拟一个标题。"],
               "format": ["篇幅不宜过长，一两分钟能读完。", "分段清楚，无需小标题。"]},
    },
    "summarisation": {
        "en": {"requirement": ["Capture the main point and the key supporting details, using only what the text says.",
                               "Condense the passage faithfully, keeping its facts and figures exactly as given.",
                               "Lead with the central idea and drop minor details, adding nothing from outside the text."],
               "extension": ["If the text contains a notable figure or date, it may be worth keeping.",
                             "Optionally close with the passage's overall takeaway in a few words."],
               "format": ["Aim for two or three sentences.", "Keep it much shorter than the original."]},
        "zh": {"requirement": ["请抓住主旨和关键细节，只依据原文内容进行概括。", "请忠实压缩原文，数字和事实保持原样。",
                               "请先点明中心意思，略去次要细节，不添加原文以外的信息。"],
               "extension": ["原文中的关键数字或时间可酌情保留。", "可在最后用一句话点出整体结论。"],
               "format": ["控制在两三句话以内。", "篇幅明显短于原文。"]},
    },
    "translation": {
        "en": {"requirement": ["Render the meaning faithfully and naturally, keeping names, numbers and dates exactly as given.",
                               "Translate the full sentence without adding or dropping information, in fluent idiomatic wording.",
                               "Keep the register of the original and use standard terms for any technical words."],
               "extension": ["If a term has a widely used standard rendering, prefer it.",
                             "Where a phrase is ambiguous, choose the most natural reading."],
               "format": ["Give only the translation, without notes.", "Return just the translated sentence."]},
        "zh": {"requirement": ["请忠实、通顺地译出原意，人名、数字和日期保持准确。", "请完整翻译整句，不增不减，用语地道自然。",
                               "请保持原文的语体，专业词汇采用通行译法。"],
               "extension": ["如术语有通行的标准译名，请优先采用。", "遇到有歧义的表达，请选择最自然的理解。"],
               "format": ["只给出译文，无需附注。", "直接输出译文即可。"]},
    },
    "calculation": {
        "en": {"requirement": ["Set out the method, substitute the given values step by step, and keep units throughout.",
                               "Show the working clearly so each step can be checked, and state the final result with its unit.",
                               "Identify what is asked, write the relevant formula, and compute carefully without skipping steps."],
               "extension": ["Optionally add a quick sanity check of the result.",
                             "A brief note on rounding may help if the result is not exact."],
               "format": ["Put the final answer on its own line.", "Keep the working compact."]},
        "zh": {"requirement": ["请写出解题思路，分步代入已知数据计算，全程注明单位。", "请清楚展示计算过程，便于逐步核对，最后给出带单位的结果。",
                               "请先明确所求，列出相关公式，再仔细计算，不跳步。"],
               "extension": ["可附一个简单的结果验算。", "如结果需要取舍，可简要说明取舍方式。"],
               "format": ["最后单独一行写出结果。", "过程简洁紧凑。"]},
    },
    "advice": {
        "en": {"requirement": ["Offer practical, concrete suggestions the person can act on, with a supportive tone.",
                               "Acknowledge the situation briefly, then give realistic steps ordered by ease or impact.",
                               "Keep the advice balanced and specific, avoiding vague encouragement."],
               "extension": ["Optionally mention when it would be wise to seek professional help.",
                             "A small first step they could take today may be a useful addition."],
               "format": ["A short bulleted list would suit.", "Keep it concise and skimmable."]},
        "zh": {"requirement": ["请给出具体、可操作的建议，语气温和体贴。", "请先简要回应处境，再按难易或效果排序给出可行的做法。",
                               "建议要具体、平衡，避免空泛的鼓励。"],
               "extension": ["可提示在什么情况下应寻求专业人士帮助。", "可补充一个今天就能开始的小行动。"],
               "format": ["可分点列出，条理清晰。", "篇幅简短，条理清晰。"]},
    },
    "reasoning": {
        "en": {"requirement": ["Reason step by step from the stated conditions only, and make each inference explicit.",
                               "Lay out the given facts, work through them in order, and check the conclusion against every condition.",
                               "Explain the logic clearly rather than just stating a result, and avoid outside assumptions."],
               "extension": ["Optionally point out any trap or ambiguity in how the question is worded.",
                             "If more than one reading is possible, say which one you adopt."],
               "format": ["Keep the chain of reasoning short and numbered.", "End with the conclusion in one sentence."]},
        "zh": {"requirement": ["请只依据题目给出的条件逐步推理，每一步推断都写清楚。", "请先整理已知条件，按顺序推导，最后逐条核对结论。",
                               "请讲清推理逻辑，而不是只给结论，不引入题外假设。"],
               "extension": ["可指出题目表述中容易误解的地方。", "如题意存在多种理解，请说明采用哪一种。"],
               "format": ["推理步骤简短，可编号。", "最后用一句话给出结论。"]},
    },
    "coding": {
        "en": {"requirement": ["Provide working, readable code with brief comments on the key steps.",
                               "Explain the approach before the code and keep the solution as simple as the task allows.",
                               "Handle the obvious edge cases and say which assumptions the code makes."],
               "extension": ["Optionally mention the time complexity or a simple test.",
                             "An alternative approach may be noted in one sentence."],
               "format": ["Put the code in a fenced code block.", "Keep the prose around the code short."]},
        "zh": {"requirement": ["请给出可运行、易读的代码，并对关键步骤加简短注释。", "请先说明思路再给代码，方案在满足需求的前提下尽量简单。",
                               "请处理明显的边界情况，并说明代码做了哪些假设。"],
               "extension": ["可简要说明时间复杂度或给出一个简单测试。", "可用一句话提及替代方案。"],
               "format": ["代码放在代码块中。", "代码之外的说明保持简短。"]},
    },
    "role_play": {
        "en": {"requirement": ["Stay in character throughout, with a voice and vocabulary that fit the role.",
                               "Play the role convincingly and respond to the user as the character would.",
                               "Keep the persona consistent and the exchange engaging, without breaking character."],
               "extension": ["Optionally end with a line that invites the user to continue.",
                             "Small details of the setting may add colour if they fit."],
               "format": ["Keep each turn fairly short, like real dialogue.", "Write in the first person."]},
        "zh": {"requirement": ["请始终保持角色身份，语气和用词符合人物设定。", "请投入扮演，以角色的方式回应用户。",
                               "请保持人设一致，对话生动，不要跳出角色。"],
               "extension": ["结尾可留一句引导用户继续互动的话。", "可适当加入符合情境的细节增添氛围。"],
               "format": ["每次回复不宜过长，像真实对话一样。", "用第一人称表达。"]},
    },
    "knowledge_theory": {
        "en": {"requirement": ["Explain the concept precisely in plain terms and say where it is used in financial practice.",
                               "Give an accurate explanation a newcomer to finance could follow, defining any jargon.",
                               "Cover what the term means and why practitioners or regulators care about it, staying factual."],
               "extension": ["Optionally add a simple illustration with made-up figures.",
                             "A brief note on a term it is often confused with may help."],
               "format": ["Keep it to a short paragraph.", "Keep it concise and jargon-light."]},
        "zh": {"requirement": ["请用通俗准确的语言解释这一概念，并说明它在金融实务中的用途。", "请以金融新人能理解的方式讲清含义，专业术语顺带解释。",
                               "请说明概念含义以及从业者或监管为何关注它，表述客观准确。"],
               "extension": ["可用虚构的数字举一个简单例子。", "可简要提及容易与之混淆的概念。"],
               "format": ["篇幅简短，一段话即可。", "表述简洁，少用术语。"]},
    },
    "compliance": {
        "en": {"requirement": ["Keep to the general principles of the relevant rules and avoid anything that reads as legal advice.",
                               "Stay factual and neutral, and make clear that the institution's policies and the regulator's rules prevail.",
                               "Focus on what staff need to do or avoid, in clear and formal language."],
               "extension": ["Optionally mention whom staff should consult when unsure.",
                             "A short practical example may help, with no real client details."],
               "format": ["Keep it brief and well organised.", "A short checklist would suit."]},
        "zh": {"requirement": ["请围绕相关规定的一般原则作答，避免给出法律意见式的结论。", "请客观中立地表述，并说明以所在机构制度和监管规定为准。",
                               "请聚焦员工应当做什么、不能做什么，语言清晰规范。"],
               "extension": ["可提示遇到不确定情况时应向谁咨询。", "可举一个简短的实务例子，不涉及真实客户信息。"],
               "format": ["篇幅简短，条理清楚。", "可用简短清单呈现。"]},
    },
    "document_generation": {
        "en": {"requirement": ["Follow the standard layout for this kind of document, with a clear heading and the usual sections.",
                               "Write in formal, precise language and use placeholders for any names, dates or figures not given.",
                               "Make the purpose clear at the top and keep every statement accurate and verifiable."],
               "extension": ["Optionally add a contact line or signature block.",
                             "A short note on when the document takes effect may be useful."],
               "format": ["Keep it to a single page.", "Use short sections with headings."]},
        "zh": {"requirement": ["请按此类文书的规范格式撰写，标题清楚，要素齐全。", "请用正式严谨的语言，未给出的名称、日期或数字用占位符表示。",
                               "请开头点明目的，每一处表述都准确、可核实。"],
               "extension": ["可附上联系方式或落款。", "可简要注明生效时间。"],
               "format": ["篇幅控制在一页以内。", "分节撰写，层次清楚。"]},
    },
    "customer_service": {
        "en": {"requirement": ["Reply politely and clearly, explaining in plain words without giving personal investment advice.",
                               "Open courteously, answer the client's question simply, and avoid promises the institution cannot keep.",
                               "Keep a warm, professional tone and explain things the way a patient service officer would."],
               "extension": ["Optionally invite the client to get in touch with further questions.",
                             "A brief pointer to where they can read more may help."],
               "format": ["Keep it short, like a real service reply.", "A few short sentences are enough."]},
        "zh": {"requirement": ["请礼貌清晰地回复，用通俗的话解释，不提供个性化投资建议。", "请先礼貌致意，再简明回答客户问题，不作无法兑现的承诺。",
                               "请保持亲切专业的语气，像耐心的客服人员一样说明。"],
               "extension": ["可在结尾欢迎客户继续咨询。", "可提示客户查阅相关资料的途径。"],
               "format": ["篇幅简短，像真实的客服回复。", "几句话即可，语气亲切。"]},
    },
    "risk_control": {
        "en": {"requirement": ["Identify the main risk points and the controls a team would use, in practical terms.",
                               "Focus on what could go wrong, how to spot it early, and how to respond.",
                               "Keep the answer practical for a risk or operations team, putting the most material points first."],
               "extension": ["Optionally mention which indicators are worth monitoring.",
                             "A note on escalation or record keeping may help."],
               "format": ["A short bulleted list would suit.", "Keep it concise and practical."]},
        "zh": {"requirement": ["请梳理主要风险点及团队可采取的控制措施，注重实务。", "请说明可能出现的问题、如何及早识别以及如何应对。",
                               "请从风控或运营团队的角度作答，优先讲最重要的要点。"],
               "extension": ["可提及值得持续监测的指标。", "可补充上报或留痕方面的提示。"],
               "format": ["可分点列出，条理清晰。", "表述简洁务实。"]},
    },
    "text_processing": {
        "en": {"requirement": ["Work only from the text given, keeping its facts, figures and terminology intact.",
                               "Process the text faithfully without adding outside information or opinions.",
                               "Preserve the meaning and the professional terms of the original exactly."],
               "extension": ["Where a financial term has a standard form, use it consistently.",
                             "Optionally keep the original order of the points."],
               "format": ["Return only the processed text, without commentary.", "Keep the output concise."]},
        "zh": {"requirement": ["请只依据给出的文字进行处理，事实、数字和术语保持不变。", "请忠实处理原文，不添加额外信息或个人观点。",
                               "请准确保留原文的含义和专业术语。"],
               "extension": ["金融术语如有规范表述，请统一使用。", "可保持原文要点的先后顺序。"],
               "format": ["只输出处理结果，不加评论。", "输出简洁清楚。"]},
    },
    "analysis_research": {
        "en": {"requirement": ["Explain each concept precisely, then analyse how they differ in purpose, scope and use.",
                               "Give a structured, evidence-based analysis and keep the conclusions measured.",
                               "Set out the key points of each item clearly before comparing them, staying objective."],
               "extension": ["If the two belong to different areas of finance, say so plainly.",
                             "Optionally note where the two are commonly confused in practice."],
               "format": ["A compact table or two short paragraphs would suit.", "Keep it concise and well structured."]},
        "zh": {"requirement": ["请先准确解释各个概念，再分析它们在目的、范围和用途上的差异。", "请进行有条理、有依据的分析，结论审慎。",
                               "请先分别讲清各自要点，再客观地加以比较。"],
               "extension": ["如果两者分属金融的不同领域，请直接指出。", "可提及实务中两者容易混淆的地方。"],
               "format": ["可用简短表格或两小段呈现。", "篇幅适中，结构清晰。"]},
    },
    "investment_wealth": {
        "en": {"requirement": ["Explain the relevant considerations in balanced terms without recommending specific products.",
                               "Relate the answer to goals, time horizon and risk tolerance, keeping it general.",
                               "Stay objective and educational, and avoid promising returns."],
               "extension": ["Optionally suggest questions the investor could ask an adviser.",
                             "A note on diversification or liquidity may help if relevant."],
               "format": ["Close with a brief risk reminder.", "Keep it concise and jargon-light."]},
        "zh": {"requirement": ["请客观平衡地说明需要考虑的因素，不推荐具体产品。", "请结合投资目标、期限和风险承受能力作答，保持一般性。",
                               "请保持客观、以普及知识为主，不承诺收益。"],
               "extension": ["可建议投资者向顾问咨询时可以问哪些问题。", "如相关，可提及分散投资或流动性。"],
               "format": ["结尾附简短的风险提示。", "表述简洁，少用术语。"]},
    },
    "marketing": {
        "en": {"requirement": ["Keep the message accurate and appealing to ordinary customers, without exaggeration or promised returns.",
                               "Highlight what the product or concept means for the customer in plain, friendly language.",
                               "Write persuasively but truthfully, avoiding superlatives and claims that cannot be checked."],
               "extension": ["Optionally end with a gentle invitation to learn more.",
                             "A relatable everyday angle may help, if it fits."],
               "format": ["Keep it short and easy to read.", "Include a brief risk reminder where investment is involved."]},
        "zh": {"requirement": ["请面向普通客户，表述准确、有吸引力，不夸大，不承诺收益。", "请用亲切平实的语言突出它对客户的意义。",
                               "请有说服力但实事求是，避免“最”“第一”等绝对化用语。"],
               "extension": ["结尾可加一句引导客户进一步了解的话。", "如合适，可从日常生活的角度切入。"],
               "format": ["篇幅简短，通俗易读。", "涉及投资时请附简短的风险提示。"]},
    },
    "data_calculation": {
        "en": {"requirement": ["Write the formula, substitute the given figures step by step, and state the result with its unit.",
                               "Show each calculation step clearly so it can be checked, keeping units and percentages consistent.",
                               "Identify the inputs, apply the standard formula, and compute carefully without skipping steps."],
               "extension": ["Optionally add one sentence on what the result means for the client.",
                             "A brief note on rounding may help."],
               "format": ["Put the final figure on its own line.", "Keep the working compact."]},
        "zh": {"requirement": ["请写出公式，分步代入已知数据计算，并给出带单位的结果。", "请清楚展示每一步计算，便于核对，单位和百分比保持一致。",
                               "请先明确已知条件，套用相应公式，仔细计算，不跳步。"],
               "extension": ["可用一句话说明结果对客户的含义。", "如需取舍，可简要说明取舍方式。"],
               "format": ["最后单独一行写出结果。", "过程简洁紧凑。"]},
    },
}
# In place of a format phrase when the prompt states its own limits: keep them, add none.
KEEP_LIMITS = {"en": ["Respect every limit and instruction the prompt already sets.",
                      "Stay within the length and layout the prompt asks for."],
               "zh": ["请严格遵守题目已提出的各项要求。", "请遵守题目对篇幅和格式的要求。"]}
# RAG mode: the complement names only the retrieved keywords.
RAG_FRAMES = {
    "en": ["Base the answer only on the retrieved material about {keywords}, and bring in nothing beyond these points.",
           "Use only what the search returned for {keywords}; if it leaves something open, say so rather than adding other sources.",
           "Stay within the retrieved keywords {keywords} and answer the question from them alone."],
    "zh": ["请仅依据检索到的关于{keywords}的资料作答，不引入这些要点之外的信息。",
           "请只使用与{keywords}相关的检索结果，资料未覆盖的内容请如实说明，不要补充其他来源。",
           "请围绕检索关键词{keywords}作答，不超出这些关键词的范围。"],
}

# Keyword extraction: the knowledge base's terms found in the prompt (what a search index would know), then
# runs of content words between stop words, punctuation and numbers. The stop lists hold function words, common
# verbs and the instruction words of the pool's prompt templates.
EN_STOP_WORDS = frozenset("""
a an the and or but nor of to in on at by for with from into onto about as is are was were be been being it its
this that these those there their they them he she his her we our you your i me my what which who whom whose when
where why how does do did done can could should would will shall may might must not no than then so such also
very more most much many some any each every other another both either one two three after before during over
under between within without through per via if while because since until up down out off only just still even
same own like has have had having need needs needed make makes made take takes took taken get gets got give gives
gave given keep keeps kept lie lies lay run runs ran set sets put puts used uses using based named fixed built
called known described refers refer referred means meaning mean term terms simple simply usually often around
first last new main certain several various whether well tell gist text following passage summarise
summarize translate sentence please chinese english write short reply client customer asked ask draft introduce
introducing introduction product retail investors ordinary customers sentences explain explains key points point
important facts view watch dealing team matters matter answer words numbered list confuse different differ
difference emailed email dear thank use less became become becomes learns learn travels travel
developed develop attributed passing linked link shows show shown includes include including
""".split())
ZH_STOP = ("请", "什么是", "是什么意思", "是什么", "什么", "有哪两点最值得了解", "有哪些要点", "应注意什么", "有什么区别", "有何不同",
           "有什么不同", "我经常把", "搞混", "它们", "一位客户询问", "客户来信咨询", "写一段简短的回复", "起草一封回复", "写一段面向普通投资者的简短介绍",
           "用两句话向普通客户介绍", "从风控角度看", "团队在处理", "概括下面这段话", "提炼这段文字的要点", "翻译成英文", "把这句话",
           "回答不超过", "分点作答", "解释一下", "说出关于", "两个要点", "所谓", "简单地说", "就是", "是指", "指的是", "可以", "通常",
           "一般", "可能", "因此", "因为", "所以", "这些", "这个", "这种", "一种", "一个", "以及", "或者", "并且", "而且", "其中", "如果",
           "但是", "不过", "已经", "需要", "应当", "主要", "之一", "之间", "用于", "由于", "对于", "关于", "通过", "按照", "根据",
           "解释", "说明", "掌握", "一位", "左右", "首届", "用礼貌", "必须", "同意", "引发", "举行", "发展", "成为", "形成",
           "正在", "准备", "本季度", "写一段", "为什么", "不要出现任何", "存在", "现在", "在", "至",
           "的", "和", "与", "及", "或", "并", "且", "其", "等", "是", "了", "也", "都", "被", "把", "它")
# A number with the unit or counter written after it ("1215年", "42.195公里" keeps the unit's text out of keywords).
ZH_NUMBER = r"\d[\d.,]*(?:年|月|日|号|个|元|万|亿|岁|米|公里|千米|厘米|%)?"
ZH_KEYWORD_CHARS = (2, 6)
EN_KEYWORD_WORDS = 3


def pas_category(tags: dict) -> str:
    """A prompt's PAS category: its scenario family when it has one, else its ability."""
    return tags["domain"] if tags["domain"] in SCENARIO_FAMILIES else tags["ability"]


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text.lower())


def _shingles(compact: str, size: int = 5) -> set[str]:
    return {compact[i:i + size] for i in range(max(1, len(compact) - size + 1))}


class NearCopies:
    """Tells whether a text is a near copy of any of the ``texts``: equal to one, contained in one or holding
    one (whitespace and case aside), or sharing ``NEAR_COPY_JACCARD`` of its character 5-grams with one."""

    def __init__(self, texts: Sequence[str]):
        self.texts = [(compact, _shingles(compact)) for compact in map(_compact, texts)]

    def __contains__(self, text: str) -> bool:
        compact = _compact(text)
        shingles = _shingles(compact)
        return any(compact in other or other in compact
                   or len(shingles & other_shingles) / len(shingles | other_shingles) >= NEAR_COPY_JACCARD
                   for other, other_shingles in self.texts)


def term_forms(kb: KnowledgeBase) -> dict[str, list[str]]:
    """Every knowledge-base term per language, with its parenthesised abbreviation split off, longest first.
    Single Chinese characters are left out: they occur inside too many other words."""
    forms: dict[str, set[str]] = {lang: set() for lang in LANGS}
    for topic in kb.finance + kb.general:
        for lang, block in topic.blocks.items():
            forms[lang].add(block.term)
            named = re.fullmatch(r"(.+?)\s*[（(]([^）)]+)[）)]", block.term)
            if named:
                forms[lang].update(named.groups())
    return {lang: sorted((term for term in terms if lang == "en" or len(term) > 1), key=lambda term: (-len(term), term))
            for lang, terms in forms.items()}


def _term_spans(prompt: str, lang: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Non-overlapping spans of knowledge-base terms in the prompt, longest terms first."""
    spans: list[tuple[int, int]] = []
    for term in terms:
        if lang == "en":  # whole words; only the first letter's case may differ ("WHO" is not "who")
            pattern = rf"(?<![\w-])(?i:{re.escape(term[0])}){re.escape(term[1:])}(?![\w-])"
        else:
            pattern = re.escape(term)
        for match in re.finditer(pattern, prompt):
            if all(match.end() <= start or match.start() >= end for start, end in spans):
                spans.append(match.span())
    return sorted(spans)


def _phrases(text: str, lang: str) -> list[str]:
    """Runs of content words between stop words, punctuation and numbers, in order of appearance."""
    if lang == "zh":
        pattern = "|".join(map(re.escape, sorted(ZH_STOP, key=len, reverse=True)))
        low, high = ZH_KEYWORD_CHARS
        return [chunk for chunk in re.split(rf"{ZH_NUMBER}|{pattern}|[^\w]+|[A-Za-z0-9_]+", text) if low <= len(chunk) <= high]
    phrases, run = [], []
    for token in re.findall(r"[A-Za-z][A-Za-z'-]*|\S", text):
        word = token.lower()
        if token[0].isalpha() and word not in EN_STOP_WORDS and len(token) > 2 and not word.endswith("ly"):
            run.append(token)
            continue
        while run and run[-1].lower().endswith("ed"):  # a verb closing the run ("Edward Jenner developed")
            run.pop()
        phrases.append(run)
        run = []
    phrases.append(run)
    return [" ".join(run) for run in phrases if 0 < len(run) <= EN_KEYWORD_WORDS]


def prompt_keywords(prompt: str, lang: str, terms: Sequence[str]) -> list[str]:
    """Keywords of the prompt as it writes them, none inside another, best first: the knowledge-base terms it
    names, then content phrases, the most repeated first, multi-word ones (English) before single words."""
    spans = _term_spans(prompt, lang, terms)
    named = [prompt[start:end] for start, end in spans]
    rest, cursor = [], 0
    for start, end in spans:
        rest.append(prompt[cursor:start])
        cursor = end
    phrases = _phrases("\n".join(rest + [prompt[cursor:]]), lang)
    counts = Counter(phrase.lower() for phrase in phrases)
    ranked = sorted(dict.fromkeys(phrases), key=lambda p: (-counts[p.lower()], -len(p.split()), phrases.index(p)))
    keywords: list[str] = []
    for keyword in named + ranked:  # a keyword inside another, or holding one, adds nothing
        if not any(keyword.lower() in kept.lower() or kept.lower() in keyword.lower() for kept in keywords):
            keywords.append(keyword)
    return keywords


def _fits(text: str, lang: str) -> bool:
    low, high = COMPLEMENT_LENGTH[lang]
    return low <= text_length(text, lang) <= high


def _first_fitting(rng: random.Random, options: list[list[str]], lang: str) -> str | None:
    """A random combination (one phrase per option list, in order) within ``COMPLEMENT_LENGTH``."""
    combinations = list(itertools.product(*options))
    rng.shuffle(combinations)
    return next((text for text in (JOIN[lang].join(parts) for parts in combinations) if _fits(text, lang)), None)


def compose_complement(rng: random.Random, category: str, lang: str, demanding: bool, limited: bool) -> str:
    """Requirement, extension (not for ``demanding`` prompts), format (the prompt's own limits when ``limited``)."""
    bank = PHRASES[category][lang]
    parts = [bank["requirement"]] + ([] if demanding else [bank["extension"]])
    parts.append(KEEP_LIMITS[lang] if limited else bank["format"])
    text = _first_fitting(rng, parts, lang)
    if text is None:
        raise ValueError(f"no complement of {category}/{lang} fits {COMPLEMENT_LENGTH[lang]}")
    return text


def _keyword_list(keywords: Sequence[str], lang: str) -> str:
    if lang == "zh":
        return "、".join(f"“{k}”" for k in keywords[:-1]) + f"和“{keywords[-1]}”"
    return ", ".join(f'"{k}"' for k in keywords[:-1]) + f' and "{keywords[-1]}"'


def rag_complement(rng: random.Random, category: str, lang: str, keywords: Sequence[str], limited: bool) -> str | None:
    """A RAG frame naming ``keywords`` and a format phrase, or None if no combination fits the length bounds."""
    frames = [frame.format(keywords=_keyword_list(keywords, lang)) for frame in RAG_FRAMES[lang]]
    return _first_fitting(rng, [frames, KEEP_LIMITS[lang] if limited else PHRASES[category][lang]["format"]], lang)


def _eligible(pool: Sequence[dict], evaluation: NearCopies) -> list[dict]:
    """Clean pool prompts and a few of each template, none a near copy of an evaluation prompt, distinct."""
    kept, seen, templates = [], set(), {}
    for record in pool:
        prompt = record["messages"][0]["content"]
        if record.get("planted") in SKIPPED_PLANTS or prompt in seen:
            continue
        if "template" in record:
            templates[record["template"]] = templates.get(record["template"], 0) + 1
            if templates[record["template"]] > TEMPLATE_REPEATS_KEPT:
                continue
        if prompt in evaluation:
            continue
        seen.add(prompt)
        kept.append(record)
    return kept


def _spread(rng: random.Random, records: Sequence[dict], count: int) -> list[dict]:
    """Up to ``count`` records, taken one per (category, language) cell in turn, each cell in a shuffled order."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        cells.setdefault((pas_category(record["generator_tags"]), record["lang"]), []).append(record)
    order = sorted(cells, key=lambda cell: (PAS_CATEGORIES.index(cell[0]), cell[1]))
    for cell in order:
        rng.shuffle(cells[cell])
    taken: list[dict] = []
    while len(taken) < count and any(cells[cell] for cell in order):
        for cell in order:
            if cells[cell] and len(taken) < count:
                taken.append(cells[cell].pop())
    return taken


def _pair(rng: random.Random, record: dict, terms: Sequence[str] | None) -> dict | None:
    """The record's (prompt, complement) pair: in RAG mode when given the knowledge base's ``terms`` (None when
    the prompt has too few keywords or no complement with them fits), else plain."""
    prompt, lang, tags = record["messages"][0]["content"], record["lang"], record["generator_tags"]
    category = pas_category(tags)
    limited = tags["constraint"] != "none"
    pair = {"id": record["id"], "category": category, "lang": lang, "prompt": prompt}
    if terms is None:
        demanding = tags["constraint"] == "strong" or text_length(prompt, lang) > LONG_PROMPT[lang]
        return pair | {"mode": "plain", "complement": compose_complement(rng, category, lang, demanding, limited)}
    found = prompt_keywords(prompt, lang, terms)
    low, high = RAG_KEYWORDS
    if len(found) < low:
        return None
    for size in range(rng.randint(low, min(high, len(found))), low - 1, -1):
        keywords = sorted(found[:size], key=prompt.find)
        complement = rag_complement(rng, category, lang, keywords, limited)
        if complement is not None:
            return pair | {"mode": "rag", "keywords": keywords, "complement": complement}
    return None


def build_pas_complements(kb: KnowledgeBase, pool: Sequence[dict], scenarios: Sequence[dict], seed: int) -> list[dict]:
    """``PAS_COUNT`` pool prompts spread over categories and languages, up to ``RAG_COUNT`` of them in RAG mode
    (the first in each language of a task retrieval serves and with enough keywords), shuffled."""
    rng = stream(seed, "pas-complements")
    terms = term_forms(kb)
    chosen = _spread(rng, _eligible(pool, NearCopies([s["prompt"] for s in scenarios])), PAS_COUNT)
    rag_left = {lang: RAG_COUNT // len(LANGS) for lang in LANGS}
    records = []
    for record in chosen:
        lang = record["lang"]
        pair = None
        if rag_left[lang] and record["generator_tags"]["ability"] not in NO_RAG_ABILITIES:
            pair = _pair(rng, record, terms[lang])
            rag_left[lang] -= pair is not None
        records.append(pair or _pair(rng, record, None))
    rng.shuffle(records)
    return records
