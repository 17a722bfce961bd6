"""MCQ parsing and log-likelihood scoring against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finloom.eval.mcq import accuracy_summary, candidates, loglikelihoods, normalize_answer, parse_question, to_mcq
from finloom.llm.scratch import train_tokenizer


def test_parse_question_handles_full_width_and_multiline():
    stem, options = parse_question("关于存款保险，下列说法正确的有：\nA．保护存款人\nB、覆盖股票\n继续说明\nC:限额赔付\nD) 无上限")
    assert stem == "关于存款保险，下列说法正确的有："
    assert options == {"A": "保护存款人", "B": "覆盖股票 继续说明", "C": "限额赔付", "D": "无上限"}


def test_answer_normalisation_and_validation():
    assert normalize_answer("d, a b") == "ABD"
    with pytest.raises(ValueError, match="does not match the options"):
        to_mcq({"question": "Q?\nA.x\nB.y", "answer": "C"})
    with pytest.raises(ValueError, match="fewer than two options"):
        to_mcq({"question": "Q? no options", "answer": "A"})


def test_candidates_single_are_cloze_and_multi_enumerate_sets():
    single = to_mcq({"question": "What is a bond?\nA.debt\nB.share", "answer": "A"})
    assert candidates(single) == [("A", "What is a bond?", " debt", 4), ("B", "What is a bond?", " share", 5)]
    multi = to_mcq({"question": "Which?\nA.x\nB.y\nC.z", "answer": "AC"})
    assert [label for label, *_ in candidates(multi)] == ["AB", "AC", "BC", "ABC"]


@pytest.fixture(scope="module")
def tiny_lm():
    tokenizer = train_tokenizer(["a bond is debt and a share is equity"] * 20, 300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    return model.eval(), tokenizer


def test_loglikelihood_matches_hand_computation(tiny_lm):
    model, tokenizer = tiny_lm
    context, continuation = "a bond is", " debt"
    ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0], dim=-1)
    expected = sum(logprobs[len(ctx_ids) - 1 + i, token].item() for i, token in enumerate(cont_ids))
    # Batched with padding next to a longer pair must give the same number.
    got = loglikelihoods(model, tokenizer, [(context, continuation), ("a share is equity and", " a bond")], 2, 64)
    assert math.isclose(got[0], expected, rel_tol=1e-5, abs_tol=1e-5)
    assert got[1] < 0


def test_accuracy_summary_by_task():
    rows = [
        {"task_name": "CPA", "multi": False, "correct": True, "choices": 4},
        {"task_name": "CPA", "multi": True, "correct": False, "choices": 11},
        {"task_name": "FRM", "multi": False, "correct": True, "choices": 4},
    ]
    summary = accuracy_summary(rows)
    assert summary["accuracy"] == round(2 / 3, 4)
    assert summary["single_accuracy"] == 1.0
    assert summary["multi_accuracy"] == 0.0
    assert summary["by_task"] == {"CPA": 0.5, "FRM": 1.0}
    assert summary["chance"] == round((0.25 + 1 / 11 + 0.25) / 3, 4)
