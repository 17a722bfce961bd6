"""Fast text classifiers for data quality and finance domain, and the pipeline steps that apply them.

A classifier is hashed n-gram features into a multinomial logistic regression (full-batch Adam
on a sparse matrix): it trains in seconds on a few thousand labelled examples, runs offline on
CPU, and needs only numpy and scipy. Character
1-4-grams carry Chinese (no spaces, so characters and their runs are the words) and the spelling of
English; word unigrams and bigrams add the phrasing of space-separated text. Every n-gram goes to
one of ``2**buckets_log2`` buckets through a fixed hash (code points and ``zlib.crc32`` mixed by
the murmur3 finaliser), never Python's salted ``hash()``, so the same text has the same features
in every process and on every machine.

A trained classifier is a directory: ``model.safetensors`` (weights, bias) and
``classifier.json`` (labels, feature settings, training settings, held-out metrics). No pickle.

``QualityScorer`` and ``DomainScorer`` are the datatrove steps; ``train_starter_classifiers``
builds the three starter models (quality, domain, finance subdomain) from the bundled labels.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from safetensors.numpy import load_file, save_file

from finloom.errors import BadInput
from finloom.files import atomic_dir, atomic_write_json, read_records

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "classifier.json"
FORMAT = "finloom-hashed-ngram-logreg"
QUALITY_DROP_BELOW = 0.5
"""Default ``drop_below`` for ``QualityScorer`` in a recipe: a document the quality model thinks
more likely bad than good is dropped."""

_MASK64 = (1 << 64) - 1
_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)
_CHAR_SALT = 0x9E3779B97F4A7C15
_WORD_SALT = 0xD6E8FEB86659FD93
_SHAPE_SALT = 0xA0761D6478BD642F

_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r" ?\n[\s]*")
# A word is a run of word characters that are not Han, kana or hangul (those are covered by character n-grams).
_WORD = re.compile(r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")


@dataclass(frozen=True)
class FeatureSettings:
    """How a text becomes a hashed feature vector; saved with the model so loading reproduces it."""

    buckets_log2: int = 18
    """Feature vector size is 2**buckets_log2; 18 keeps collisions rare at a few MB per class."""
    char_ngram_min: int = 1
    char_ngram_max: int = 4
    word_ngram_max: int = 2
    """Word unigrams up to word n-grams of this length; 0 turns word features off."""
    shape_ngram_min: int = 3
    shape_ngram_max: int = 5
    """n-grams of character classes (letter case, digit, Han, space, each punctuation mark as itself)."""
    max_chars: int = 10_000
    """Only the first max_chars characters are read: enough to judge a document, bounded cost."""


def _mix(keys: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: spreads every input bit over the bucket bits."""
    keys = keys ^ (keys >> _SHIFT)
    keys = keys * _MIX1
    keys = keys ^ (keys >> _SHIFT)
    keys = keys * _MIX2
    return keys ^ (keys >> _SHIFT)


def normalize_for_features(text: str, max_chars: int) -> str:
    """NFKC, every digit a 0 (figures differ, their shape matters), single spaces, single newlines."""
    text = unicodedata.normalize("NFKC", text[:max_chars])
    return _NEWLINES.sub("\n", _SPACES.sub(" ", _DIGITS.sub("0", text))).strip()


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _hashed_ngrams(tokens: np.ndarray, smallest: int, largest: int, salt: int) -> list[np.ndarray]:
    """64-bit keys of all n-grams (smallest <= n <= largest) of a token-id sequence, salted by family and n."""
    keys, rolling = [], tokens
    for n in range(1, largest + 1):
        if n > 1:
            rolling = rolling[:-1] * _PRIME + tokens[n - 1 :]
        if n >= smallest and len(rolling):
            keys.append(_mix(rolling ^ np.uint64((salt * n) & _MASK64)))
    return keys


def _shapes(codes: np.ndarray) -> np.ndarray:
    """Character classes: A/a for Latin upper/lower case, H for Han and kana; digits, spaces, punctuation as they are."""
    shapes = codes.copy()
    shapes[(codes >= 65) & (codes <= 90)] = ord("A")
    shapes[(codes >= 97) & (codes <= 122)] = ord("a")
    shapes[((codes >= 0x3040) & (codes <= 0x30FF)) | ((codes >= 0x3400) & (codes <= 0x9FFF))
           | ((codes >= 0xF900) & (codes <= 0xFAFF))] = ord("H")
    return shapes


def feature_families(text: str, settings: FeatureSettings = FeatureSettings()) -> list[np.ndarray]:
    """Bucket indices (uint64, one per n-gram occurrence) of each feature family: characters, words, shapes."""
    text = normalize_for_features(text, settings.max_chars)
    lower = text.lower()
    words = np.array([zlib.crc32(word.encode("utf-8")) for word in _WORD.findall(lower)], dtype=np.uint64)
    families = [
        _hashed_ngrams(_code_points(lower), settings.char_ngram_min, settings.char_ngram_max, _CHAR_SALT),
        _hashed_ngrams(words, 1, settings.word_ngram_max, _WORD_SALT),
        _hashed_ngrams(_shapes(_code_points(text)), settings.shape_ngram_min, settings.shape_ngram_max, _SHAPE_SALT),
    ]
    mask = np.uint64((1 << settings.buckets_log2) - 1)
    return [np.concatenate(keys) & mask if keys else np.zeros(0, dtype=np.uint64) for keys in families]


def feature_vector(text: str, settings: FeatureSettings = FeatureSettings()) -> tuple[np.ndarray, np.ndarray]:
    """Sorted bucket indices and values of one text: sublinear counts 1 + log(count), L2-normalised."""
    buckets = np.concatenate(feature_families(text, settings))
    indices, counts = np.unique(buckets, return_counts=True)
    values = 1.0 + np.log(counts)
    if len(values):
        values /= np.linalg.norm(values)
    return indices.astype(np.int64), values.astype(np.float32)


def featurize(texts: list[str], settings: FeatureSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse rows of ``feature_vector`` for a list of texts, as CSR (indptr, indices, values)."""
    indptr = np.zeros(len(texts) + 1, dtype=np.int64)
    all_indices, all_values = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.float32)]
    for row, text in enumerate(texts):
        indices, values = feature_vector(text, settings)
        all_indices.append(indices)
        all_values.append(values)
        indptr[row + 1] = indptr[row] + len(indices)
    return indptr, np.concatenate(all_indices), np.concatenate(all_values)


def _csr(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, columns: int):
    from scipy.sparse import csr_matrix

    return csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, columns))


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class TrainSettings:
    """Full-batch Adam on the L2-regularised mean cross-entropy: deterministic (no batch order), one sparse
    product per step. On the starter labels 100 steps match mini-batch training's held-out accuracy."""

    steps: int = 100
    learning_rate: float = 0.1
    l2: float = 1e-4
    """Weight of 0.5 * ||W||^2 added to the mean cross-entropy."""
    seed: int = 0
    """Seeds the held-out split (the fit itself has no randomness)."""


class TextClassifier:
    """A trained hashed-n-gram logistic regression: ``predict_proba(texts)`` has one column per label."""

    def __init__(self, labels: list[str], weight: np.ndarray, bias: np.ndarray,
                 features: FeatureSettings = FeatureSettings(), info: dict | None = None):
        self.labels = list(labels)
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.features = features
        self.info = info or {}

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        indptr, indices, values = featurize(list(texts), self.features)
        logits = _csr(indptr, indices, values, self.weight.shape[0]) @ self.weight + self.bias
        return _softmax(logits.astype(np.float64)).astype(np.float32)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            save_file({"weight": self.weight, "bias": self.bias}, str(tmp / MODEL_FILE))
            atomic_write_json(tmp / CONFIG_FILE, {"format": FORMAT, "labels": self.labels,
                                                  "features": asdict(self.features), **self.info})
        return out_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> TextClassifier:
        model_dir = Path(model_dir)
        if not (model_dir / CONFIG_FILE).is_file() or not (model_dir / MODEL_FILE).is_file():
            raise BadInput(f"{model_dir} is not a finloom classifier (needs {CONFIG_FILE} and {MODEL_FILE})")
        config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise BadInput(f"{model_dir / CONFIG_FILE}: format is {config.get('format')!r}, expected {FORMAT!r}")
        tensors = load_file(str(model_dir / MODEL_FILE))
        info = {key: value for key, value in config.items() if key not in ("format", "labels", "features")}
        return cls(config["labels"], tensors["weight"], tensors["bias"], FeatureSettings(**config["features"]), info)


def fit_classifier(texts: list[str], labels: list[str], features: FeatureSettings = FeatureSettings(),
                   train: TrainSettings = TrainSettings()) -> TextClassifier:
    """Fit on all the given examples; the same inputs and settings give bit-identical weights.

    Only buckets that occur in the training texts can get a non-zero weight, so the optimisation
    runs over those rows alone (a sparse matrix of the used columns) and they are scattered into
    the full matrix at the end.
    """
    label_names = sorted(set(labels))
    if len(label_names) < 2:
        raise BadInput(f"a classifier needs at least two labels, got {label_names}")
    targets = np.array([label_names.index(label) for label in labels])
    indptr, indices, values = featurize(texts, features)
    used, compact = np.unique(indices, return_inverse=True)
    matrix = _csr(indptr, compact, values.astype(np.float64), len(used))
    one_hot = np.zeros((len(texts), len(label_names)))
    one_hot[np.arange(len(texts)), targets] = 1.0
    weight = np.zeros((len(used), len(label_names)))
    bias = np.zeros(len(label_names))
    moments = [np.zeros_like(weight), np.zeros_like(weight), np.zeros_like(bias), np.zeros_like(bias)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, train.steps + 1):
        residual = (_softmax(matrix @ weight + bias) - one_hot) / len(texts)
        gradients = (matrix.T @ residual + train.l2 * weight, residual.sum(axis=0))
        for param, grad, first, second in ((weight, gradients[0], moments[0], moments[1]),
                                           (bias, gradients[1], moments[2], moments[3])):
            first *= beta1
            first += (1 - beta1) * grad
            second *= beta2
            second += (1 - beta2) * grad * grad
            param -= train.learning_rate * (first / (1 - beta1**step)) / (np.sqrt(second / (1 - beta2**step)) + eps)
    full_weight = np.zeros((1 << features.buckets_log2, len(label_names)), dtype=np.float32)
    full_weight[used] = weight
    return TextClassifier(label_names, full_weight, bias, features,
                          {"training": asdict(train), "n_train": len(texts)})


def classification_metrics(true_labels: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, macro F1 and per-label precision, recall, F1 and support."""
    per_label = {}
    for label in labels:
        true_positive = sum(t == label and p == label for t, p in zip(true_labels, predicted))
        predicted_count = sum(p == label for p in predicted)
        support = sum(t == label for t in true_labels)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                            "support": support}
    correct = sum(t == p for t, p in zip(true_labels, predicted))
    return {
        "accuracy": round(correct / len(true_labels), 4) if true_labels else 0.0,
        "macro_f1": round(float(np.mean([m["f1"] for m in per_label.values()])), 4),
        "per_label": per_label,
        "n": len(true_labels),
    }


def stratified_split(labels: list[str], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, held-out): each label keeps its share, at least one example on each side."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in sorted(set(labels)):
        members = [i for i, value in enumerate(labels) if value == label]
        members = [members[i] for i in rng.permutation(len(members))]
        count = min(len(members) - 1, max(1, round(holdout * len(members)))) if holdout > 0 else 0
        held_out += members[:count]
        train += members[count:]
    return sorted(train), sorted(held_out)


def train_classifier(records: list[dict], label_field: str, out_dir: str | Path, *, text_field: str = "text",
                     seed: int = 0, holdout: float = 0.2, refit: bool = True,
                     features: FeatureSettings = FeatureSettings(), steps: int = TrainSettings.steps,
                     learning_rate: float = TrainSettings.learning_rate, l2: float = TrainSettings.l2) -> dict:
    """Train on ``records`` (dicts with ``text_field`` and ``label_field``), save to ``out_dir``, return metrics.

    Records whose label is missing or null are skipped (so the finance subdomain model trains on
    the subdomain-labelled finance records of the domain file). A stratified ``holdout`` share is
    scored by a model fitted on the rest; with ``refit`` the saved model is then fitted on all
    records, so the metrics describe the recipe and the saved model has seen every example.
    """
    usable = [r for r in records if r.get(label_field) not in (None, "") and isinstance(r.get(text_field), str)]
    if not usable:
        raise BadInput(f"no record has both a text field {text_field!r} and a label field {label_field!r}")
    texts = [r[text_field] for r in usable]
    labels = [str(r[label_field]) for r in usable]
    train = TrainSettings(steps=steps, learning_rate=learning_rate, l2=l2, seed=seed)
    started = time.perf_counter()
    train_ids, held_out_ids = stratified_split(labels, holdout, seed)
    model = fit_classifier([texts[i] for i in train_ids], [labels[i] for i in train_ids], features, train)
    metrics = {"label_field": label_field, "n_records": len(records), "n_skipped": len(records) - len(usable),
               "label_counts": {label: labels.count(label) for label in sorted(set(labels))}}
    if held_out_ids:
        predicted = model.predict([texts[i] for i in held_out_ids])
        metrics["heldout"] = classification_metrics([labels[i] for i in held_out_ids], predicted, model.labels)
    if refit and held_out_ids:
        model = fit_classifier(texts, labels, features, train)
    metrics["n_train"] = model.info["n_train"]
    model.info["metrics"] = metrics
    model.save(out_dir)
    return {**metrics, "labels": model.labels, "train_seconds": round(time.perf_counter() - started, 3),
            "model_dir": str(out_dir)}


def train_starter_classifiers(out_dir: str | Path, seed: int = 0) -> dict:
    """Train the quality, domain and finance subdomain models on the bundled labels into ``out_dir/<name>``.

    Returns ``{name: metrics}``; takes a few seconds on CPU and needs no network.
    """
    from finloom.recipe import STARTER_DATA_DIR

    out_dir = Path(out_dir)
    quality = read_records(STARTER_DATA_DIR / "quality_labels.jsonl", ("text", "label"))
    domain = read_records(STARTER_DATA_DIR / "domain_labels.jsonl", ("text", "label"))
    return {
        "quality": train_classifier(quality, "label", out_dir / "quality", seed=seed),
        "domain": train_classifier(domain, "label", out_dir / "domain", seed=seed),
        "subdomain": train_classifier(domain, "subdomain", out_dir / "subdomain", seed=seed),
    }


class _LazyModels:
    """Models are loaded on first use in the process that runs the step, not when the pipeline is built or pickled."""

    _loaded: dict

    def _model(self, model_dir: str) -> TextClassifier:
        if not hasattr(self, "_loaded"):
            self._loaded = {}
        if model_dir not in self._loaded:
            self._loaded[model_dir] = TextClassifier.load(model_dir)
        return self._loaded[model_dir]

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_loaded"}


class QualityScorer(_LazyModels, BaseFilter):
    """Write ``metadata["quality_score"]`` (probability of ``good_label``); with ``drop_below`` set,
    drop documents scoring below it with reason ``low_quality``."""

    name = "⭐ quality classifier"

    def __init__(self, model_dir: str | Path, drop_below: float | None = None, good_label: str = "good",
                 batch_size: int = 256, exclusion_writer=None):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.model_dir = str(model_dir)
        self.drop_below = drop_below
        self.good_label = good_label

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        model = self._model(self.model_dir)
        scores = model.predict_proba([doc.text for doc in batch])[:, model.labels.index(self.good_label)]
        results = []
        for doc, score in zip(batch, scores.tolist()):
            doc.metadata["quality_score"] = round(score, 4)
            self.stat_update("quality_score", value=score)
            keep = self.drop_below is None or score >= self.drop_below
            results.append(True if keep else (False, "low_quality"))
        return results


class DomainScorer(_LazyModels, BaseFilter):
    """Write ``metadata["finance_prob"]`` from the binary domain model and, with a subdomain model,
    ``metadata["finance_subdomain"]`` / ``["finance_subdomain_prob"]`` (its top label and probability).

    The subdomain is written for every document so the schema is the same for all; it is only
    meaningful where ``finance_prob`` is high, and only those documents are counted in the stats.
    With ``finance_min_prob``, documents from the finance sources (``metadata["domain"] ==
    "finance"``) scoring below it are removed with reason ``off_domain``; other documents are only tagged.
    """

    name = "🏦 domain classifier"

    def __init__(self, domain_model_dir: str | Path, subdomain_model_dir: str | Path | None = None,
                 finance_label: str = "finance", finance_min_prob: float | None = None, batch_size: int = 256,
                 exclusion_writer=None):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.domain_model_dir = str(domain_model_dir)
        self.subdomain_model_dir = str(subdomain_model_dir) if subdomain_model_dir else None
        self.finance_label = finance_label
        self.finance_min_prob = finance_min_prob

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        texts = [doc.text for doc in batch]
        domain_model = self._model(self.domain_model_dir)
        finance = domain_model.predict_proba(texts)[:, domain_model.labels.index(self.finance_label)]
        subdomain_model = self._model(self.subdomain_model_dir) if self.subdomain_model_dir else None
        subdomain_probabilities = subdomain_model.predict_proba(texts) if subdomain_model else None
        results = []
        for row, doc in enumerate(batch):
            finance_prob = float(finance[row])
            doc.metadata["finance_prob"] = round(finance_prob, 4)
            is_finance = finance_prob >= 0.5
            self.stat_update("finance" if is_finance else "general")
            if subdomain_probabilities is not None:
                best = int(subdomain_probabilities[row].argmax())
                doc.metadata["finance_subdomain"] = subdomain_model.labels[best]
                doc.metadata["finance_subdomain_prob"] = round(float(subdomain_probabilities[row, best]), 4)
                if is_finance:
                    self.stat_update(f"subdomain_{subdomain_model.labels[best]}")
            off_domain = (self.finance_min_prob is not None and doc.metadata.get("domain") == "finance"
                          and finance_prob < self.finance_min_prob)
            results.append((False, "off_domain") if off_domain else True)
        return results
