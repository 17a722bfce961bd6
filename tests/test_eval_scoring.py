"""Scoring against an oracle: a model that makes the right option most likely scores 1.0, one that makes a wrong
option most likely scores 0.0, through the real path (lm-eval tasks, finloom's per-question rows and summary).

The oracle is an lm-eval model that reads each request's document: the scores depend on nothing but the
answer key, so any slip between lm-eval's log-likelihoods and finloom's prediction shows as a wrong accuracy.
"""

from __future__ import annotations

import json

import pytest
from lm_eval.api.model import LM

from finloom.eval import harness

QUESTIONS = [  # the right option is always the longest, so raw and per-character scores can disagree
    {"task_name": "CPA", "question": "存款保险的主要作用是（ ）。\nA.保护存款人的合法权益并维护金融稳定\nB.征税\nC.发债\nD.放贷", "answer": "A"},
    {"task_name": "CFA", "question": "Duration measures?\nA.Cash\nB.The sensitivity of a bond's price to its yield\nC.Tax",
     "answer": "B"},
    {"task_name": "CPA", "question": "Which are assets?\nA.Receivables held\nB.Payables\nC.Inventory on hand\nD.Debt",
     "answer": "AC"},
    {"task_name": "FRM", "question": "Which are risk types?\nA.Market risk\nB.Credit risk\nC.Sky\nD.Blue\nE.Liquidity risk",
     "answer": "ABE"},
]


class Oracle(LM):
    """Log-likelihood per character: 0.5 lower for every character of a wrong continuation than of the right one
    (``wrong=True``: the reverse). The right option being longest, its raw sum is still the smallest."""

    def __init__(self, wrong: bool = False):
        super().__init__()
        self.wrong = wrong

    def _right(self, request) -> str:
        doc = request.doc
        if "cloze" in request.task_name:
            return " " + doc["options"][doc["answer_index"]] if request.arguments[1].startswith(" ") else \
                doc["options"][doc["answer_index"]]
        return " " + doc["answer"]

    def loglikelihood(self, requests):
        scores = []
        for request in requests:
            continuation = request.arguments[1]
            right = continuation.strip() == self._right(request).strip()
            per_char = -0.5 if right != self.wrong else -1.0
            scores.append((per_char * len(continuation.strip()), right != self.wrong))
        return scores

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

    def generate_until(self, requests):
        return [("答案：" if self.wrong else "Answer: ") + ("D" if self.wrong else request.doc["answer"])
                for request in requests]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    work = tmp_path_factory.mktemp("oracle")
    (work / "mcq.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS),
                                    encoding="utf-8")
    return work, harness.prepare("oracle", "mcq", "flame", [work / "mcq.jsonl"], "auto", work, None)


@pytest.mark.parametrize(("wrong", "expected"), [(False, 1.0), (True, 0.0)])
def test_mcq_by_log_likelihood_follows_the_oracle(prepared, wrong, expected):
    work, benchmark = prepared
    tasks = [t for t in benchmark.subtasks if t.template in harness.LOGLIKELIHOOD_TEMPLATES]
    assert {t.template for t in tasks} == {"mcq_cloze", "mcq_multi"}
    rows = harness.per_question(benchmark, harness.evaluate(Oracle(wrong), tasks, work), tasks)
    summary = harness.summarize(rows, "mcq")
    assert summary["items"] == 4
    assert (summary["accuracy"], summary["single_accuracy"], summary["multi_accuracy"]) == (expected,) * 3
    if not wrong:  # per-character scoring: the raw sum favours the short wrong options
        cloze = [r for r in rows if r["template"] == "mcq_cloze"]
        assert all(max(r["loglikelihoods"]) != r["loglikelihoods"][["A", "B", "C", "D"].index(r["answer"])]
                   for r in cloze)


@pytest.mark.parametrize(("wrong", "expected"), [(False, 1.0), (True, 0.0)])
def test_mcq_by_generation_and_letters_follow_the_oracle(tmp_path, wrong, expected):
    (tmp_path / "mcq.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS),
                                        encoding="utf-8")
    benchmark = harness.prepare("oracle", "mcq", "flame", [tmp_path / "mcq.jsonl"], "letters", tmp_path, None)
    rows = harness.per_question(benchmark, harness.evaluate(Oracle(wrong), benchmark.subtasks, tmp_path),
                                benchmark.subtasks)
    assert harness.summarize(rows, "mcq")["accuracy"] == expected
    generated = harness.prepare("oracle_gen", "mcq", "flame", [tmp_path / "mcq.jsonl"], "generate", tmp_path, None)
    rows = harness.per_question(generated, harness.evaluate(Oracle(wrong), generated.subtasks, tmp_path),
                                generated.subtasks)
    assert harness.summarize(rows, "mcq")["accuracy"] == expected
    assert all((r["extracted"] != r["answer"]) if wrong else (r["extracted"] == r["answer"]) for r in rows)


class Recorder(Oracle):
    """The oracle, keeping every log-likelihood request's context."""

    def __init__(self):
        super().__init__()
        self.contexts = []

    def loglikelihood(self, requests):
        self.contexts += [request.arguments[0] for request in requests]
        return super().loglikelihood(requests)


@pytest.mark.parametrize("num_fewshot", [0, 1])
def test_fewshot_examples_are_the_other_questions_of_the_file(tmp_path, num_fewshot):
    single = QUESTIONS[:2]
    (tmp_path / "mcq.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in single),
                                        encoding="utf-8")
    benchmark = harness.prepare("shots", "mcq", "flame", [tmp_path / "mcq.jsonl"], "letters", tmp_path, None,
                                num_fewshot=num_fewshot)
    model = Recorder()
    rows = harness.per_question(benchmark, harness.evaluate(model, benchmark.subtasks, tmp_path), benchmark.subtasks)
    assert harness.summarize(rows, "mcq")["accuracy"] == 1.0
    stems = [item["question"] for item in benchmark.items]
    # one context per option; each holds its own question and, with one shot, the other one answered
    assert len(model.contexts) == 4 + 3
    for context in model.contexts:
        assert sum(stem in context for stem in stems) == 1 + num_fewshot
        assert context.count("Answer:") == 1 + num_fewshot


def test_the_fewshot_examples_follow_the_seed(tmp_path):
    questions = [{"task_name": "CFA", "question": f"Question {n}?\nA.yes {n}\nB.no {n}", "answer": "A"} for n in range(6)]
    (tmp_path / "mcq.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    benchmark = harness.prepare("seeded", "mcq", "flame", [tmp_path / "mcq.jsonl"], "letters", tmp_path, None,
                                num_fewshot=2)
    contexts = {}
    for seed in (1, 2, 1):
        model = Recorder()
        harness.evaluate(model, benchmark.subtasks, tmp_path, seed=seed)
        assert contexts.setdefault(seed, model.contexts) == model.contexts  # the same seed, the same examples
    assert contexts[1] != contexts[2]
