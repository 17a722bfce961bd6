"""Fast unit tests of the data funnel (finloom.data.funnel): no pipeline run, no model.

The step stats are written by datatrove itself (a real two-task LocalPipelineExecutor run of a reader, a filter
that drops with reasons, a set-aside step and datatrove's own MinHash stage 4 filter), so ``merged_stats`` and
``step_rows`` read the published ``stats/<rank>.json`` format, not a hand-invented one. Tokens are counted with a
real ``tokenizers`` WordLevel model wrapped in ``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashDedupFilter
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.stats import PipelineStats
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from finloom.data.funnel import (DEDUP_STEPS, _count_tokens, check_funnel, merged_stats, source_rows, stat_total,
                                 step_rows, token_counts)

# ---------------------------------------------------------------- stat_total


def test_stat_total_reads_plain_numbers_and_summary_dicts():
    assert stat_total(7) == 7
    assert stat_total(0) == 0
    assert stat_total(3.0) == 3 and isinstance(stat_total(3.0), int)
    summary = {"total": 42.0, "n": 3, "mean": 14.0, "unit": "task"}
    assert stat_total(summary) == 42 and isinstance(stat_total(summary), int)


# ---------------------------------------------------------------- datatrove stats written by datatrove

# documents per task: rank 0 and rank 1 read different ones, as sharded readers do
DOCS = {0: ["alpha beta gamma", "x", "delta epsilon", "held out text", "zeta eta theta"],
        1: ["iota kappa", "lambda", "held again", "mu nu xi omicron"]}


class ToyReader(PipelineStep):
    type = "📖 - READER"
    name = "📖 toy sources"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for i, text in enumerate(DOCS[rank]):
            self.stat_update("read")
            yield Document(text=text, id=f"{rank}-{i}", metadata={"source": f"s{rank}"})


class ToyFilter(BaseFilter):
    # a ": " inside the step's own name: only the type prefix is split off
    name = "📏 length: words"

    def filter(self, doc: Document):
        if len(doc.text) < 2:
            return False, "too_short"
        if doc.text.startswith("lambda"):
            return False, "greek_letter"
        return True


class ToySetAside(PipelineStep):
    type = "✂️ - SPLIT"
    name = "✂️ held-out split"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            self.stat_update("total")
            if doc.text.startswith("held"):
                self.stat_update("out_eval")
                continue
            self.stat_update("forwarded")
            yield doc


def _run_datatrove(logging_dir: Path, remove: dict[int, list[int]]) -> None:
    """Two real datatrove tasks; ``remove`` gives MinHash stage 4's per-rank indices to drop (its ``.remove`` files)."""
    minhash = logging_dir.parent / f"{logging_dir.name}-minhash"
    minhash.mkdir(parents=True)
    for rank, indices in remove.items():
        (minhash / f"{rank:06d}.remove").write_bytes(b"".join(struct.pack("<I", i) for i in indices))
    LocalPipelineExecutor(pipeline=[ToyReader(), ToyFilter(), ToySetAside(), MinhashDedupFilter(str(minhash))],
                          tasks=2, workers=1, logging_dir=str(logging_dir), skip_completed=False).run()


@pytest.fixture(scope="module")
def datatrove_logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("datatrove")
    _run_datatrove(root / "dropping", {0: [1]})  # rank 0: its second document left after the filters is dropped
    _run_datatrove(root / "clean", {})
    return root


def _by_name(stats: list[dict]) -> dict:
    return {step["name"]: step["stats"] for step in stats}


def test_merged_stats_sums_datatrove_task_stats(datatrove_logs):
    logs = datatrove_logs / "dropping"
    assert sorted(p.name for p in (logs / "stats").glob("*.json")) == ["00000.json", "00001.json"]
    stats = merged_stats(logs)
    assert [step["name"] for step in stats] == ["📖 - READER: 📖 toy sources", "🔻 - FILTER: 📏 length: words",
                                                "✂️ - SPLIT: ✂️ held-out split", "🫂 - DEDUP: 🎯 MinHash stage 4"]
    steps = _by_name(stats)
    assert stat_total(steps["📖 - READER: 📖 toy sources"]["read"]) == 9
    filtered = steps["🔻 - FILTER: 📏 length: words"]
    assert [stat_total(filtered[k]) for k in ("total", "forwarded", "dropped", "dropped_too_short",
                                              "dropped_greek_letter")] == [9, 7, 2, 1, 1]
    # characters of the 7 documents the filter forwarded, summed over both tasks
    assert stat_total(filtered["doc_len"]) == sum(len(t) for r in DOCS.values() for t in r
                                                  if len(t) >= 2 and not t.startswith("lambda"))
    split = steps["✂️ - SPLIT: ✂️ held-out split"]
    assert [stat_total(split[k]) for k in ("total", "forwarded", "out_eval")] == [7, 5, 2]
    dedup = steps["🫂 - DEDUP: 🎯 MinHash stage 4"]
    assert [stat_total(dedup[k]) for k in ("total", "forwarded", "dropped")] == [5, 4, 1]
    # the same totals as datatrove's own merge of the in-memory task stats (its stats.json)
    own = json.loads((logs / "stats.json").read_text(encoding="utf-8"))
    assert [(s["name"], {k: stat_total(v) for k, v in s["stats"].items()}) for s in stats] == \
        [(s["name"], {k: stat_total(v) for k, v in s["stats"].items()}) for s in own]


def test_merged_stats_equals_one_task_and_nothing_for_no_tasks(datatrove_logs, tmp_path):
    one = tmp_path / "one"
    (one / "stats").mkdir(parents=True)
    text = (datatrove_logs / "dropping" / "stats" / "00001.json").read_text(encoding="utf-8")
    (one / "stats" / "00001.json").write_text(text, encoding="utf-8")
    stats = _by_name(merged_stats(one))
    assert stat_total(stats["📖 - READER: 📖 toy sources"]["read"]) == 4
    assert stat_total(stats["🔻 - FILTER: 📏 length: words"]["dropped_greek_letter"]) == 1
    assert "dropped_too_short" not in stats["🔻 - FILTER: 📏 length: words"]
    assert merged_stats(tmp_path / "no-logs") == []
    (tmp_path / "empty" / "stats").mkdir(parents=True)
    assert merged_stats(tmp_path / "empty") == []


def test_merged_stats_of_saved_pipeline_stats(tmp_path):
    """Stats saved the way datatrove's executor saves them (PipelineStats(pipeline).save_to_disk) sum per key."""
    (tmp_path / "stats").mkdir()
    for rank, n in ((0, 3), (1, 4), (2, 5)):
        step = ExactDedupFilter(str(tmp_path / "dedup"), ExactDedupConfig(content_getter=lambda doc: doc.text))
        for i in range(n):
            step.stat_update("total")
            step.stat_update("forwarded" if i else "dropped")
        with open(tmp_path / "stats" / f"{rank:05d}.json", "w", encoding="utf-8") as handle:
            PipelineStats([step]).save_to_disk(handle)
    [merged] = merged_stats(tmp_path)
    assert merged["name"] == "🫂 - DEDUPS: 💥 exact-deduplication stage 3"
    assert [stat_total(merged["stats"][k]) for k in ("total", "forwarded", "dropped")] == [12, 9, 3]


# ---------------------------------------------------------------- step_rows


def test_step_rows_from_a_datatrove_run(datatrove_logs):
    rows = step_rows(merged_stats(datatrove_logs / "dropping"))
    kept_chars = sum(len(t) for r in DOCS.values() for t in r if len(t) >= 2 and not t.startswith("lambda"))
    assert rows == [  # the reader counts neither total nor forwarded: no row
        {"step": "length: words", "in": 9, "kept": 7, "removed": {"too_short": 1, "greek_letter": 1},
         "set_aside": {}, "chars_kept": kept_chars},
        {"step": "held-out split", "in": 7, "kept": 5, "removed": {}, "set_aside": {"eval": 2}, "chars_kept": None},
        {"step": "fuzzy dedup (MinHash)", "in": 5, "kept": 4, "removed": {"near_duplicate": 1}, "set_aside": {},
         "chars_kept": None},
    ]
    assert all(isinstance(v, int) for row in rows for v in (row["in"], row["kept"], *row["removed"].values()))


def test_step_rows_dedup_without_drops_removes_nothing(datatrove_logs):
    rows = step_rows(merged_stats(datatrove_logs / "clean"))
    assert rows[-1] == {"step": "fuzzy dedup (MinHash)", "in": 5, "kept": 5, "removed": {}, "set_aside": {},
                        "chars_kept": None}


def test_step_rows_exact_dedup_renamed():
    step = ExactDedupFilter("unused", ExactDedupConfig(content_getter=lambda doc: doc.text))
    step.stat_update("total", value=10)
    step.stat_update("forwarded", value=7)
    step.stat_update("dropped", value=3)
    step.stat_update("dropped_ignored", value=3)  # a dedup step's reason comes from DEDUP_STEPS, not dropped_* keys
    [row] = step_rows(json.loads(PipelineStats([step]).to_json()))
    assert row == {"step": "exact dedup", "in": 10, "kept": 7, "removed": {"exact_duplicate": 3}, "set_aside": {},
                   "chars_kept": None}
    assert set(DEDUP_STEPS) == {"exact-deduplication stage 3", "MinHash stage 4"}


def test_step_rows_names_counts_and_skips():
    stats = [
        {"name": "📖 - READER: 📖 sources", "stats": {"read": 5}},  # neither total nor forwarded
        {"name": "🔻 - FILTER: only total", "stats": {"total": 5, "dropped": 5}},
        {"name": "🔻 - FILTER: only forwarded", "stats": {"forwarded": 5}},
        {"name": "plain: step: with colons", "stats": {"total": {"total": 1000.0, "n": 4, "unit": "task"},
                                                        "forwarded": 990, "dropped_a": 6, "dropped_b": {"total": 4},
                                                        "out_x": 3, "doc_len": {"total": 12345.0, "mean": 12.5}}},
        {"name": "no type prefix", "stats": {"total": 2, "forwarded": 2, "doc_len": {"mean": 3.0}}},
        {"name": "✂️ - SPLIT: 🔤 🔤  spaced ", "stats": {"total": 1, "forwarded": 1}},
        {"name": "🔻 - FILTER: kept nothing", "stats": {"total": 3, "forwarded": 0, "dropped": 3, "doc_len": 0}},
    ]
    rows = step_rows(stats)
    assert rows == [
        {"step": "step: with colons", "in": 1000, "kept": 990, "removed": {"a": 6, "b": 4}, "set_aside": {"x": 3},
         "chars_kept": 12345},
        {"step": "no type prefix", "in": 2, "kept": 2, "removed": {}, "set_aside": {}, "chars_kept": None},
        {"step": "spaced", "in": 1, "kept": 1, "removed": {}, "set_aside": {}, "chars_kept": None},
        {"step": "kept nothing", "in": 3, "kept": 0, "removed": {}, "set_aside": {}, "chars_kept": 0},
    ]
    assert isinstance(rows[0]["chars_kept"], int)
    assert step_rows([]) == []


# ---------------------------------------------------------------- tokens

VOCAB = ["[UNK]", "<s>", "bank", "loan", "interest", "river", "tree", "bond", "tax"]


@pytest.fixture(scope="module")
def tokenizer():
    """A real WordLevel tokenizer that adds BOS when asked for special tokens (as Llama's does)."""
    model = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    model.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", bos_token="<s>", model_max_length=4)


class Spy:
    """The real tokenizer, recording each call's batch size and keyword arguments."""

    def __init__(self, tokenizer):
        self.tokenizer, self.batches, self.kwargs = tokenizer, [], []

    def __call__(self, texts, **kwargs):
        self.batches.append(len(texts))
        self.kwargs.append(kwargs)
        return self.tokenizer(texts, **kwargs)


def _write(path: Path, records: list, blank_lines: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = "\n\n  \n" if blank_lines else "\n"
    path.write_text("".join(json.dumps(r) + sep for r in records), encoding="utf-8")
    return path


def test_tokenizer_counts_words(tokenizer):
    assert tokenizer("bank loan zzz", add_special_tokens=False)["input_ids"] == [2, 3, 0]
    assert tokenizer("bank loan zzz")["input_ids"] == [1, 2, 3, 0]  # BOS only with special tokens


def test_count_tokens_exact_total_and_per_source(tokenizer, tmp_path):
    path = _write(tmp_path / "docs.jsonl", [
        {"text": "bank loan interest", "metadata": {"source": "a"}},  # 3
        {"text": "river tree", "metadata": {"source": "b"}},  # 2
        {"text": "bond tax bank unknownword", "metadata": {"source": "a"}},  # 4, longer than model_max_length
        {"text": "tax", "metadata": {}},  # 1, no source
        {"text": "loan loan"},  # 2, no metadata
        {"metadata": {"source": "b"}},  # no text: 0
    ], blank_lines=True)
    spy = Spy(tokenizer)
    total, by_source = _count_tokens(path, spy)
    assert total == 12
    assert by_source == Counter({"a": 7, "b": 2, "?": 3})
    assert spy.batches == [6]
    assert spy.kwargs == [{"add_special_tokens": False, "return_attention_mask": False, "verbose": False}]


@pytest.mark.parametrize("batch_size, batches", [(2, [2, 2, 1]), (3, [3, 2]), (5, [5]), (1, [1] * 5), (6, [5])])
def test_count_tokens_batches(tokenizer, tmp_path, batch_size, batches):
    records = [{"text": " ".join(["bank"] * (i + 1)), "metadata": {"source": f"s{i % 2}"}} for i in range(5)]
    path = _write(tmp_path / "docs.jsonl", records)
    spy = Spy(tokenizer)
    total, by_source = _count_tokens(path, spy, batch_size=batch_size)
    assert spy.batches == batches
    assert (total, by_source) == (15, Counter({"s0": 9, "s1": 6}))


def test_count_tokens_default_batch_size(tokenizer, tmp_path):
    path = _write(tmp_path / "docs.jsonl", [{"text": "bank", "metadata": {"source": "s"}}] * 513)
    spy = Spy(tokenizer)
    assert _count_tokens(path, spy) == (513, Counter({"s": 513}))
    assert spy.batches == [512, 1]


def test_count_tokens_empty_file(tokenizer, tmp_path):
    spy = Spy(tokenizer)
    assert _count_tokens(_write(tmp_path / "empty.jsonl", []), spy) == (0, Counter())
    assert spy.batches == []


def test_token_counts_kept_removed_and_per_source(tokenizer, tmp_path):
    clean, removed = tmp_path / "clean", tmp_path / "removed"
    _write(clean / "finance.jsonl", [{"text": "bank loan", "metadata": {"source": "fin"}},
                                     {"text": "bond", "metadata": {"source": "both"}}])
    _write(clean / "general.jsonl", [{"text": "river tree tree", "metadata": {"source": "gen"}}])
    _write(removed / "near_duplicate.jsonl", [{"text": "bank bank bank bank", "metadata": {"source": "both"}}])
    _write(removed / "too_short.jsonl", [{"text": "tax", "metadata": {"source": "dropped"}},
                                         {"text": "tax tax", "metadata": {"source": "both"}}])
    (clean / "notes.txt").write_text("bank", encoding="utf-8")  # not a JSONL file: not counted
    counts = token_counts(clean, removed, tokenizer)
    assert counts == {
        "kept": {"finance": 3, "general": 3},
        "removed": {"near_duplicate": 4, "too_short": 3},
        "by_source": {"both": {"kept": 1, "removed": 6}, "dropped": {"kept": 0, "removed": 1},
                      "fin": {"kept": 2, "removed": 0}, "gen": {"kept": 3, "removed": 0}},
    }
    assert list(counts["by_source"]) == ["both", "dropped", "fin", "gen"]  # sorted by source
    assert token_counts(tmp_path / "none", tmp_path / "none", tokenizer) == {"kept": {}, "removed": {},
                                                                              "by_source": {}}


# ---------------------------------------------------------------- source_rows


def test_source_rows(tmp_path):
    clean, removed = tmp_path / "clean", tmp_path / "removed"
    _write(clean / "finance.jsonl", [{"text": "t", "metadata": {"source": "fin"}}] * 3
           + [{"text": "t", "metadata": {"source": "both"}}], blank_lines=True)
    _write(clean / "general.jsonl", [{"text": "t", "metadata": {"source": "both"}},
                                     {"text": "t", "metadata": {}}])
    _write(removed / "too_short.jsonl", [{"text": "t", "metadata": {"source": "both"}}] * 2
           + [{"text": "t", "metadata": {"source": "gone"}}])
    _write(removed / "pii.jsonl", [{"text": "t", "metadata": {"source": "gone"}}])
    assert source_rows(clean, removed) == [
        {"source": "?", "kept": 1, "removed": {}},
        {"source": "both", "kept": 2, "removed": {"too_short": 2}},
        {"source": "fin", "kept": 3, "removed": {}},
        {"source": "gone", "kept": 0, "removed": {"pii": 1, "too_short": 1}},
    ]
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    assert source_rows(tmp_path / "e1", tmp_path / "e2") == []


# ---------------------------------------------------------------- check_funnel


def _funnel(input_records, read, rejected, kept, removed):
    return {"input_records": input_records, "read": read, "rejected": rejected, "kept": kept, "removed": removed}


def test_check_funnel_accepts_consistent_funnels():
    # numbers above 256 are distinct int objects: an ``is not`` comparison would fail on them
    check_funnel(_funnel(1500, 1200, 300, {"finance": 700, "general": 300}, {"pii": 150, "too_short": 50}))
    check_funnel(_funnel(10, 7, 3, {"finance": 4, "general": 1}, {"pii": 2}))
    check_funnel(_funnel(0, 0, 0, {"finance": 0}, {}))
    check_funnel(_funnel(5, 5, 0, {"finance": 5}, {}))


@pytest.mark.parametrize("funnel", [
    _funnel(11, 7, 3, {"finance": 4, "general": 1}, {"pii": 2}),  # an input record neither read nor rejected
    _funnel(9, 7, 3, {"finance": 4, "general": 1}, {"pii": 2}),  # one more read + rejected than input
    _funnel(10, 8, 3, {"finance": 4, "general": 1}, {"pii": 2}),  # both off
    _funnel(10, 7, 3, {"finance": 4, "general": 2}, {"pii": 2}),  # a document kept twice
    _funnel(10, 7, 3, {"finance": 4, "general": 1}, {"pii": 1}),  # a document read, neither kept nor removed
    _funnel(10, 7, 3, {"finance": 4, "general": 1}, {"pii": 3}),  # one removed too many
    _funnel(10, 7, 3, {"finance": 3, "general": 1}, {"pii": 2}),  # one kept too few
    _funnel(3, 0, 3, {}, {"pii": 1}),  # a document removed that was never read
])
def test_check_funnel_refuses_mismatches(funnel):
    with pytest.raises(RuntimeError, match="data funnel does not add up") as raised:
        check_funnel(funnel)
    kept, removed = sum(funnel["kept"].values()), sum(funnel["removed"].values())
    assert (f"{funnel['input_records']} input records, {funnel['read']} read + {funnel['rejected']} rejected; "
            f"{kept} kept + {removed} removed") in str(raised.value)
