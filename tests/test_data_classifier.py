"""Quality and domain classifiers: deterministic features, training, safetensors round trip, pipeline steps, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from datatrove.data import Document

from conftest import finloom_cli
from finloom.data.classifier import (
    DomainScorer,
    QualityScorer,
    TextClassifier,
    feature_vector,
    fit_classifier,
    stratified_split,
    train_classifier,
)
from finloom.files import read_records
from finloom.recipe import STARTER_DATA_DIR

GOOD = ["The central bank raised its policy rate by 25 basis points to curb inflation.",
        "Bond prices fall when market interest rates rise, because fixed coupons become less attractive.",
        "An insurer sets aside reserves to pay the claims it expects on policies already written.",
        "央行上调政策利率二十五个基点，以抑制通胀。", "债券价格与市场利率反向变动。", "保险公司为已承保保单计提准备金。"]
BAD = ["click here click here win free iphone now now now", "buy cheap pills cheap pills best price best price",
       "!!! $$$ >>> free spins casino bonus <<< $$$ !!!", "点击这里免费领取红包点击这里免费领取", "加微信领取福利加微信领取福利",
       "home | about | contact | login | register | home | about"]


def test_features_are_the_same_in_another_process():
    text = "Bond yields rose 12 bp; 债券收益率上升。"
    indices, values = feature_vector(text)
    code = ("import json; from finloom.data.classifier import feature_vector; "
            f"i, v = feature_vector({text!r}); print(json.dumps([i.tolist(), v.tolist()]))")
    other = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert other[0] == indices.tolist()
    assert np.allclose(other[1], values)
    assert np.isclose(np.linalg.norm(values), 1.0)
    # Digits are folded: figures differ, their shape does not.
    assert feature_vector("rate 5.25%")[0].tolist() == feature_vector("rate 3.75%")[0].tolist()


def test_fit_separates_training_data_and_is_bit_reproducible():
    texts, labels = GOOD + BAD, ["good"] * len(GOOD) + ["bad"] * len(BAD)
    model = fit_classifier(texts, labels)
    again = fit_classifier(texts, labels)
    assert np.array_equal(model.weight, again.weight) and np.array_equal(model.bias, again.bias)
    probabilities = model.predict_proba(texts)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.predict(texts) == labels
    assert model.labels == ["bad", "good"]


def test_save_and_load_round_trip_without_pickle(tmp_path):
    model = fit_classifier(GOOD + BAD, ["good"] * len(GOOD) + ["bad"] * len(BAD))
    model.save(tmp_path / "clf")
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["classifier.json", "model.safetensors"]
    loaded = TextClassifier.load(tmp_path / "clf")
    probe = ["Interest rates and bond prices move in opposite directions.", "free spins click here"]
    assert np.array_equal(loaded.predict_proba(probe), model.predict_proba(probe))
    (tmp_path / "not").mkdir()
    from finloom.errors import BadInput

    with pytest.raises(BadInput, match="is not a finloom classifier"):
        TextClassifier.load(tmp_path / "not")


def test_stratified_split_keeps_label_shares():
    labels = ["a"] * 50 + ["b"] * 10
    train, held_out = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + held_out) == list(range(60))
    assert [labels[i] for i in held_out].count("a") == 10 and [labels[i] for i in held_out].count("b") == 2


def test_train_classifier_skips_unlabelled_and_reports_heldout(tmp_path):
    records = [{"text": t, "label": "good"} for t in GOOD] + [{"text": t, "label": "bad"} for t in BAD]
    records += [{"text": "no label here"}, {"text": "null label", "label": None}]
    metrics = train_classifier(records, "label", tmp_path / "q", seed=0, holdout=0.34)
    assert metrics["n_skipped"] == 2 and metrics["n_records"] == 14
    assert metrics["label_counts"] == {"bad": 6, "good": 6}
    assert metrics["heldout"]["n"] == 4  # round(0.34 * 6) = 2 per label
    assert metrics["n_train"] == 12  # refit on every labelled record
    saved = json.loads((tmp_path / "q" / "classifier.json").read_text())
    assert saved["metrics"]["heldout"] == metrics["heldout"]


@pytest.fixture(scope="module")
def starter_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("starter_classifiers")
    quality = read_records(STARTER_DATA_DIR / "quality_labels.jsonl", ("text", "label"))
    domain = read_records(STARTER_DATA_DIR / "domain_labels.jsonl", ("text", "label"))
    metrics = {"quality": train_classifier(quality, "label", folder / "quality"),
               "domain": train_classifier(domain, "label", folder / "domain"),
               "subdomain": train_classifier(domain, "subdomain", folder / "subdomain")}
    return folder, metrics


def test_starter_classifiers_are_accurate_on_heldout_labels(starter_models):
    _, metrics = starter_models
    assert metrics["quality"]["heldout"]["accuracy"] >= 0.9
    assert metrics["domain"]["heldout"]["accuracy"] >= 0.95
    assert metrics["subdomain"]["heldout"]["accuracy"] >= 0.6  # nine sub-domains, chance is 0.11
    assert len(metrics["subdomain"]["labels"]) == 9


def test_quality_scorer_scores_and_drops_below_threshold(starter_models, tmp_path):
    folder, _ = starter_models
    corpus = read_records(STARTER_DATA_DIR / "general_corpus.jsonl", ("text",))
    report = next(r for r in corpus if r["kind"] == "report")
    spam = next(r for r in corpus if r["kind"] == "spam")
    docs = [Document(text=report["text"], id="report"), Document(text=spam["text"], id="spam")]
    scorer = QualityScorer(folder / "quality", drop_below=0.5)
    kept = list(scorer.run(iter(docs)))
    assert [doc.id for doc in kept] == ["report"]
    assert 0.5 <= kept[0].metadata["quality_score"] <= 1
    assert scorer.stats["dropped_low_quality"].total == 1
    scored_only = list(QualityScorer(folder / "quality", drop_below=None).run(
        iter([Document(text=spam["text"], id="spam")])))
    assert scored_only[0].metadata["quality_score"] < 0.5


def test_domain_scorer_tags_subdomain_and_drops_off_domain_finance_only(starter_models):
    folder, _ = starter_models
    finance_text = "保险公司收取保费，承担被保险人的风险，并按合同约定赔付理赔款项。保险费率由精算师根据出险概率厘定。"
    general_text = "The river flows past the old mill, where children feed the ducks on summer evenings."
    docs = [Document(text=finance_text, id="f", metadata={"domain": "finance"}),
            Document(text=general_text, id="g-as-finance", metadata={"domain": "finance"}),
            Document(text=general_text, id="g", metadata={"domain": "general"})]
    kept = list(DomainScorer(folder / "domain", folder / "subdomain", finance_min_prob=0.5).run(iter(docs)))
    assert [doc.id for doc in kept] == ["f", "g"]
    assert kept[0].metadata["finance_prob"] > 0.5 and kept[1].metadata["finance_prob"] < 0.5
    assert kept[0].metadata["finance_subdomain"] == "insurance"


def test_cli_trains_a_classifier_and_names_missing_files(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"text": t, "label": "good"}) + "\n" for t in GOOD)
                      + "".join(json.dumps({"text": t, "label": "bad"}) + "\n" for t in BAD) + "{broken\n",
                      encoding="utf-8")
    # a console 40 columns wide: the counts stay on one line however long the path (logs are grepped)
    done = finloom_cli("data", "train-classifier", str(labels), "--out", str(tmp_path / "clf"), "--holdout", "0.34",
                       env={"COLUMNS": "40"})
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'clf'}: 12 examples, 1 malformed lines skipped" in done.stderr
    assert "held-out accuracy" in done.stderr
    assert TextClassifier.load(tmp_path / "clf").labels == ["bad", "good"]
    missing = finloom_cli("data", "train-classifier", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "labels file not found" in missing.stderr
