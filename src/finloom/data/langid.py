"""Offline language identification: ``py3langid``'s naive-Bayes model ships inside its wheel.

datatrove's ``LanguageFilter`` downloads a fastText model on first use, which fails on a machine
without network; py3langid needs nothing but the installed package. Chinese variants the model
knows (``zh``, ``wuu``, ``yue``) are one language for finloom, so their probabilities are summed
under ``zh``: unsummed, Chinese finance text full of Latin tickers and figures ("贵州茅台(600519.SH)
Q3 EPS 12.5元") splits its probability between them and can come out as ``wuu``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

LANGUAGE_ALIASES = {"wuu": "zh", "yue": "zh"}
UNDETERMINED = "und"

_LETTER = re.compile(r"[^\W\d_]")


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """Best language code (ISO 639-1 where the model has one) and its probability.

    Text without any letter is ``und`` with score 0: the model would spread it evenly.
    """
    if not _LETTER.search(text):
        return UNDETERMINED, 0.0
    merged: dict[str, float] = {}
    for lang, probability in _identifier().rank(text):
        lang = LANGUAGE_ALIASES.get(lang, lang)
        merged[lang] = merged.get(lang, 0.0) + probability
    best = max(merged, key=merged.get)
    return best, merged[best]


class LanguageTagger(BaseFilter):
    """Set ``metadata["lang"]`` and ``metadata["lang_score"]``; optionally keep only some languages.

    With ``keep_languages=None`` every document is forwarded (tagging only). Otherwise a document
    is dropped with reason ``lang_<code>`` when its language is not listed, or ``lang_low_score``
    when it is listed but scored below ``min_score``. Only the first ``max_chars`` characters are
    read: enough for a settled answer, so a long filing costs no more than a short page.
    """

    name = "🌍 language id (py3langid)"

    def __init__(
        self,
        keep_languages: list[str] | None = None,
        min_score: float = 0.5,
        max_chars: int = 1000,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        self.keep_languages = set(keep_languages) if keep_languages is not None else None
        self.min_score = min_score
        self.max_chars = max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        declared = doc.metadata.get("lang")
        lang, score = identify_language(doc.text[: self.max_chars])
        doc.metadata["lang"] = lang
        doc.metadata["lang_score"] = round(score, 4)
        self.stat_update(f"lang_{lang}")
        if declared and declared != lang:
            self.stat_update("declared_lang_differs")
        if self.keep_languages is None:
            return True
        if lang not in self.keep_languages:
            return False, f"lang_{lang}"
        if score < self.min_score:
            return False, "lang_low_score"
        return True
