"""GRPO as Baichuan Alignment runs it: the exact top-k KL in the per-token reward, the KL to the pre-RL model on
SFT data, the reward combination, and the category sampler with its re-weighting."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import GRPOTrainer

from conftest import scripted_chat
from finloom.align.categories import CategorySampler, reweighted, shares
from finloom.align.grpo import (ConversationBatches, FinloomGRPOConfig, FinloomGRPOTrainer, completion_logits,
                                kl_shaped_advantages)
from finloom.align.rewards import RewardCombination
from finloom.llm.chat_template import tokenize_with_assistant_mask
from finloom.llm.client import LLMClient
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.llm.padded_attention import NAME as PADDED_SDPA
from finloom.llm.reward_scorer import LocalRewardScorer
from finloom.llm.scratch import build_model, train_tokenizer
from finloom.recipe import ClientSection, GRPOArgs, Reweighting, ScratchModel

PROMPTS = [{"prompt": [{"role": "user", "content": f"Which is the bond? A. bond B. tree {i}"}],
            "reward_task": json.dumps({"answer": "A", "category": "mcq"}), "category": "mcq"} for i in range(4)]
SFT = [[{"role": "user", "content": "What is a bond?"}, {"role": "assistant", "content": "A loan that pays interest."}],
       [{"role": "user", "content": "What is equity?"}, {"role": "assistant", "content": "Ownership of a company."}]]


def _full_kl(policy_logits, reference_logits):
    p, q = F.log_softmax(policy_logits.float(), -1), F.log_softmax(reference_logits.float(), -1)
    return (p.exp() * (p - q)).sum(-1)


def _topk_kl(policy_logits, reference_logits, k):
    """By hand: the reference's k best tokens, both distributions renormalised over them, the exact KL there."""
    indices = reference_logits.topk(k, -1).indices
    p = F.log_softmax(policy_logits.gather(-1, indices).float(), -1)
    q = F.log_softmax(reference_logits.gather(-1, indices).float(), -1)
    return (p.exp() * (p - q)).sum(-1)


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory):
    """An SFT-like model in seconds, not the tiny pipeline's: a from-scratch Llama and ChatML BPE tokenizer (as the
    base stage builds them) saved as a model directory. The tests compare against their own by-hand values, so
    untrained weights serve (the policy is moved off the reference by noise anyway)."""
    texts = [message["content"] for messages in SFT for message in messages]
    texts += [message["content"] for row in PROMPTS for message in row["prompt"]]
    tokenizer = train_tokenizer(texts * 5, 300)
    torch.manual_seed(0)
    model = build_model(ScratchModel(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                                     num_kv_heads=1, max_position_embeddings=256), tokenizer)
    folder = tmp_path_factory.mktemp("scratch_sft")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_trainer(sft_model, tmp_path, options: dict | None = None, **config):
    """The trainer on a noised copy of ``sft_model`` with that model as reference; ``options`` replace trainer
    arguments (``ref_model``, ``prompt_categories``...), ``config`` the config's settings."""
    tokenizer = load_tokenizer(sft_model)
    policy, reference = load_causal_lm(sft_model), load_causal_lm(sft_model)
    with torch.no_grad():  # a policy that has moved away from the reference
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                    max_completion_length=6, report_to="none", use_cpu=True, kl_beta=0.1, kl_top_k=8,
                    sft_kl_gamma=0.5, seed=3)
    sft_rows = [tokenize_with_assistant_mask(tokenizer, messages, 64) for messages in SFT]
    trainer = FinloomGRPOTrainer(model=policy, reward_funcs=[RewardCombination(GRPOArgs())],
                                 args=FinloomGRPOConfig(**(settings | config)), train_dataset=Dataset.from_list(PROMPTS),
                                 processing_class=tokenizer, **(dict(ref_model=reference, sft_rows=sft_rows)
                                                                 | (options or {})))
    return trainer, policy, reference


def rollout():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 12, 13, 14, 0]])
    return {"prompt_ids": ids[:, :3], "prompt_mask": torch.ones(2, 3, dtype=torch.long), "completion_ids": ids[:, 3:],
            "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]), "advantages": torch.tensor([0.7, -0.7])}


def test_the_rollout_kl_is_exact_over_the_references_top_k_and_the_full_kl_at_k_vocabulary(sft_model, tmp_path):
    trainer, policy, reference = make_trainer(sft_model, tmp_path)
    assert policy.config._attn_implementation == PADDED_SDPA  # left-padded prompts: no query row attends to nothing
    batch = rollout()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        p_logits, q_logits = completion_logits(policy, ids, mask, 4), completion_logits(reference, ids, mask, 4)
        assert torch.allclose(p_logits, policy(input_ids=ids, attention_mask=mask).logits[:, 2:-1], atol=1e-5)
    assert torch.allclose(trainer.rollout_kl(batch), _topk_kl(p_logits, q_logits, 8), atol=1e-6)
    trainer.args.kl_top_k = policy.config.vocab_size
    full = trainer.rollout_kl(batch)
    assert torch.allclose(full, _full_kl(p_logits, q_logits), atol=1e-6) and (full > 0).all()
    assert not torch.allclose(full, _topk_kl(p_logits, q_logits, 8), atol=1e-4)  # k = 8 is an approximation


def test_the_rollout_kl_in_chunks_of_the_per_device_batch_is_the_kl_of_one_pass(sft_model, tmp_path):
    trainer, policy, reference = make_trainer(sft_model, tmp_path)
    ids = torch.randint(5, 200, (8, 6), generator=torch.Generator().manual_seed(4))  # more answers than tokens
    batch = {"prompt_ids": ids[:, :3], "prompt_mask": torch.ones(8, 3, dtype=torch.long), "completion_ids": ids[:, 3:],
             "completion_mask": torch.ones(8, 3, dtype=torch.long)}  # an odd number of completion tokens
    with torch.no_grad():
        one_pass = _topk_kl(policy(input_ids=ids).logits[:, 2:-1], reference(input_ids=ids).logits[:, 2:-1], 8)
    trainer.args.per_device_train_batch_size = 3  # chunks of 3, 3 and 2 answers
    assert torch.allclose(trainer.rollout_kl(batch), one_pass, atol=1e-6)


@pytest.mark.parametrize("advantages, per_token", [
    ([1.0, -1.0], [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]),  # one outcome advantage per answer, as GRPO's
    ([[1.0, 0.5, 0.0], [-1.0, -2.0, -3.0]], [[1.0, 0.5, 0.0], [-1.0, -2.0, -3.0]]),  # already per token: kept so
], ids=["per-answer", "per-token"])
def test_kl_shaped_advantages_by_hand(advantages, per_token):
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.0, 0.0]])
    shaped = kl_shaped_advantages(torch.tensor(advantages), kl, beta=0.5)
    to_go = torch.tensor([[0.6, 0.5, 0.3], [0.4, 0.0, 0.0]])  # this token's KL and every later one's
    assert shaped.shape == (2, 3) and torch.allclose(shaped, torch.tensor(per_token) - 0.5 * to_go)


@pytest.mark.parametrize("tool_mask, scored", [
    (None, [[1, 1, 1, 1], [1, 1, 1, 0]]),
    ([[1, 0, 1, 1], [1, 1, 1, 1]], [[1, 0, 1, 1], [1, 1, 1, 0]]),  # a tool's output (token 1 of answer 0): no KL
], ids=["no-tools", "tool-output"])
def test_the_kl_enters_the_advantages_of_every_generated_batch(sft_model, tmp_path, monkeypatch, tool_mask, scored):
    trainer, policy, _ = make_trainer(sft_model, tmp_path)
    policy.train()
    batch = rollout() | ({"tool_mask": torch.tensor(tool_mask)} if tool_mask else {})
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", lambda self, inputs: dict(batch))
    kl = trainer.rollout_kl(batch) * torch.tensor(scored)
    shaped = trainer._generate_and_score_completions([])["advantages"]
    assert shaped.shape == (2, 4)
    assert torch.allclose(shaped, kl_shaped_advantages(batch["advantages"], kl, 0.1))
    assert (shaped[0] < 0.7).all() and shaped[1, 3] == -0.7  # a penalty up to the last token; none past the end
    scored_tokens = sum(map(sum, scored))
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(float(kl.sum() / scored_tokens), rel=1e-5)


def test_the_sft_kl_is_over_assistant_tokens_with_gradient_and_gamma_scales_it_into_the_loss(sft_model, tmp_path,
                                                                                           monkeypatch):
    trainer, policy, reference = make_trainer(sft_model, tmp_path)
    batch = trainer.sft_batches[0]
    value = trainer.sft_kl(policy, batch)
    value_now = float(value.detach())
    with torch.no_grad():
        p = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        q = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    scored = batch["labels"][:, 1:] != -100
    assert 0 < scored.sum() < batch["attention_mask"].sum() - 2  # prompts and padding are not scored
    assert value_now == pytest.approx(float(_topk_kl(p, q, 8)[scored].mean()), rel=1e-5)
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert all(p.grad is None for p in reference.parameters())

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", lambda self, model, inputs: torch.tensor(0.25))
    policy.train()
    trainer.current_gradient_accumulation_steps = 2  # as the training loop sets it: the term is per micro-batch
    loss = trainer._compute_loss(policy, {})
    assert float(loss.detach()) == pytest.approx(0.25 + 0.5 * value_now / 2, rel=1e-5)


@pytest.mark.parametrize("scored_tokens", [1, 0])
def test_the_sft_kl_of_a_batch_with_at_most_one_assistant_token(sft_model, tmp_path, scored_tokens):
    trainer, policy, reference = make_trainer(sft_model, tmp_path)
    batch = trainer.sft_batches[0]
    batch["labels"] = torch.full_like(batch["labels"], -100)
    batch["labels"][1, 5:5 + scored_tokens] = 7  # predicted from position 4
    with torch.no_grad():
        p = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        q = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    expected = float(_topk_kl(p, q, 8)[1, 4]) if scored_tokens else 0.0  # none: 0, not NaN
    assert trainer.sft_kl(policy, batch).item() == pytest.approx(expected, rel=1e-5)


def test_micro_batch_k_of_step_s_takes_sft_batch_s_times_accumulation_plus_k(sft_model, tmp_path):
    trainer, policy, _ = make_trainer(sft_model, tmp_path)
    batches, asked = trainer.sft_batches, []

    class Recording:
        def __getitem__(self, index):
            asked.append(index)
            return batches[index]

    trainer.sft_batches = Recording()
    trainer.current_gradient_accumulation_steps = 2
    trainer.state.global_step, trainer._step = 3, 5  # TRL counts micro-batches in _step: the second of step 3
    term = trainer.auxiliary_loss(policy, {})
    assert asked == [3 * 2 + 1]
    sft_kl = trainer.sft_kl(policy, batches[7]).item()
    assert term.item() == pytest.approx(0.5 * sft_kl, rel=1e-5)
    assert trainer._metrics["train"]["sft_kl"] == [pytest.approx(sft_kl, rel=1e-5)]


def test_sft_batches_are_fixed_per_index_and_cycle(sft_model, tmp_path):
    trainer, _, _ = make_trainer(sft_model, tmp_path)
    first, again = trainer.sft_batches[0], trainer.sft_batches[0]
    assert torch.equal(first["input_ids"], again["input_ids"]) and first["input_ids"].size(0) == 4
    rows = {tuple(r[r != trainer.processing_class.pad_token_id].tolist()) for r in first["input_ids"]}
    assert len(rows) == 2  # four rows from two conversations: each twice
    smaller, _, _ = make_trainer(sft_model, tmp_path, sft_kl_batch_size=3)
    assert smaller.sft_batches[0]["input_ids"].size(0) == 3


def test_conversation_batches_by_hand():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]},
            {"input_ids": [6], "labels": [6]}]
    batches = ConversationBatches(rows, batch_size=2, pad_id=9, seed=0)
    assert batches.order == [2, 0, 1]  # torch.randperm(3) under seed 0: batch i is order[2i], order[2i + 1] mod 3
    expected = [  # input_ids, labels, attention_mask: right-padded with pad_id, -100 and 0
        ([[6, 9, 9], [1, 2, 3]], [[6, -100, -100], [-100, 2, 3]], [[1, 0, 0], [1, 1, 1]]),  # rows 2, 0
        ([[4, 5], [6, 9]], [[-100, 5], [6, -100]], [[1, 1], [1, 0]]),  # rows 1, 2
        ([[1, 2, 3], [4, 5, 9]], [[-100, 2, 3], [-100, 5, -100]], [[1, 1, 1], [1, 1, 0]]),  # rows 0, 1
    ]
    for index in range(6):  # then the cycle again
        ids, labels, mask = expected[index % 3]
        batch = batches[index]
        assert batch["input_ids"].tolist() == ids and batch["labels"].tolist() == labels
        assert batch["attention_mask"].tolist() == mask
    threes = ConversationBatches(rows, batch_size=3, pad_id=9, seed=0)  # batch 1: positions 3, 4, 5 -> order 0, 1, 2
    assert threes[1]["input_ids"].tolist() == [[6, 9, 9], [1, 2, 3], [4, 5, 9]]
    with pytest.raises(ValueError, match="no SFT conversations"):
        ConversationBatches([], batch_size=2, pad_id=9, seed=0)


@pytest.mark.parametrize("kl_beta, gamma, needs_reference", [(0.1, 0.0, True), (0.0, 0.5, True), (0.0, 0.0, False)])
def test_a_reference_is_required_exactly_when_a_kl_term_is_on(sft_model, tmp_path, kl_beta, gamma, needs_reference):
    settings = dict(kl_beta=kl_beta, sft_kl_gamma=gamma)
    if needs_reference:
        with pytest.raises(ValueError, match="needs ref_model"):
            make_trainer(sft_model, tmp_path, options=dict(ref_model=None), **settings)
        trainer, _, reference = make_trainer(sft_model, tmp_path, **settings)
        assert trainer.ref_model is reference and not reference.training
    else:
        trainer, _, _ = make_trainer(sft_model, tmp_path, **settings)
        assert trainer.ref_model is None  # given one but nothing needs it: not even prepared
        assert make_trainer(sft_model, tmp_path, options=dict(ref_model=None), **settings)[0].ref_model is None
    assert (trainer.sft_batches is not None) == (gamma > 0)


def test_prompt_categories_replace_trls_prompt_order_with_category_draws_of_the_same_layout(sft_model, tmp_path):
    settings = dict(num_iterations=3, steps_per_generation=2)  # 8 prompts a generation: 4 prompts x 2 samples
    plain, _, _ = make_trainer(sft_model, tmp_path, **settings)
    weights = {"mcq": 1.0}
    trainer, _, _ = make_trainer(sft_model, tmp_path, options=dict(prompt_categories=["mcq"] * 4,
                                                                   category_weights=weights), **settings)
    for sampler in (plain._get_train_sampler(), trainer._get_train_sampler()):
        assert (sampler.mini_repeat_count, sampler.repeat_count) == (2, 3 * 2)
        assert sampler.batch_size == 4 and type(sampler.batch_size) is int
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, CategorySampler) and trainer.category_sampler is sampler
    assert not isinstance(plain._get_train_sampler(), CategorySampler)
    assert sampler.weights == weights and sampler.generator.initial_seed() == 3
    assert len(list(sampler)) == len(sampler) == 4 * 2 * 6


@pytest.mark.parametrize("kl, mask, mean_kl, penalty", [
    ([[0.3, 0.1, 0.0], [0.2, 0.0, 0.0]], [[1, 1, 0], [1, 0, 0]], 0.6 / 3, 0.1 * 0.6 / 2),
    ([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0]], [[1, 0, 0], [0, 0, 0]], 0.3, 0.1 * 0.3 / 2),  # one token
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0, 0, 0], [0, 0, 0]], 0.0, 0.0),  # no tokens at all: 0, not NaN
], ids=["three-tokens", "one-token", "no-tokens"])
def test_log_kl_is_the_mean_per_token_and_the_penalty_the_mean_per_answer(sft_model, tmp_path, kl, mask, mean_kl,
                                                                          penalty):
    trainer, policy, _ = make_trainer(sft_model, tmp_path)
    for mode, training in (("train", True), ("eval", False)):
        policy.train(training)
        trainer.log_kl(torch.tensor(kl), torch.tensor(mask))
        assert trainer._metrics[mode]["kl"] == [pytest.approx(mean_kl)]
        assert trainer._metrics[mode]["kl_penalty"] == [pytest.approx(penalty)]


def test_the_trainer_keeps_trls_own_kl_off():
    with pytest.raises(ValueError, match="set kl_beta"):
        FinloomGRPOConfig(output_dir="x", beta=0.1, use_cpu=True, report_to="none")


def test_reward_combination_scores_and_logs_every_component(tiny_run, tmp_path):
    scorer = LocalRewardScorer(tiny_run / "reward" / "model")
    settings = GRPOArgs(rewards={"format": 0.2, "mcq": 1.0, "rm": 0.5, "constraints": 1.0})
    logged = {}
    reward = RewardCombination(settings, scorer=scorer, log_path=tmp_path / "rewards.jsonl")
    prompts = [[{"role": "user", "content": "Pick one. A. x B. y"}], [{"role": "user", "content": "Be brief."}]]
    completions = [[{"role": "assistant", "content": "A"}], [{"role": "assistant", "content": "one two three four five"}]]
    tasks = [json.dumps({"answer": "A", "category": "mcq"}),
             json.dumps({"checks": [{"type": "max_words", "value": 3}], "category": "constraints"})]

    class State:
        global_step = 4

    totals = reward(prompts=prompts, completions=completions, reward_task=tasks, trainer_state=State(),
                    log_metric=lambda name, value: logged.setdefault(name, value))
    rm = [1 / (1 + torch.exp(-torch.tensor(s)).item()) for s in
          scorer.score([prompts[i] + completions[i] for i in range(2)])]
    assert totals[0] == pytest.approx((0.2 * 1 + 1.0 * 1 + 0.5 * rm[0]) / 1.7)
    assert totals[1] == pytest.approx((0.2 * 1 + 1.0 * 0 + 0.5 * rm[1]) / 1.7)
    assert logged["rewards/mcq"] == 1.0 and logged["rewards/constraints"] == 0.0
    assert logged["rewards/rm"] == pytest.approx(sum(rm) / 2)
    rows = [json.loads(line) for line in (tmp_path / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 4] and rows[1]["category"] == "constraints"
    assert rows[1]["components"]["constraints"] == 0.0 and rows[0]["reward"] == pytest.approx(totals[0])


def test_the_rubric_reward_comes_from_the_teacher_and_failures_are_counted():
    def grade(prompt, body):  # by content: the judge's requests run concurrently, in no fixed order
        return '{"accuracy": 5, "compliance": 3}' if "A loan." in prompt else "no json"

    with scripted_chat(grade) as server:
        judge = LLMClient(ClientSection(base_url=server.url, model="judge"), "test judge")
        reward = RewardCombination(GRPOArgs(rewards={"rubric": 1.0, "format": 0.0, "mcq": 0, "calculation": 0,
                                                     "constraints": 0}), judge=judge, judge_retries=0)
        task = {"weights": {"accuracy": 2, "compliance": 1}, "task": "explain"}
        totals = reward(prompts=[[{"role": "user", "content": "Explain a bond."}]] * 2,
                        completions=["A loan.", "A tree."], reward_task=[json.dumps(task)] * 2)
    assert totals[0] == pytest.approx(((2 * 5 + 3) / 3 + 1) / 6)
    assert totals[1] is None and reward.rubric_failures == 1  # a judge that never parsed is no score, not a zero


def test_the_category_sampler_keeps_groups_and_follows_its_weights():
    categories = ["a"] * 6 + ["b"] * 6
    sampler = CategorySampler(categories, {"a": 1.0, "b": 0.0}, mini_repeat_count=3, batch_size=2, repeat_count=2,
                              seed=0)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 6 * 2 * 3 * 2
    for chunk in range(0, len(drawn), 12):  # 2 prompts x 3 samples, the whole chunk twice
        block = drawn[chunk:chunk + 12]
        assert block[:6] == block[6:] and all(block[i] == block[i - i % 3] for i in range(6))
    assert {categories[i] for i in drawn} == {"a"}
    assert Counter(drawn[::3]).most_common(1)[0][1] <= 4  # a's six prompts cycle rather than repeat one
    sampler.set_weights({"b": 1.0})  # a category the weights leave out is not drawn
    assert sampler.weights == {"a": 0.0, "b": 1.0} and {categories[i] for i in list(sampler)} == {"b"}


def test_reweighting_moves_share_toward_the_categories_below_target():
    base = shares(["mcq"] * 6 + ["calc"] * 2 + ["rules"] * 2)
    settings = Reweighting(target=0.8, strength=2.0, min_share=0.05)
    weights = reweighted(base, {"mcq": 0.9, "calc": 0.2, "rules": 0.8}, settings)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert weights["calc"] > base["calc"] and weights["mcq"] < base["mcq"]
    assert weights["calc"] / weights["rules"] == pytest.approx(2.718281828 ** (2 * 0.6), rel=1e-3)
    assert reweighted(base, {"mcq": 1.0, "calc": 1.0, "rules": 1.0}, settings) == pytest.approx(base)
    # above the target by different margins: no shortfall, so neither gains on the other
    assert reweighted(base, {"mcq": 0.85, "calc": 1.0, "rules": 0.95}, settings) == pytest.approx(base)
    starved = reweighted({"x": 0.999, "y": 0.001}, {"x": 0.0, "y": 1.0}, Reweighting(min_share=0.1, target=0.5))
    assert starved["y"] >= 0.1 - 1e-6


@pytest.mark.parametrize(("every", "max_steps", "steps"), [(2, 5, [0, 2, 4, 5]), (3, 6, [0, 3, 6]), (1, 3, [0, 1, 2, 3])])
def test_categories_are_evaluated_at_the_start_every_k_steps_and_once_at_the_end(every, max_steps, steps):
    from transformers import TrainerControl, TrainerState

    from finloom.align.categories import CategoryEvaluation

    class Recorded(CategoryEvaluation):
        def evaluate(self, step, final=False):
            self.rows.append((step, final))

    evaluation = Recorded(None, {}, None, Reweighting(eval_every=every), {}, 4, None)
    state, control = TrainerState(global_step=0, max_steps=max_steps), TrainerControl()
    evaluation.on_train_begin(None, state, control)
    for state.global_step in range(1, max_steps + 1):
        evaluation.on_step_end(None, state, control)
    evaluation.on_train_end(None, state, control)
    assert evaluation.rows == [(step, step == max_steps) for step in steps]  # the last step: once, as the final


# One token's template for the generation prompt, so that a model reading only the last token answers differently
# with and without it (ChatML's ends in "\n" either way).
ONE_TOKEN_PROMPT = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
                    "{% if add_generation_prompt %}<|im_start|>{% endif %}")


def table_model(folder, follows: dict[str, str]):
    """A model whose greedy answer is known: no layers, one-hot embeddings and an output matrix that maps each token in
    ``follows`` to the token after it (every other token to ``<|im_end|>``, the end of the answer). Real ``generate``
    runs it: left padding, stopping at the end token, decoding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [message["content"] for messages in SFT for message in messages] * 5
    tokenizer = train_tokenizer(texts, 300)
    tokenizer.chat_template = ONE_TOKEN_PROMPT
    size = len(tokenizer)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=size, hidden_size=size, intermediate_size=8, num_hidden_layers=0,
                                         num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=False,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    ids = tokenizer.convert_tokens_to_ids
    table = torch.zeros(size, size)
    table[tokenizer.eos_token_id] = 1.0
    for token, after in follows.items():
        table[:, ids(token)] = 0.0
        table[ids(after), ids(token)] = 1.0
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.eye(size))
        model.lm_head.weight.copy_(table)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_greedy_answers_follow_the_generation_prompt_and_are_decoded_without_special_tokens(tmp_path):
    """After the generation prompt the model says " that" and ends; after a bare end of turn it would say " pay".
    Rows of different lengths are left-padded; a reward of None counts as 0."""
    from finloom.align.categories import greedy_rewards

    folder = table_model(tmp_path / "table", {"<|im_start|>": "Ġthat", "<|im_end|>": "Ġpay"})
    model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    rows = [PROMPTS[0], dict(PROMPTS[1], prompt=[{"role": "user", "content": "Short?"}])]
    seen = {}

    def score(prompts, completions, reward_task):
        seen.update(prompts=prompts, completions=completions, reward_task=reward_task)
        return [0.5, None]

    replies, rewards = greedy_rewards(model, tokenizer, rows, score, max_tokens=5)
    assert replies == [" that", " that"] and rewards == [0.5, 0.0]
    assert seen == {"prompts": [row["prompt"] for row in rows], "reward_task": [row["reward_task"] for row in rows],
                    "completions": [[{"role": "assistant", "content": " that"}]] * 2}
    assert tokenizer.padding_side == "right"  # left padding only while generating


def test_a_category_evaluation_scores_greedy_answers_reweights_and_logs(tmp_path):
    """Each category's score is the mean reward of the policy's greedy answers (a reward of None counts as 0); the
    weights that follow are ``reweighted``'s, applied to the sampler, and the row is logged with two examples, prompt
    and reply cut at 160 characters (the table model answers " int pay" 50 times: 400 characters)."""
    from finloom.align.categories import CategoryEvaluation, reweighted

    folder = table_model(tmp_path / "table", {"<|im_start|>": "Ġint", "Ġint": "Ġpay", "Ġpay": "Ġint"})
    trainer, _, _ = make_trainer(folder, tmp_path, {"prompt_categories": ["mcq", "mcq", "calc", "calc"]})
    trainer.get_train_dataloader()
    heldout = {"mcq": [dict(PROMPTS[i], prompt=[{"role": "user", "content": f"Pick {i}. " + "x" * 200}])
                       for i in range(3)], "calc": [PROMPTS[3]]}
    given = iter([[1.0, 0.0, None], [None]])  # one call per category, in order

    def score(prompts, completions, reward_task):
        assert [c[0]["content"] for c in completions] == [" int pay" * 50] * len(prompts)
        return next(given)

    settings = Reweighting(target=0.8, strength=2.0)
    log = tmp_path / "categories.jsonl"
    evaluation = CategoryEvaluation(trainer, heldout, score, settings, {"mcq": 0.5, "calc": 0.5}, 100, log)
    scores = evaluation.evaluate(2)
    assert scores == {"mcq": round(1 / 3, 6), "calc": 0.0}
    weights = reweighted({"mcq": 0.5, "calc": 0.5}, scores, settings)
    assert trainer.category_sampler.weights == pytest.approx(weights)
    [row] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (row["step"], row["final"], row["scores"], row["weights"]) == (2, False, scores, weights)
    assert row["examples"]["mcq"] == [{"prompt": f"Pick {i}. " + "x" * 152, "reply": (" int pay" * 20), "reward": r}
                                      for i, r in [(0, 1.0), (1, 0.0)]]


def test_a_resumed_run_keeps_the_category_evaluations_up_to_its_checkpoint_and_their_last_weights(sft_model, tmp_path):
    """Resumed at step 3: the log's rows of steps 0 and 2 stay (not the killed run's step 4, nor a final row), and
    the sampler draws with step 2's weights, the ones in force at the checkpoint."""
    from transformers import TrainerControl, TrainerState

    from finloom.align.categories import CategoryEvaluation

    trainer, _, _ = make_trainer(sft_model, tmp_path, {"prompt_categories": ["mcq", "mcq", "calc", "calc"]})
    trainer.get_train_dataloader()  # as train() does before on_train_begin: the category sampler now exists
    log = tmp_path / "categories.jsonl"
    rows = [{"step": step, "scores": {}, "weights": {"mcq": mcq, "calc": 1 - mcq}, "final": final, "examples": {}}
            for step, mcq, final in [(0, 0.5, False), (2, 0.3, False), (3, 0.9, True), (4, 0.1, False)]]
    log.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    evaluation = CategoryEvaluation(trainer, {}, None, Reweighting(), {"mcq": 0.5, "calc": 0.5}, 4, log)
    evaluation.on_train_begin(trainer.args, TrainerState(global_step=3, max_steps=6), TrainerControl())
    assert [row["step"] for row in evaluation.rows] == [0, 2]
    assert trainer.category_sampler.weights == {"calc": pytest.approx(0.7), "mcq": pytest.approx(0.3)}
    fresh = CategoryEvaluation(trainer, {}, None, Reweighting(), {"mcq": 0.5, "calc": 0.5}, 4, tmp_path / "none.jsonl")
    fresh.on_train_begin(trainer.args, TrainerState(global_step=3, max_steps=6), TrainerControl())
    assert fresh.rows == [] and trainer.category_sampler.weights["mcq"] == pytest.approx(0.3)  # nothing to restore
    # resumed at step 2, the step of an evaluation: that evaluation is kept, and its weights are the ones in force
    trainer.category_sampler.set_weights({"mcq": 0.5, "calc": 0.5})
    at_two = CategoryEvaluation(trainer, {}, None, Reweighting(), {"mcq": 0.5, "calc": 0.5}, 4, log)
    at_two.on_train_begin(trainer.args, TrainerState(global_step=2, max_steps=6), TrainerControl())
    assert [row["step"] for row in at_two.rows] == [0, 2] and trainer.category_sampler.weights["mcq"] == pytest.approx(0.3)


def test_without_reweighting_the_sampler_keeps_its_weights(sft_model, tmp_path):
    from finloom.align.categories import CategoryEvaluation

    trainer, _, _ = make_trainer(sft_model, tmp_path, {"prompt_categories": ["mcq", "mcq", "calc", "calc"]})
    trainer.get_train_dataloader()
    evaluation = CategoryEvaluation(trainer, {}, None, Reweighting(enabled=False), {"mcq": 0.5, "calc": 0.5}, 4,
                                    tmp_path / "categories.jsonl")
    evaluation.apply({"mcq": 0.9, "calc": 0.1})
    assert trainer.category_sampler.weights == {"calc": 0.5, "mcq": 0.5}


# -- PPO: the GRPO loop plus a value head and GAE ----------------------------------------------------------------


def test_gae_by_hand():
    from finloom.align.ppo import gae

    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [0.1, 0.3, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second answer has two tokens
    advantages, returns = gae(rewards, values, mask, lam=0.5)
    # row 0: deltas (t = 0, 1, 2) 0.4 - 0.2, 0.6 - 0.4, 1 - 0.6 -> A2 = 0.4, A1 = 0.2 + 0.5 A2 = 0.4, A0 = 0.4
    # row 1: deltas 0.5 + 0.3 - 0.1 = 0.7, 0 - 0.3 (nothing after its last token) -> A1 = -0.3, A0 = 0.7 - 0.15
    expected = torch.tensor([[0.4, 0.4, 0.4], [0.55, -0.3, 0.0]])
    assert torch.allclose(advantages, expected, atol=1e-6)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-6)
    # a batch of one-token answers (max_completion_length 1): A = r - V, nothing follows
    advantages, returns = gae(torch.tensor([[1.0], [0.0]]), torch.tensor([[0.25], [0.5]]), torch.ones(2, 1), lam=0.5)
    assert advantages.tolist() == [[0.75], [-0.5]] and returns.tolist() == [[1.0], [0.0]]


def make_ppo(sft_model, tmp_path):
    from finloom.align.ppo import FinloomPPOConfig, FinloomPPOTrainer

    tokenizer = load_tokenizer(sft_model)
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
                    report_to="none", use_cpu=True, kl_beta=0.1, kl_top_k=8, seed=3, gae_lambda=0.9, value_coef=0.5)
    policy = load_causal_lm(sft_model)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    trainer = FinloomPPOTrainer(model=policy, reward_funcs=[RewardCombination(GRPOArgs())],
                                args=FinloomPPOConfig(**settings), train_dataset=Dataset.from_list(PROMPTS),
                                processing_class=tokenizer, ref_model=load_causal_lm(sft_model))
    return trainer, policy


def tall_rollout():
    """Eight two-token answers after three prompt tokens: more answers than tokens; one answer is empty, the last
    one's first token is a tool's output."""
    ids = torch.randint(5, 200, (8, 5), generator=torch.Generator().manual_seed(4))
    tool_mask = torch.ones(8, 2, dtype=torch.long)
    tool_mask[7, 0] = 0
    return {"prompt_ids": ids[:, :3], "prompt_mask": torch.ones(8, 3, dtype=torch.long), "completion_ids": ids[:, 3:],
            "completion_mask": torch.tensor([[1, 1], [1, 0], [1, 1], [0, 0], [1, 1], [1, 1], [1, 0], [1, 1]]),
            "tool_mask": tool_mask, "advantages": torch.zeros(8)}


@pytest.mark.parametrize("make_batch, totals, last_tokens, chunk", [
    (rollout, [0.8, None], [3, 2], 4),  # a reward, and an answer nothing could score
    (tall_rollout, [0.1, 0.2, 0.3, 0.4, 0.5, None, 0.7, 0.8], [1, 0, 1, 0, 1, 1, 0, 1], 3),  # in chunks of 3
], ids=["one-pass", "chunked"])
def test_ppo_advantages_are_gae_of_the_kl_and_the_answers_reward(sft_model, tmp_path, monkeypatch, make_batch, totals,
                                                                 last_tokens, chunk):
    from finloom.align.ppo import gae, whiten

    trainer, policy = make_ppo(sft_model, tmp_path)
    policy.train()
    trainer.args.per_device_train_batch_size = chunk
    with torch.no_grad():
        trainer.value_head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    batch = make_batch()
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", lambda self, inputs: dict(batch))
    trainer.reward_funcs[0].last_totals = totals
    out = trainer._generate_and_score_completions([])
    mask = (batch["completion_mask"] * batch.get("tool_mask", 1)).float()  # the answers' tokens, less tools' output
    kl = trainer.rollout_kl(batch) * mask
    rewards = -0.1 * kl
    for row, (total, last) in enumerate(zip(totals, last_tokens)):
        rewards[row, last] += total or 0.0  # on each answer's last token
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    start = batch["prompt_ids"].size(1) - 1  # the states before each completion token
    with torch.no_grad():
        hidden = policy.base_model(input_ids=ids, attention_mask=torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1))
        values = trainer.value_head(hidden.last_hidden_state[:, start:-1]).squeeze(-1) * mask
    advantages, returns = gae(rewards, values, mask, 0.9)
    assert torch.allclose(out["old_values"], values, atol=1e-5) and torch.allclose(out["returns"], returns, atol=1e-5)
    assert torch.allclose(out["advantages"], whiten(advantages, mask), atol=1e-5)
    assert trainer._metrics["train"]["value_mean"] == [pytest.approx(float(values.sum() / mask.sum()), abs=1e-6)]
    assert trainer._metrics["train"]["kl"] == [pytest.approx(float(kl.sum() / mask.sum()), rel=1e-5)]


@pytest.mark.parametrize("values, mask, expected", [
    ([[1.0, 2.0, 3.0], [4.0, 7.0, 7.0]], [[1, 1, 1], [1, 0, 0]],  # mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4
     [[-1.5 / 1.25 ** 0.5, -0.5 / 1.25 ** 0.5, 0.5 / 1.25 ** 0.5], [1.5 / 1.25 ** 0.5, 0.0, 0.0]]),
    ([[3.0, 5.0]], [[1, 0]], [[0.0, 0.0]]),  # one value: its own mean, variance 0
    ([[3.0, 5.0]], [[0, 0]], [[0.0, 0.0]]),  # none: zeros, not NaN
], ids=["four-values", "one-value", "no-values"])
def test_whiten_by_hand(values, mask, expected):
    from finloom.align.ppo import whiten

    assert torch.allclose(whiten(torch.tensor(values), torch.tensor(mask).float()), torch.tensor(expected), atol=1e-6)


ROLLOUT_MASK = [[1, 1, 1, 1], [1, 1, 1, 0]]


@pytest.mark.parametrize("value, target, completion_mask, tool_mask, error", [
    (0.5, 1.0, ROLLOUT_MASK, None, 0.64),  # the clipped value 0.2 is further from the return: its error (0.8 ** 2)
    (0.5, 0.0, ROLLOUT_MASK, None, 0.25),  # the unclipped value is further: 0.5 ** 2
    (-0.5, -1.0, ROLLOUT_MASK, None, 0.64),  # clipped to -0.2 from below
    (0.5, 1.0, [[1, 0, 0, 0], [0, 0, 0, 0]], None, 0.64),  # the mean over one token
    (0.5, 1.0, [[0, 0, 0, 0], [0, 0, 0, 0]], None, 0.0),  # no tokens: 0, not NaN
    (0.5, 1.0, ROLLOUT_MASK, [[1, 0, 1, 1], [1, 1, 1, 1]], 0.64),  # a tool's output token is not scored either
], ids=["clipped-error", "unclipped-error", "clipped-below", "one-token", "no-tokens", "tool-token"])
def test_ppo_value_loss_by_hand_is_the_larger_of_the_clipped_and_unclipped_errors(sft_model, tmp_path, monkeypatch,
                                                                                 value, target, completion_mask,
                                                                                 tool_mask, error):
    trainer, policy = make_ppo(sft_model, tmp_path)  # value_clip at its default, 0.2
    policy.train()
    monkeypatch.setattr(FinloomGRPOTrainer, "auxiliary_loss", lambda self, model, inputs: 0.125)  # the SFT-KL term
    batch = rollout() | {"completion_mask": torch.tensor(completion_mask)}
    if tool_mask is not None:
        batch["tool_mask"] = torch.tensor(tool_mask)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    hidden = policy.base_model(input_ids=ids).last_hidden_state
    trainer._keep_hidden(policy.base_model, (), (hidden, None))  # a backbone returning a tuple: the states first
    with torch.no_grad():
        trainer.value_head.bias.fill_(value)  # every value is the bias: the head's weight is zero
    returns = torch.full((2, 4), target)
    returns[1, 3] = 100.0  # past the second answer's end: not scored
    returns[0, 1] = 100.0 if tool_mask is not None else target  # the tool's token
    loss = trainer.auxiliary_loss(policy, dict(batch, old_values=torch.zeros(2, 4), returns=returns))
    assert loss.item() == pytest.approx(0.5 * 0.5 * error + 0.125)  # value_coef x half the mean error, plus GRPO's
    assert trainer._metrics["train"]["value_loss"] == [pytest.approx(0.5 * error)]


@pytest.mark.parametrize("tokens", [3, 4])
def test_a_completion_tokens_value_is_read_from_the_state_before_it(sft_model, tmp_path, tokens):
    """With a head that reads the first hidden feature, each value is the position of the state it was read from:
    the state before each of the last ``tokens`` positions (odd and even counts)."""
    trainer, _ = make_ppo(sft_model, tmp_path)
    hidden = torch.zeros(1, 10, trainer.value_head.in_features)
    hidden[0, :, 0] = torch.arange(10.0)
    with torch.no_grad():
        trainer.value_head.weight.zero_()
        trainer.value_head.weight[0, 0] = 1.0
    assert trainer.completion_values(hidden, tokens).tolist() == [[float(p) for p in range(9 - tokens, 9)]]


def test_the_configs_defaults():
    from finloom.align.ppo import FinloomPPOConfig

    config = FinloomPPOConfig(output_dir="unused", use_cpu=True, report_to="none")
    assert (config.kl_beta, config.kl_top_k, config.sft_kl_gamma, config.sft_kl_batch_size) == (0.05, 500, 0.0, None)
    assert (config.gae_lambda, config.value_coef, config.value_clip) == (0.95, 0.1, 0.2)


@pytest.mark.parametrize("name", ["kl_beta", "sft_kl_gamma"])
def test_a_negative_kl_weight_is_refused(name):
    """Used outside a recipe (whose schema also refuses it), the config still refuses a weight that would reward
    drifting from the reference; zero (the term off) is allowed."""
    FinloomGRPOConfig(output_dir="unused", use_cpu=True, report_to="none", **{name: 0.0})
    with pytest.raises(ValueError, match=f"{name} must be >= 0, got -0.1"):
        FinloomGRPOConfig(output_dir="unused", use_cpu=True, report_to="none", **{name: -0.1})


def test_ppo_value_loss_trains_the_head_and_the_export_leaves_it_out(sft_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    trainer, policy = make_ppo(sft_model, tmp_path)
    policy.train()
    batch = rollout()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    policy(input_ids=ids, attention_mask=torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1))  # the hook
    inputs = dict(batch, old_values=torch.zeros(2, 4), returns=torch.ones(2, 4))
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.auxiliary_loss(policy, inputs)
    # zero-initialised head: every value 0, clipped or not, so the loss is 0.5 x 1 on 7 tokens, times value_coef
    assert float(loss.detach()) == pytest.approx(0.5 * 0.5)
    loss.backward()
    assert trainer.value_head.weight.grad.abs().sum() > 0

    trainer.save_model(str(tmp_path / "export"))
    trainer.save_model(str(tmp_path / "checkpoint"), _internal_call=True)
    exported, checkpoint = (load_file(tmp_path / d / "model.safetensors") for d in ("export", "checkpoint"))
    assert not any("value_head" in name for name in exported) and "value_head.weight" in checkpoint
    assert policy.value_head is trainer.value_head  # still there for training after the export
