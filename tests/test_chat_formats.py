"""The chat stages read what users bring from LLaMA-Factory and axolotl: ShareGPT, Alpaca, TRL's preference forms,
from JSONL, a JSON array, Parquet or a saved ``datasets`` folder; each layout gives the same training rows."""

from __future__ import annotations

import json

import pytest

from finloom.errors import BadInput
from finloom.llm.chat_data import load_conversations, load_preferences, to_messages, to_preference
from finloom.recipe import ChatSource

CONVERSATIONS = [
    {"system": "Be brief.", "history": [["What is a bond?", "A debt security."]],
     "instruction": "And a share?", "input": "", "output": "Part ownership of a company."},
    {"instruction": "Summarise the text.", "input": "Rates rose by 25 bp in June.", "output": "Rates went up in June."},
]
MESSAGES = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a bond?"},
     {"role": "assistant", "content": "A debt security."}, {"role": "user", "content": "And a share?"},
     {"role": "assistant", "content": "Part ownership of a company."}],
    [{"role": "user", "content": "Summarise the text.\n\nRates rose by 25 bp in June."},
     {"role": "assistant", "content": "Rates went up in June."}],
]
SHAREGPT = [
    {"system": "Be brief.", "conversations": [
        {"from": "human", "value": "What is a bond?"}, {"from": "gpt", "value": "A debt security."},
        {"from": "human", "value": "And a share?"}, {"from": "gpt", "value": "Part ownership of a company."}]},
    {"conversations": [{"role": "user", "content": "Summarise the text.\n\nRates rose by 25 bp in June."},
                       {"role": "assistant", "content": "Rates went up in June."}]},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_each_layout_reads_into_the_same_messages():
    assert [to_messages(r) for r in CONVERSATIONS] == MESSAGES  # alpaca, detected
    assert [to_messages(r, "sharegpt") for r in SHAREGPT] == MESSAGES
    assert [to_messages({"messages": m}) for m in MESSAGES] == MESSAGES


def test_sharegpt_and_alpaca_copies_give_identical_training_rows(tiny_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    from finloom.llm.chat_template import tokenize_with_assistant_mask
    from finloom.llm.loading import load_tokenizer

    tokenizer = load_tokenizer(tiny_run / "sft" / "model")
    (tmp_path / "alpaca.json").write_text(json.dumps(CONVERSATIONS), encoding="utf-8")  # LLaMA-Factory's JSON array
    pq.write_table(pa.Table.from_pylist([{"messages": m} for m in MESSAGES]), tmp_path / "messages.parquet")
    Dataset.from_list(SHAREGPT).save_to_disk(str(tmp_path / "sharegpt_saved"))
    sources = {"alpaca": ChatSource(path="alpaca.json"), "sharegpt": ChatSource(path="sharegpt_saved", format="sharegpt"),
               "messages": ChatSource(path="messages.parquet")}
    rows = {}
    for name, source in sources.items():
        rows[name] = load_conversations([source], lambda p: tmp_path / p, tmp_path / f"{name}_rejects.jsonl", "sft",
                                        prepare=lambda row: tokenize_with_assistant_mask(tokenizer, row["messages"], 256))
    assert rows["alpaca"] == rows["sharegpt"] == rows["messages"] and len(rows["alpaca"]) == 2


def test_malformed_records_are_rejected_with_their_reason(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [
        SHAREGPT[0], {"conversations": [{"from": "robot", "value": "hi"}]}, {"instruction": "Q", "input": ""},
        {"text": "just text"}, {"conversations": [{"from": "human", "value": "Only a question"}]}])
    rows = load_conversations([ChatSource(path=str(path))], lambda p: tmp_path / p, tmp_path / "rejects.jsonl", "sft")
    assert [r["messages"] for r in rows] == [MESSAGES[0]]
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reasons == ["sharegpt: turn 0 is from 'robot'; expected one of ['assistant', 'bard', 'chatgpt', 'gpt', "
                       "'human', 'model', 'system', 'user']",
                       "alpaca: instruction and output must be strings",
                       "no conversation: expected messages, conversations (ShareGPT) or instruction / output (Alpaca)",
                       "last message must be from the assistant"]


def test_preference_forms_read_into_the_same_pairs(tmp_path):
    prompt = [{"role": "user", "content": "Explain duration."}]
    chosen = [{"role": "assistant", "content": "Price sensitivity to yields."}]
    rejected = [{"role": "assistant", "content": "No idea."}]
    explicit = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    implicit = {"chosen": prompt + chosen, "rejected": prompt + rejected}  # TRL's implicit prompt
    strings = {"prompt": "Explain duration.", "chosen": "Price sensitivity to yields.", "rejected": "No idea."}
    scored = {**explicit, "score_chosen": 8.5, "score_rejected": 2.0}  # UltraFeedback's
    assert to_preference(explicit) == to_preference(implicit) == to_preference(strings) == explicit
    path = _jsonl(tmp_path / "prefs.jsonl", [explicit, implicit, strings, scored,
                                               {**explicit, "score_chosen": "high"},
                                               {"chosen": chosen, "rejected": rejected}])
    rows = load_preferences([ChatSource(path=str(path))], lambda p: tmp_path / p, tmp_path / "rejects.jsonl", "reward",
                            keep_scores=True)
    assert rows == [dict(row, source=str(path)) for row in (explicit, explicit, explicit, scored)]
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reasons == ["score_chosen must be a number", "no prompt, and chosen and rejected share no first message"]
    assert load_preferences([ChatSource(path=str(path))], lambda p: tmp_path / p, tmp_path / "r2.jsonl",
                            "reward")[3] == explicit  # scores only when asked for


def test_a_hub_source_needs_no_file_and_says_when_it_cannot_be_read(tiny_data, monkeypatch):
    from conftest import tiny_recipe
    from finloom.recipe import parse_recipe

    recipe = parse_recipe(tiny_recipe(**{"sft.datasets": [{"path": "hub:no-such-org/no-such-set", "format": "sharegpt"}]}),
                          tiny_data)  # validates without a file
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # The libraries read those variables when first imported; an already imported one would try the network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(BadInput, match="datasets: cannot read hub:no-such-org/no-such-set"):
        load_conversations(recipe.sft.datasets, recipe.resolve, tiny_data / "hub_rejects.jsonl", "sft")
