"""Golden few-shot examples for the prompt augmentation system (PAS), written by this project.

PAS (Baichuan Alignment) is a small model that reads a user prompt and writes short complementary
guidance appended to it before the main model answers: the scenario's response requirements,
non-mandatory extensions of the intent, format constraints. It never answers the prompt. The report
generates its training complements from 4-5 golden examples per category; these are finloom's, four per
category (two English, two Chinese), hand-written for ``pas_fewshot.jsonl``. Users replace that file with
their own in the same layout (``category``, ``lang``, ``prompt``, ``complement``).

What every complement here does, and what the generated ones (``finloom.starter.pas_data``) copy: it
speaks to the answerer ("Explain ..., cover ..., keep it ..."), stays in the prompt's language, keeps to
``COMPLEMENT_LENGTH``, adds little to a prompt that is already demanding, and states no fact or figure that
would answer the question. All people, firms and products in the finance prompts are invented.

Categories: a prompt's scenario family (``finloom.starter.kb_schema.SCENARIO_FAMILIES``) when it has one,
else its ability tag (``finloom.prompts.tags.VALUES["ability"]``); ``PAS_CATEGORIES`` lists the abilities,
then the families, in those modules' order.
"""

from __future__ import annotations

from finloom.starter.kb_schema import SCENARIO_FAMILIES

ABILITIES = ("knowledge_qa", "comparison", "writing", "summarisation", "translation", "calculation", "advice",
             "reasoning", "coding", "role_play")
PAS_CATEGORIES = ABILITIES + SCENARIO_FAMILIES
# Complement length: words (English) or non-space characters (Chinese), about the report's thirty words.
COMPLEMENT_LENGTH = {"en": (15, 45), "zh": (25, 80)}

# category -> [(lang, prompt, complement)]
GOLDEN = {
    "knowledge_qa": [
        ("en", "Why does the sky look blue during the day but red at sunset?",
         "Explain the underlying physical mechanism in plain language, link it to both times of day, and keep it to "
         "one or two short paragraphs; an everyday analogy is welcome but optional."),
        ("en", "How do vaccines actually train the immune system?",
         "Describe the process step by step for a curious adult without a biology background, define any technical "
         "term you use, and optionally close with a sentence on why some vaccines need boosters."),
        ("zh", "为什么冬天南方的室内常常比北方更冷？",
         "请从自然条件和生活设施两个角度解释原因，语言通俗，篇幅适中；可顺带给出一两条改善室内保暖的实用建议。"),
        ("zh", "长城到底有多长？",
         "请说明常见说法的来源和统计口径的差异，语言简洁客观；如有必要，可提醒读者不同资料给出的数字可能不一致。"),
    ],
    "comparison": [
        ("en", "What's the difference between a virus and a bacterium?",
         "Contrast them on a few clear dimensions such as structure, reproduction and treatment, end with a one-line "
         "takeaway, and consider a small table if it makes the differences easier to scan."),
        ("en", "Compare reading on paper with reading on a screen for long texts.",
         "Weigh both options on comprehension, comfort and convenience, note where the evidence is mixed rather than "
         "overstating it, and close with a balanced suggestion for different kinds of readers."),
        ("zh", "油电混合车和纯电动车有什么区别？",
         "请从使用成本、续航和补能方式等维度对比，保持中立，可用表格呈现；最后可按不同用车场景给出简短的选择建议。"),
        ("zh", "比较一下高铁和飞机在中短途出行上的优劣。",
         "请从时间、费用、舒适度和准点情况等方面比较，说明距离不同时结论可能变化，语言简练，避免绝对化判断。"),
    ],
    "writing": [
        ("en", "Write a short thank-you note to my neighbour who watered my plants while I was away.",
         "Keep it warm, personal and brief, mention the specific favour, and suit the tone to a friendly neighbour "
         "rather than a formal letter; offering to return the favour is a nice optional touch."),
        ("en", "Write a poem about the first snow of winter.",
         "Focus on concrete sensory images and a quiet mood, keep it short enough to read aloud, and use either free "
         "verse or a simple rhyme scheme consistently; a title is optional."),
        ("zh", "帮我写一段毕业典礼上学生代表发言稿的开头。",
         "开头应真诚、有感染力，兼顾感谢师长和回顾同窗情谊，篇幅适中便于朗读；可加入一句呼应校训的话，但避免空洞口号。"),
        ("zh", "写一个关于猫和月亮的睡前小故事。",
         "故事要温暖简单，适合幼儿理解，情节有起有落并以安静的结尾收束；语言口语化，几分钟内能读完。"),
    ],
    "summarisation": [
        ("en", "Summarise this notice from my landlord: \"Hi all, the water will be shut off on Thursday from 9am to "
               "1pm for pipe repairs. Please store some water in advance. The lift will also be out of service that "
               "morning. Sorry for the inconvenience.\"",
         "Keep only what residents must know or act on, preserve the timing exactly as written, and present it as two "
         "or three short bullet points without adding anything the notice does not say."),
        ("en", "Give me a summary of these meeting notes: The team agreed to move the product launch to next month "
               "because testing found two critical bugs. Marketing will pause the campaign. Engineering owns the "
               "fixes and QA will retest. Next check-in is Friday.",
         "Lead with the main decision, then say who owns each follow-up, keep the facts unchanged, and make it "
         "shorter than the notes themselves; skip greetings and commentary."),
        ("zh", "请概括下面这段话的主要意思：近年来，越来越多的年轻人选择周末去周边城市短途旅行。相比长途旅行，短途游花费少、"
               "时间灵活，也能缓解工作压力。不过，热门景点节假日人流拥挤，也让部分游客体验不佳。",
         "请用一两句话提炼核心观点，兼顾正反两方面，不添加原文没有的信息或评价，语言简洁客观。"),
        ("zh", "用三句话总结：研究表明，成年人长期睡眠不足会削弱注意力和记忆力，还可能增加肥胖和心血管疾病风险。专家建议固定作息"
               "时间，睡前一小时减少使用电子屏幕，并保持卧室安静、黑暗。",
         "请严格按三句话的要求组织内容，覆盖危害与建议两部分，保留原文的关键信息，不做扩展解读。"),
    ],
    "translation": [
        ("en", "Translate into French: \"The meeting has been moved to next Tuesday; please confirm if you can still "
               "attend.\"",
         "Render the meaning faithfully in a polite business register, keep the day reference unchanged, and give "
         "only the translation without notes or alternative versions."),
        ("en", "How would you say \"break a leg\" in Chinese?",
         "Treat it as an idiom rather than translating word for word, offer the most natural equivalent with a brief "
         "note on when it is used, and keep the reply short."),
        ("zh", "把这句话翻译成英文：“本店商品售出后七天内可无理由退换。”",
         "请译成自然地道的英文告示语，准确保留期限与条件，不增删内容，只给出译文即可。"),
        ("zh", "请把“Where there's a will, there's a way.”翻译成中文，要求通顺。",
         "请兼顾字面意思与中文惯用表达，给出一个常用的对应说法，必要时附一句简短说明，避免冗长解释。"),
    ],
    "calculation": [
        ("en", "If I drive 240 km at an average of 80 km/h and then 150 km at 100 km/h, how long is the whole trip?",
         "Work through each leg separately, show the formula and units at every step, then add the parts and state "
         "the total time clearly; converting the result into hours and minutes is optional."),
        ("en", "A recipe for 4 people needs 300 g of flour. How much flour do I need for 10 people?",
         "Show the scaling step explicitly, keep the units consistent, and give the final quantity on its own line; a "
         "brief note on rounding for kitchen measurements is welcome but optional."),
        ("zh", "一个长方形花坛长12米、宽5米，四周铺一圈1米宽的小路，小路的面积是多少？",
         "请写出解题思路和公式，分步计算并注明单位，最后单独一行给出结果；可附一句检验方法，不要展开无关内容。"),
        ("zh", "商品原价260元，先打八折再减30元，最后要付多少钱？",
         "请按优惠的先后顺序分步列式计算，保留单位“元”，最后明确写出实付金额，过程简洁即可。"),
    ],
    "advice": [
        ("en", "I keep procrastinating on my thesis. Any tips?",
         "Offer a handful of practical, concrete strategies a student can start today, acknowledge that motivation "
         "dips are common, keep the tone encouraging rather than preachy, and format the tips as a short list."),
        ("en", "How can I prepare for my first marathon in six months?",
         "Give a phased, realistic plan built on gradual progression, rest and injury prevention, suggest checking "
         "with a doctor before starting, and keep it skimmable with short headings or bullets."),
        ("zh", "刚搬到新城市，不认识什么人，怎么才能尽快交到朋友？",
         "请给出几条具体可行、成本不高的建议，语气温和体贴，兼顾内向者的感受；可分点列出，避免空泛的鸡汤式表述。"),
        ("zh", "孩子不爱读书怎么办？",
         "请先提示原因需要结合孩子的年龄和兴趣判断，再给出家长可操作的方法，语气平和不指责，条理清晰，篇幅适中。"),
    ],
    "reasoning": [
        ("en", "If all bloops are razzies and all razzies are lazzies, are all bloops definitely lazzies?",
         "Reason step by step from the premises alone, state clearly whether the conclusion follows and why, and avoid "
         "importing outside assumptions; describing a simple diagram is optional."),
        ("en", "Three friends each had one of tea, coffee or juice. Ann didn't have tea and Ben had coffee. What did "
               "Carl have?",
         "Lay out each clue, eliminate options one at a time, and confirm that the final assignment satisfies every "
         "condition; keep the explanation brief and structured."),
        ("zh", "一个人说“我正在说谎”，这句话是真的还是假的？",
         "请分情况推理并指出每种假设导致的结果，语言清楚；可简要提及这类问题的背景，但不必展开。"),
        ("zh", "甲比乙高，丙比甲高，丁比丙矮但比甲高，谁最高？",
         "请逐条整理已知条件，按顺序推导出完整的高矮排序，最后核对每个条件都成立，过程简洁清楚。"),
    ],
    "coding": [
        ("en", "Write a Python function that checks whether a string is a palindrome.",
         "Provide a clean, readable function with a docstring, decide explicitly how to treat case, spaces and "
         "punctuation, include a couple of example calls, and mention the time complexity briefly."),
        ("en", "Why does my JavaScript loop print the same number every time when I use setTimeout inside it?",
         "Explain why it happens before showing a fix, give a minimal corrected snippet, and keep the explanation "
         "focused; mentioning an alternative fix in one sentence is optional."),
        ("zh", "用SQL查询每个部门工资最高的员工。",
         "请先说明假设的表结构，再给出查询语句并解释关键步骤，注意工资并列最高的情况；代码放在代码块中，说明保持简洁。"),
        ("zh", "Python里列表和元组有什么区别，什么时候该用哪个？",
         "请从可变性、性能和典型用途等方面说明，配简短的代码示例，最后给出选择建议，不必深入底层实现。"),
    ],
    "role_play": [
        ("en", "Pretend you are a medieval innkeeper and greet me as a weary traveller.",
         "Stay in character throughout, use period-flavoured but readable language, keep the greeting lively and "
         "short, and leave an opening for the traveller to reply."),
        ("en", "Act as a strict job interviewer and ask me questions for a marketing role.",
         "Ask one question at a time and wait for the answer, keep a professional, demanding tone, vary the question "
         "types, and give brief feedback only when the user asks for it."),
        ("zh", "你现在是一名古代的说书人，给我讲讲“草船借箭”的开场。",
         "请保持说书人的口吻和节奏，语言生动有画面感，可加入说书常用的套语，开场点到为止，留下悬念。"),
        ("zh", "请扮演我的健身教练，督促我今天完成训练。",
         "请始终以教练身份说话，语气积极但不过分严厉，给出清晰的当日目标和鼓励，并提醒量力而行、注意安全。"),
    ],
    "knowledge_theory": [
        ("en", "What is duration in bond investing?",
         "Define the concept precisely, explain what practitioners use it for, and keep it accessible to a retail "
         "investor; optionally add a simple illustration using made-up figures."),
        ("en", "Explain the going-concern assumption in accounting.",
         "Give a clear definition, say in general terms when preparers or auditors question it and why that matters "
         "to readers of the statements, and keep it concise and free of jargon where possible."),
        ("zh", "什么是存款准备金率？",
         "请给出准确定义，说明它的作用机制和对市场的一般影响，语言通俗易懂，可举一个简化的例子帮助理解。"),
        ("zh", "保险中的“可保利益”是什么意思？",
         "请解释概念含义和设立原因，结合财产险与人身险说明适用上的差异，篇幅简短，避免堆砌法条原文。"),
    ],
    "compliance": [
        ("en", "Our wealth team at Northbay Securities wants to send a client a performance chart of one of our funds. "
               "What compliance points should we check first?",
         "Focus on disclosure, fairness and suitability concerns in general terms, present them as a checklist, and "
         "note that firm policy and the regulator's rules take precedence; avoid definitive legal conclusions."),
        ("en", "Draft an internal reminder for staff at Harbourline Bank about accepting gifts from clients.",
         "Keep it clear and firm but courteous, state the principle, what to do when offered a gift and whom to ask, "
         "and keep it short enough to read on a single screen."),
        ("zh", "客户经理能否在微信上向客户推荐理财产品？需要注意哪些合规问题？",
         "请从适当性管理、信息披露和留痕要求等角度梳理要点，说明以所在机构制度和监管规定为准，不下绝对化结论，可分点列出。"),
        ("zh", "一位客户的资金频繁分拆转账，柜员应该怎么处理？",
         "请按发现、核实、上报的顺序说明处理步骤，兼顾保密要求和与客户沟通的分寸，语言规范，条理清晰。"),
    ],
    "document_generation": [
        ("en", "Draft the minutes of Harbourline Bank's credit committee meeting that approved a working-capital loan "
               "to a manufacturer, Delta Forge Ltd.",
         "Use a standard minutes layout with attendees, agenda item, discussion, decision and conditions, put "
         "placeholders where facts are missing, keep the language formal, and do not invent figures."),
        ("en", "Write a notice to policyholders of Summit Mutual Insurance announcing new opening hours for the claims "
               "hotline.",
         "Use a formal notice structure with a clear heading, a placeholder for the effective date, what changes and "
         "the other contact channels; keep it short and reassuring, ending with a courteous apology."),
        ("zh", "帮我写一份青松基金管理公司（虚构）关于调整旗下基金申购费率的公告。",
         "请按正式公告格式撰写，包含标题、调整内容、生效日期和咨询方式等要素，具体数值用占位符表示，语言严谨规范。"),
        ("zh", "起草一份华岭银行某网点临时停业的客户告知书。",
         "请写明停业原因、期间安排和替代办理渠道，日期与地址用占位符，语气诚恳简洁，结尾致歉并留出联系电话的位置。"),
    ],
    "customer_service": [
        ("en", "A customer says her debit card was kept by a Riverton Bank cash machine on Sunday. Write our reply.",
         "Open with empathy, explain the next steps and how to keep the account safe, set expectations on timing "
         "without promising exact dates, and keep it polite and short."),
        ("en", "How should I respond to a policyholder who is angry that his claim is taking too long?",
         "Suggest a calm, empathetic reply that acknowledges the frustration, explains what is still needed and how "
         "the process works, and offers a concrete follow-up channel, without admitting fault or making promises."),
        ("zh", "客户投诉信用卡被多收了年费，请帮我写一段客服回复。",
         "请先致歉并表示理解，说明核实流程和处理时限的一般安排，不承诺具体结果，语气真诚专业，篇幅简短。"),
        ("zh", "一位老年客户不会用手机银行转账，打电话来求助，客服该怎么说？",
         "请用耐心、口语化的表达分步骤引导，提醒防范诈骗、保护验证码，必要时建议到网点办理，避免使用专业术语。"),
    ],
    "risk_control": [
        ("en", "What early-warning signals should a bank watch in its small-business loan portfolio?",
         "Group the signals by where they come from, explain briefly why each matters, keep the list focused rather "
         "than exhaustive, and optionally suggest how to prioritise follow-up."),
        ("en", "Kestrel Securities saw a spike in margin calls this week. What should its risk team do?",
         "Outline immediate actions and follow-up reviews in order of urgency, cover client communication and limit "
         "checks, and keep the advice general since the firm's positions are unknown."),
        ("zh", "如何识别信用卡套现行为？",
         "请从交易特征、商户特征和客户行为等角度列出识别要点，说明需要结合多项信号综合判断，避免以单一特征下定论，分点作答。"),
        ("zh", "保险公司如何防范团体意外险中的虚假理赔？",
         "请覆盖承保前、理赔中和事后核查几个环节，给出可操作的控制措施，语言专业简练；可补充一句数据共享的作用。"),
    ],
    "text_processing": [
        ("en", "Extract the company names, amounts and dates from this text: \"On 3 March, Bluefield Capital agreed to "
               "buy a 20% stake in Lantern Foods for 45 million yuan, with closing expected by 30 June.\"",
         "Return the items in a small table with one field per column, copy every value exactly as written, and do not "
         "infer anything the text does not state."),
        ("en", "Rewrite this clause in plain English: \"The Insurer shall not be liable for any loss arising directly "
               "or indirectly from wilful misconduct of the Insured.\"",
         "Keep the legal meaning intact while using short everyday words, address the reader directly, and use one or "
         "two sentences; do not add exceptions the clause does not contain."),
        ("zh", "把下面这段话改写得更通俗：本行有权根据监管要求调整账户服务费收费标准，并提前公告。",
         "请保持原意不变，改成普通客户一看就懂的口语表达，不增加原文没有的承诺或条件，一两句话即可。"),
        ("zh", "从下面的新闻中提取关键信息：华岭银行（虚构）宣布，将于下月起下调部分定期存款利率，调整幅度在0.1至0.2个百分点之间。",
         "请按机构、事项、时间、幅度等要素逐项列出，信息以原文为准，不做推断和评论，格式简洁清晰。"),
    ],
    "analysis_research": [
        ("en", "Alder Life reports a solvency ratio of 180% and Brookstone Life one of 240%. What does that tell us "
               "about the two insurers?",
         "Explain what the metric measures and what the gap does and does not show, note which other indicators a "
         "fair view would need, keep the tone analytical, and avoid investment recommendations."),
        ("en", "What should I look at when analysing a bank's annual report?",
         "Organise the factors into a few clear groups, say briefly what to look for and why, keep it to a concise "
         "structured overview, and optionally note common warning signs for a beginner."),
        ("zh", "分析一下利率下行对银行净息差的影响。",
         "请从资产端和负债端分别分析传导机制，说明影响程度取决于哪些条件，语言专业，结论审慎，不涉及具体个股推荐。"),
        ("zh", "青松基金（虚构）旗下一只产品近三年跑输业绩基准，原因可能有哪些？",
         "请从多个可能的维度梳理原因，说明需要哪些数据来验证，避免下定论，语气客观，不构成投资建议。"),
    ],
    "investment_wealth": [
        ("en", "I'm 30, have some savings and want to start investing. Where should I begin?",
         "Clarify which personal details would change the advice, outline general principles rather than specific "
         "products, keep it encouraging and jargon-light, and close with a brief risk reminder."),
        ("en", "Is it a good idea to put all my money in one fund because it did well last year?",
         "Address the reasoning behind the question, explain the relevant risks in balanced terms without naming "
         "real products, respect the user's own choice, and finish with a short risk disclaimer."),
        ("zh", "我有一笔闲钱，想在定期存款和货币基金之间选，怎么考虑？",
         "请从流动性、收益稳定性和风险等角度帮助用户比较，提示结合自身资金用途决定，不推荐具体产品，结尾附风险提示。"),
        ("zh", "退休老人适合买什么样的理财产品？",
         "请先强调风险承受能力与流动性需求，给出一般性的配置思路而非具体产品，语气稳妥，提醒警惕高收益诱惑，并附风险提示。"),
    ],
    "marketing": [
        ("en", "Write a social-media post promoting the new mobile app of Greenway Bank.",
         "Keep it upbeat and concise, highlight user benefits rather than technical features, include a clear call to "
         "action, and avoid superlatives or claims the bank cannot substantiate; emojis are optional."),
        ("en", "Create a tagline for SafeWing, a travel insurance product from Summit Mutual.",
         "Offer a few short options in different tones, keep each memorable and truthful, avoid implying guaranteed "
         "cover, and add a one-line rationale for the strongest option if helpful."),
        ("zh", "为华岭银行（虚构）新推出的储蓄卡写一段朋友圈宣传文案。",
         "文案要简洁有亲和力，突出对用户的实际好处，避免“最”“第一”等绝对化用语和未经证实的承诺，可带一句行动号召。"),
        ("zh", "给一只虚构的稳健型债券基金写宣传语，面向中老年客户。",
         "请用平实稳重的语言突出产品定位，不暗示保本或承诺收益，语句简短易记，并在文末附上规范的风险提示。"),
    ],
    "data_calculation": [
        ("en", "A loan of 200,000 yuan at 4.2% annual interest is repaid in equal monthly instalments over 5 years. "
               "What is the monthly payment?",
         "State the annuity formula, convert the annual rate and term to monthly terms, substitute step by step, and "
         "give the payment rounded to the cent on a final line with its unit."),
        ("en", "Maple Growth Fund's NAV went from 1.25 to 1.40 while its benchmark rose 8%. Did it outperform, and "
               "by how much?",
         "Compute the fund's return first, then compare it with the benchmark, show each step with units, and state "
         "the conclusion in one clear sentence; mentioning fees is optional."),
        ("zh", "某公司净利润3000万元，总股本5000万股，每股收益是多少？",
         "请写出计算公式，代入数据分步计算，结果注明单位并保留两位小数，最后用一句话给出结论。"),
        ("zh", "一张面值100元、票面利率5%的债券以95元买入，当期收益率是多少？",
         "请先写出当期收益率的计算公式，再代入数值分步计算，保留适当的小数位并标明百分号，过程简洁。"),
    ],
}


def build_pas_fewshot() -> list[dict]:
    """``pas_fewshot.jsonl``'s records: the golden examples in ``PAS_CATEGORIES`` order."""
    return [{"category": category, "lang": lang, "prompt": prompt, "complement": complement}
            for category in PAS_CATEGORIES for lang, prompt, complement in GOLDEN[category]]
