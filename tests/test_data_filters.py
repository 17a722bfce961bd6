"""Language id and quality/spam filters: tags, reasons, the finance table exemption, starter-corpus rates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter
from datatrove.pipeline.writers import JsonlWriter

import finloom
from finloom.data.filters import (
    WORDS,
    SpamFilter,
    build_quality_filters,
    is_table_line,
    prose_view,
    top_term_share,
)
from finloom.data.langid import LanguageTagger, identify_language

STARTER = Path(finloom.__file__).parent / "starter" / "data"

EN_PROSE = (
    "The bank reported a rise in net interest income for the first half of the year, as loan growth in the "
    "region more than offset a narrower margin. Deposit costs stayed high because customers moved savings into "
    "time deposits, and the board said it expects the margin to stabilise once policy rates begin to fall. "
    "Operating expenses grew more slowly than revenue, so the cost-to-income ratio improved. Credit quality was "
    "stable, with the ratio of impaired loans unchanged from the end of last year. Management also said that "
    "it will keep investing in digital channels and that the capital position leaves room for the dividend."
)
ZH_PROSE = (
    "报告期内，本行净利息收入同比增长，主要得益于大湾区贷款规模的稳步扩大，抵消了净息差收窄带来的影响。"
    "由于客户将活期存款转为定期存款，存款成本维持在较高水平。董事会表示，待政策利率下行后，净息差有望企稳。"
    "营业支出增速低于营业收入增速，成本收入比有所改善。资产质量总体稳定，不良贷款率与上年末持平。"
    "管理层同时表示，将继续加大对数字化渠道的投入，资本充足水平也为维持派息提供了空间。"
)

# An HK-style interim report: English prose, bilingual line items, a table of figures.
EN_BILINGUAL_REPORT = """Harbourview Bank Limited 港景银行有限公司
Interim Report 2024 (extract) 2024年中期报告（摘录）

Financial highlights 财务摘要 (HK$ million 港币百万元)

Item 项目 | 1H 2024 | 1H 2023 | Change 变动
Net interest income 净利息收入 | 12,345.6 | 11,002.1 | +12.2%
Net fee and commission income 手续费及佣金净收入 | 3,210.4 | 3,388.9 | -5.3%
Operating expenses 营业支出 | (5,432.1) | (5,101.7) | +6.5%
Expected credit losses 预期信用损失 | (1,020.3) | (1,245.0) | -18.0%
Profit before tax 税前利润 | 9,103.6 | 8,044.3 | +13.2%
Profit attributable to shareholders 股东应占溢利 | 7,640.2 | 6,788.5 | +12.5%
Earnings per share (HK$) 每股盈利（港元） | 3.82 | 3.39 | +12.7%
Net interest margin 净息差 | 1.82% | 1.95% | -0.13 pp
Cost-to-income ratio 成本收入比 | 34.2% | 35.1% | -0.9 pp
Common equity tier 1 ratio 普通股权一级资本比率 | 15.6% | 15.1% | +0.5 pp

Net interest income rose 12.2% to HK$12,345.6 million, as loan growth in the Greater Bay Area more than \
offset a narrower net interest margin. The margin fell 13 basis points because deposit costs stayed high while \
prime-based lending rates were unchanged.

Operating expenses increased 6.5%, mainly reflecting investment in digital channels, and the cost-to-income \
ratio improved to 34.2%. Expected credit losses were 18.0% lower than a year earlier, as exposures to mainland \
commercial real estate were reduced and recoveries on written-off loans increased.

The Board has declared an interim dividend of HK$1.20 per share, payable on 20 September 2024 to shareholders \
on the register on 6 September 2024."""

# The same bank's Chinese summary as text extraction leaves it: rows separated by single spaces.
ZH_TABLE_REPORT = """港景银行有限公司2024年中期报告（摘要）
合并利润表主要项目（单位：港币百万元）
项目 2024年上半年 2023年上半年 变动
利息收入 25,410.3 22,876.5 11.1%
利息支出 13,064.7 11,874.4 10.0%
净利息收入 12,345.6 11,002.1 12.2%
手续费及佣金收入 3,842.0 4,015.7 -4.3%
手续费及佣金支出 631.6 626.8 0.8%
手续费及佣金净收入 3,210.4 3,388.9 -5.3%
交易净收益 1,105.8 962.3 14.9%
其他营业收入 402.5 377.0 6.8%
营业收入合计 17,064.3 15,730.3 8.5%
营业支出 5,432.1 5,101.7 6.5%
预期信用损失 1,020.3 1,245.0 -18.0%
税前利润 9,103.6 8,044.3 13.2%
所得税 1,463.4 1,255.8 16.5%
股东应占溢利 7,640.2 6,788.5 12.5%
每股盈利（港元） 3.82 3.39 12.7%
净息差 1.82% 1.95% -0.13
成本收入比 34.2% 35.1% -0.9
普通股权一级资本比率 15.6% 15.1% 0.5
报告期内，净利息收入同比增长12.2%至123.46亿港元，大湾区贷款增长抵消了净息差收窄的影响。由于存款成本维持高位而\
最优惠利率未作调整，净息差下降13个基点。营业支出同比增长6.5%，主要用于数字化渠道投入，成本收入比改善至34.2%。
预期信用损失同比下降18.0%，原因是本行压降了内地商业地产敞口，已核销贷款的收回增加。董事会宣派中期股息每股1.20港元，\
将于2024年9月20日派发予2024年9月6日名列股东名册的股东。"""


def _short_id(value) -> str:
    return value[:24] if isinstance(value, str) else str(value)


def _doc(text: str, lang: str | None = None) -> Document:
    return Document(text=text, id="doc", metadata={"lang": lang} if lang else {})


def _first_drop(steps, doc: Document) -> str | None:
    """The reason of the first step that drops ``doc``, or None when every step keeps it."""
    for step in steps:
        result = step.filter(doc)
        if result is not True:
            return result[1]
    return None


@pytest.fixture(scope="module")
def quality_steps():
    return build_quality_filters()


@pytest.fixture(scope="module")
def rules_without_spam():
    return build_quality_filters({"spam": False})


# --- language id -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "lang"),
    [
        (EN_PROSE, "en"),
        (ZH_PROSE, "zh"),
        ("營業收入同比增長，董事會建議派發末期股息每股0.5港元。", "zh"),
        ("NVDA、AAPL、MSFT 三大科技股领涨，纳斯达克指数收涨1.2%，NVDA Q2 revenue $30.0B。", "zh"),
        ("贵州茅台(600519.SH) Q3 EPS 12.5元，ROE 30%，PE 25x，维持买入评级，目标价 2,100 元。", "zh"),
        ("买入 AAPL US Equity 目标价 $250 PE 30x EPS 2025E 7.5 Apple Inc iPhone Services", "zh"),
        ("株式会社は東京に本社を置く日本の企業です。", "ja"),
    ],
    ids=_short_id,
)
def test_language_tags(text, lang):
    doc = _doc(text)
    assert LanguageTagger().filter(doc) is True
    assert doc.metadata["lang"] == lang
    assert 0.5 < doc.metadata["lang_score"] <= 1.0


def test_chinese_variants_are_merged_into_zh():
    """Unmerged, the model calls this ticker-heavy line Wu Chinese; summed with zh and yue it is zh."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    text = "贵州茅台(600519.SH) Q3 EPS 12.5元，ROE 30%，PE 25x，维持买入评级，目标价 2,100 元。"
    assert LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True).classify(text)[0] == "wuu"
    lang, score = identify_language(text)
    assert lang == "zh" and score > 0.9


def test_text_without_letters_is_undetermined():
    assert identify_language("12,345.6 | 11,002.1 | +12.2%") == ("und", 0.0)


def test_language_filter_keeps_listed_languages_with_enough_score():
    tagger = LanguageTagger(keep_languages=["en", "zh"], min_score=0.5)
    assert tagger.filter(_doc(EN_PROSE)) is True
    assert tagger.filter(_doc(ZH_PROSE)) is True
    french = "La banque a publié des résultats semestriels en hausse, portés par la croissance des crédits."
    assert tagger.filter(_doc(french)) == (False, "lang_fr")
    strict = LanguageTagger(keep_languages=["en"], min_score=0.99)
    assert strict.filter(_doc("Moody's downgraded the outlook; the bond fell 2bp.")) == (False, "lang_low_score")


def test_language_id_and_filters_run_offline():
    """No network at run time: sockets refuse to connect, hub access is off."""
    script = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise OSError('network disabled')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "from datatrove.data import Document\n"
        "from finloom.data.langid import LanguageTagger\n"
        "from finloom.data.filters import build_quality_filters\n"
        "doc = Document(text='公司营业收入同比增长12.2%，净利润保持稳定。', id='x', metadata={})\n"
        "LanguageTagger().filter(doc)\n"
        "[step.filter(doc) for step in build_quality_filters()]\n"
        "print(doc.metadata['lang'])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", NO_PROXY="*")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zh"


# --- tokenizer and table rows ----------------------------------------------------------------------

def test_tokenizer_counts_han_characters_as_words():
    assert WORDS.word_tokenize("净利润 | 4,714.7 增长13.6%，COSO框架。Net profit rose.") == [
        "净", "利", "润", "|", "4,714.7", "增", "长", "13.6%", "，", "COSO", "框", "架", "。", "Net", "profit", "rose.",
    ]
    assert WORDS.sent_tokenize("Revenue rose. Costs fell! 收入增长。成本下降！ tail") == [
        "Revenue rose.", "Costs fell!", "收入增长。", "成本下降！", "tail",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "Revenue | 1,234.5 | 1,100.2 | +12.2%",
        "Operating expenses | (5,432.1) | (5,101.7) | +6.5%",
        "营业收入  12,345.67  11,002.10  12.2%",
        "营业收入 12,345.67 11,002.10 12.2%",
        "Net interest margin\t1.82%\t1.95%\t-0.13 pp",
        "| --- | ---: | ---: |",
    ],
)
def test_numeric_table_rows_are_recognised(line):
    assert is_table_line(line)


@pytest.mark.parametrize(
    "line",
    [
        "Home | About us | Products | News | Contact | Login | Register",
        "版权所有 © 2016 保留所有权利 | 隐私政策 | 使用条款 | 网站地图",
        "Revenue rose 12.2% to 1,234.5 million in 2023.",
        "净利息收入同比增长12.2%至123.46亿港元。",
        "Notes to the key figures",
    ],
)
def test_prose_and_navigation_are_not_table_rows(line):
    assert not is_table_line(line)


def test_prose_view_drops_table_rows_and_their_header_only():
    text = "Key figures:\n\nItem | 2024 | 2023\nRevenue | 1,234.5 | 1,100.2\nCosts | 800.0 | 750.1\n\nRevenue grew."
    assert prose_view(text) == "Key figures:\n\n\nRevenue grew."


# --- finance table exemption -----------------------------------------------------------------------

def test_bilingual_report_dropped_by_stock_gopher_kept_by_ours(quality_steps):
    """datatrove's Gopher rule with its published thresholds drops a table-heavy filing; ours keeps it.

    The stock filter gets our whitespace tokenizer (its default, spaCy, is not a finloom dependency).
    """
    assert identify_language(EN_BILINGUAL_REPORT)[0] == "en"
    assert GopherQualityFilter(language=WORDS).filter(_doc(EN_BILINGUAL_REPORT, "en")) == (
        False, "gopher_below_alpha_threshold",
    )
    without_exemption = build_quality_filters({"exempt_tables": False})
    assert _first_drop(without_exemption, _doc(EN_BILINGUAL_REPORT, "en")) == "en_gopher_below_alpha_threshold"
    doc = _doc(EN_BILINGUAL_REPORT, "en")
    assert _first_drop(quality_steps, doc) is None
    assert doc.text == EN_BILINGUAL_REPORT


def test_chinese_table_report_dropped_by_stock_fineweb_kept_by_ours(quality_steps):
    """FineWeb's terminal-punctuation rule, set up for Chinese, drops a report of 19 rows and 2 paragraphs."""
    assert identify_language(ZH_TABLE_REPORT)[0] == "zh"
    stock = FineWebQualityFilter(stop_chars=("。", "！", "？"), short_line_length=12, language=WORDS)
    assert stock.filter(_doc(ZH_TABLE_REPORT, "zh")) == (False, "line_punct_ratio")
    without_exemption = build_quality_filters({"exempt_tables": False})
    assert _first_drop(without_exemption, _doc(ZH_TABLE_REPORT, "zh")) == "zh_line_punct_ratio"
    assert _first_drop(quality_steps, _doc(ZH_TABLE_REPORT, "zh")) is None


# --- quality rules, per language -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "lang", "reason"),
    [
        ("Shares rose on Monday.", "en", "en_gopher_short_doc"),
        ("\n\n".join([EN_PROSE] * 4), "en", "en_dup_para_frac"),
        (EN_PROSE + " The page printed {revenue_label} where the figure should be.", "en", "en_curly_bracket"),
        ("Стоимость акций выросла. " * 40 + EN_PROSE, "en", "en_script_ratio"),
        ("股价上涨。", "zh", "zh_gopher_short_doc"),
        ("\n".join([ZH_PROSE[:60]] * 6) + "\n" + ZH_PROSE, "zh", "zh_dup_line_frac"),
        ("\n".join(ZH_PROSE.replace("，", " ").split("。")), "zh", "zh_line_punct_ratio"),
        (ZH_PROSE + "★" * 30 + "🎉" * 30, "zh", "zh_symbol_ratio"),
        ("".join(ch + "{~^@"[i % 4] if i % 5 == 0 else ch for i, ch in enumerate(ZH_PROSE)), "zh", "zh_symbol_ratio"),
        ("This is an English page about markets. " * 30 + ZH_PROSE[:40], "zh", "zh_script_ratio"),
        ("的" * 20 + "净利润增长" * 40 + "的是在了", "zh", "zh_top_3_gram"),
        (ZH_PROSE + ZH_PROSE[:120], "zh", "zh_duplicated_10_n_grams"),
    ],
    ids=_short_id,
)
def test_quality_rule_drops_with_reason(rules_without_spam, text, lang, reason):
    assert _first_drop(rules_without_spam, _doc(text, lang)) == reason


@pytest.mark.parametrize(("text", "lang"), [(EN_PROSE, "en"), (ZH_PROSE, "zh")], ids=["en", "zh"])
def test_clean_text_passes_every_rule(quality_steps, text, lang):
    assert _first_drop(quality_steps, _doc(text, lang)) is None


def test_rules_only_touch_their_own_language(quality_steps):
    short = "Shares rose on Monday."
    assert _first_drop(quality_steps, _doc(short, "en")) == "en_gopher_short_doc"
    assert _first_drop(quality_steps, _doc(short, "zh")) == "zh_script_ratio"
    assert _first_drop(quality_steps, _doc(short, "fr")) is None
    assert _first_drop(quality_steps, _doc(short)) is None
    zh_rules = [step for step in quality_steps if step.name.endswith("[zh]")]
    assert [step.filter(_doc(short, "en")) for step in zh_rules] == [True] * len(zh_rules)


def test_config_overrides_disables_and_validates():
    default_names = [step.name for step in build_quality_filters()]
    assert default_names[0] == "🚫 spam" and len(default_names) == 10
    steps = build_quality_filters({"spam": False, "languages": {"en": {"c4_quality": False,
                                                                       "gopher_quality": {"min_doc_words": 3,
                                                                                          "min_stop_words": 1}}}})
    assert [step.name for step in steps] == [name for name in default_names[1:] if name != "⛰ C4 Quality [en]"]
    en_gopher = next(step for step in steps if step.name == "🥇 Gopher Quality [en]").inner
    assert (en_gopher.min_doc_words, en_gopher.min_stop_words, en_gopher.max_doc_words) == (3, 1, 100_000)
    with pytest.raises(ValueError, match=r"quality.languages.zh.gopher_quality: unknown option\(s\) \['min_words'\]"):
        build_quality_filters({"languages": {"zh": {"gopher_quality": {"min_words": 3}}}})
    with pytest.raises(ValueError, match="quality.languages.en.perplexity: unknown rule"):
        build_quality_filters({"languages": {"en": {"perplexity": {}}}})
    with pytest.raises(ValueError, match=r"quality.spam: unknown option\(s\) \['words'\]"):
        build_quality_filters({"spam": {"words": []}})


# --- spam ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("CONGRATULATIONS!!! You are today's lucky visitor! Click here to claim your prize. " + EN_PROSE,
         "spam_keywords"),
        (ZH_PROSE + "恭喜您成为幸运访客！免费领取五千元红包，详情加微信：fin888。", "spam_keywords"),
        ("Best online casino bonus! Bet now and get free spins. " + EN_PROSE, "spam_keywords"),
        (" ".join(f"term life insurance {word}" for word in "best cheap online deals free top near 2024".split())
         + " " + EN_PROSE, "keyword_stuffing"),
        ("，".join(f"年金保险{word}" for word in "哪家好 排名 官网 攻略 免费 推荐 最新 2021".split()) + "。" + ZH_PROSE,
         "keyword_stuffing"),
        (EN_PROSE + " Shut up, you stupid idiot. I hope you die.", "toxic"),
        (ZH_PROSE + "你这个脑残，赶紧去死吧。", "toxic"),
    ],
    ids=_short_id,
)
def test_spam_dropped_with_reason(text, reason):
    assert SpamFilter().filter(_doc(text)) == (False, reason)


@pytest.mark.parametrize(
    "text",
    [
        EN_PROSE,
        ZH_PROSE,
        "Macau gross gaming revenue rose 12% as VIP baccarat volumes recovered; buy now, pay later lenders and "
        "sports betting operators also reported results. " + EN_PROSE,
        "监管部门提示，凡是宣传“稳赚不赔”“日赚千元”“躺赚”的理财产品都要警惕。澳门博彩收入同比增长12%。" + ZH_PROSE,
        "The swap rate, the swap spread and the swap curve: a swap is priced off the swap curve. " + EN_PROSE,
        "The customer wrote: 'shut up, you' and hung up; the agent logged the complaint as abusive. " + EN_PROSE,
        "客户在投诉中说“滚蛋”，客服按流程升级处理。" + ZH_PROSE,
    ],
    ids=_short_id,
)
def test_legitimate_finance_text_is_not_spam(text):
    assert SpamFilter().filter(_doc(text)) is True


def test_extra_spam_patterns_are_counted():
    text = "Guaranteed 20% monthly returns on our forex signals. " + EN_PROSE
    assert SpamFilter().filter(_doc(text)) is True
    assert SpamFilter(extra_patterns=[r"(?:guaranteed|risk-free) \d+% monthly"], min_keyword_hits=1).filter(
        _doc(text)) == (False, "spam_keywords")


def test_top_term_share_measures_the_most_repeated_term():
    stuffed = "rice best rice cheap rice online rice near me rice deals rice free".split()
    assert top_term_share(stuffed) == pytest.approx(6 / 13)
    assert top_term_share(EN_PROSE.lower().split()) < 0.2


# --- pipeline and starter corpora ------------------------------------------------------------------

def test_steps_stream_and_write_removed_by_reason(tmp_path):
    docs = [_doc(EN_PROSE), _doc(ZH_PROSE), _doc("股价上涨。"),
            _doc(ZH_PROSE + "恭喜您！点击这里立即领取免费红包，仅剩3份！")]
    def removed():
        return JsonlWriter(str(tmp_path), output_filename="${filter_reason}.jsonl", compression=None)

    data = iter(docs)
    for step in [LanguageTagger(keep_languages=["en", "zh"]), *build_quality_filters(exclusion_writer=removed)]:
        data = step.run(data)
    kept = list(data)
    assert [doc.metadata["lang"] for doc in kept] == ["en", "zh"]
    removed_files = sorted(path.name for path in tmp_path.glob("*.jsonl"))
    assert removed_files == ["spam_keywords.jsonl", "zh_gopher_short_doc.jsonl"]


def _starter_records() -> list[dict]:
    records = []
    for name in ("finance_corpus.jsonl", "general_corpus.jsonl"):
        with open(STARTER / name, encoding="utf-8") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    return records


def test_starter_corpora_spam_recall_and_clean_false_removals(quality_steps):
    tagger = LanguageTagger()
    spam_removed = spam_total = clean_removed = clean_total = 0
    wrong_language = []
    for record in _starter_records():
        doc = _doc(record["text"])
        tagger.filter(doc)
        if doc.metadata["lang"] != record["lang"]:
            wrong_language.append(record["id"])
        removed = _first_drop(quality_steps, doc) is not None
        if record.get("planted") == "spam":
            spam_total += 1
            spam_removed += removed
        elif "planted" not in record:
            clean_total += 1
            clean_removed += removed
    assert wrong_language == []
    assert (spam_total, clean_total) == (26, 720)
    assert spam_removed / spam_total >= 0.9, f"spam recall {spam_removed}/{spam_total}"
    assert clean_removed / clean_total <= 0.02, f"clean removed {clean_removed}/{clean_total}"


def test_starter_quality_labels_good_kept_bad_mostly_removed(quality_steps):
    """Hand-labelled pages: no good page is lost; what survives of the bad ones is word salad for a model."""
    tagger = LanguageTagger()
    removed = {"good": 0, "bad": 0}
    total = {"good": 0, "bad": 0}
    with open(STARTER / "quality_labels.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            doc = _doc(record["text"])
            tagger.filter(doc)
            total[record["label"]] += 1
            removed[record["label"]] += _first_drop(quality_steps, doc) is not None
    assert total == {"good": 130, "bad": 130}
    assert removed["good"] == 0
    assert removed["bad"] / total["bad"] >= 0.85, f"bad removed {removed['bad']}/{total['bad']}"
