"""Fast unit tests of the self-constraint trainer and the precomputed top-k reference store, no tiny pipeline:
losses, metrics, gradients, lambda and stored top-k values against hand computation on 4-token bigram models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file
from torch import nn

from finloom.data.mixing import INDEX_FORMAT
from finloom.files import hash_json, hash_path
from finloom.llm.kl import reference_top_k
from finloom.pretrain.reference import FORMAT, PrecomputedReference, precompute_reference, reference_key
from finloom.pretrain.self_constraint import KLBudget, SelfConstraintConfig, SelfConstraintTrainer, evaluating
from test_pretrain_objective import POLICY, REFERENCE, _kl, _softmax  # the hand-computed objective's data


def ce(token, target):
    """Policy cross-entropy of ``target`` after ``token`` (a bigram: the logits are POLICY's row of the token)."""
    return -math.log(_softmax(POLICY[token])[target])


def kl(token):
    """Reverse KL(p_policy || p_ref) over the full vocabulary after ``token``."""
    return _kl(_softmax(POLICY[token]), _softmax(REFERENCE[token]))


def kl_top2_tail(token):
    """Reverse KL over the reference's top 2 tokens plus one bucket for everything else."""
    p, q = _softmax(POLICY[token]), _softmax(REFERENCE[token])
    top = sorted(range(4), key=lambda v: -REFERENCE[token][v])[:2]
    rest = [v for v in range(4) if v not in top]
    return _kl([p[top[0]], p[top[1]], sum(p[v] for v in rest)], [q[top[0]], q[top[1]], sum(q[v] for v in rest)])


class Bigram(nn.Module):
    """A real (if tiny) causal LM: the next-token logits depend on the current token only. It records the
    inputs of its last call."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table))
        self.seen = {}

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.seen = {"input_ids": input_ids, "attention_mask": attention_mask, "grad": torch.is_grad_enabled()}
        return type("Output", (), {"logits": self.table[input_ids]})()


def _trainer(tmp_path, policy, ref_model=None, reference=None, **options) -> SelfConstraintTrainer:
    args = SelfConstraintConfig(output_dir=str(tmp_path), report_to="none", **{"finance_domain": 0, **options})
    return SelfConstraintTrainer(model=policy, args=args, ref_model=ref_model, reference=reference)


def _assert_metrics(trainer, expected):
    """The trainer's collected metrics: the same names, each list equal to ``expected``'s within 1e-6."""
    assert sorted(trainer._metrics) == sorted(expected)
    for name, values in expected.items():
        assert trainer._metrics[name] == pytest.approx(values, abs=1e-6), name


def _batch(rows, domains, labels=None, positions=None):
    ids = torch.tensor(rows)
    return {"input_ids": ids, "labels": ids.clone() if labels is None else torch.tensor(labels),
            "domain": torch.tensor(domains), "position": torch.tensor(positions or list(range(len(rows))))}


# --- configuration, small pieces --------------------------------------------------------------------------------


def test_config_defaults_are_reverse_full_vocabulary_lambda_one(tmp_path):
    args = SelfConstraintConfig(output_dir=str(tmp_path), report_to="none")
    assert (args.kl_lambda, args.kl_direction, args.kl_top_k, args.kl_tail, args.kl_warmup_steps, args.kl_budget,
            args.kl_budget_rate, args.general_ce_weight, args.finance_domain, args.remove_unused_columns) == (
        1.0, "reverse", None, True, 0, None, 0.05, 0.0, 0, False)


def test_evaluating_switches_to_eval_and_restores_the_mode_even_on_error():
    module = nn.Dropout(0.5)
    with evaluating(module):
        assert not module.training
    assert module.training
    with pytest.raises(RuntimeError, match="inside"), evaluating(module):
        raise RuntimeError("inside")
    assert module.training
    module.eval()
    with evaluating(module):
        assert not module.training
    assert not module.training


def test_kl_budget_moves_lambda_by_the_exponential_rule_within_its_clamp():
    budget = KLBudget(2.0, 0.2, 0.1)
    budget.update(0.5)  # KL 2.5 times the budget: lambda rises
    assert budget.weight == pytest.approx(2.0 * math.exp(0.1 * 1.5), rel=1e-12)
    before = budget.weight
    budget.update(0.05)  # a quarter of the budget: lambda falls
    assert budget.weight == pytest.approx(before * math.exp(0.1 * -0.75), rel=1e-12)
    assert budget.state() == {"args": {"weight": budget.weight, "budget": 0.2, "rate": 0.1}, "attributes": {}}
    low, high = KLBudget(1e-6, 1.0, 0.1), KLBudget(1e6, 1.0, 0.1)
    low.update(1.0)
    high.update(1.0)
    assert (low.weight, high.weight) == (1e-4, 1e4)


def test_cpt_log_adds_the_perplexity_of_each_eval_loss_only(tmp_path):
    trainer = _trainer(tmp_path, Bigram(POLICY))
    trainer.log({"eval_finance_loss": 1.2345678, "eval_general_loss": 60.0, "eval_runtime": 0.5, "train_loss": 2.0})
    logged = trainer.state.log_history[-1]
    assert logged["eval_finance_ppl"] == round(math.exp(1.2345678), 4) == 3.4369
    assert logged["eval_general_ppl"] == round(math.exp(50.0), 4)  # capped at exp(50)
    assert sorted(k for k in logged if k.endswith("_ppl")) == ["eval_finance_ppl", "eval_general_ppl"]


def test_objective_metrics_are_averaged_into_training_logs_only(tmp_path):
    trainer = _trainer(tmp_path, Bigram(POLICY))
    trainer._metrics["finance_ce"] += [1.0, 2.0, 4.0]
    trainer._metrics["general_kl"] += [0.1234567891]
    trainer.log({"eval_finance_loss": 1.0})  # an evaluation log: the metrics wait for the next training log
    assert not any(k.startswith("self_constraint/") for k in trainer.state.log_history[-1])
    assert dict(trainer._metrics) == {"finance_ce": [1.0, 2.0, 4.0], "general_kl": [0.1234567891]}
    trainer.log({"loss": 3.0})
    logged = trainer.state.log_history[-1]
    assert (logged["self_constraint/finance_ce"], logged["self_constraint/general_kl"]) == (2.333333, 0.123457)
    assert not trainer._metrics


def test_the_trainer_freezes_the_reference_and_adds_a_budget_controller_only_with_a_budget(tmp_path):
    reference = Bigram(REFERENCE).train()
    plain = _trainer(tmp_path / "a", Bigram(POLICY), ref_model=reference)
    assert not reference.training and not reference.table.requires_grad
    assert not [c for c in plain.callback_handler.callbacks if isinstance(c, KLBudget)]
    assert plain.kl_weight() == 1.0
    budgeted = _trainer(tmp_path / "b", Bigram(POLICY), kl_lambda=2.0, kl_budget=0.3, kl_budget_rate=0.5)
    [controller] = [c for c in budgeted.callback_handler.callbacks if isinstance(c, KLBudget)]
    assert (controller.weight, controller.budget, controller.rate) == (2.0, 0.3, 0.5)
    controller.weight = 7.0
    assert budgeted.kl_weight() == 7.0  # the controller's lambda, not the configured one


# --- the loss --------------------------------------------------------------------------------------------------


def test_loss_metrics_and_gradient_by_hand_with_three_domains_and_an_attention_mask(tmp_path):
    """Finance is domain 1 of 0, 1, 2 (both others are general); one finance block and two general ones, the second
    with a single target; the model sees the rows regrouped finance first, its attention mask regrouped with them."""
    policy = Bigram(POLICY)
    batch = _batch([[3, 0, 1, 2], [0, 1, 2, 3], [2, 1, 3, 0]], [2, 1, 0],
                   labels=[[3, 0, 1, 2], [0, 1, 2, 3], [2, 1, -100, -100]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]])
    batch["attention_mask"] = mask
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), finance_domain=1, kl_lambda=0.5,
                       general_ce_weight=0.25)
    loss = trainer.compute_loss(policy, dict(batch))
    assert torch.equal(policy.seen["input_ids"], batch["input_ids"][[1, 0, 2]])
    assert torch.equal(policy.seen["attention_mask"], mask[[1, 0, 2]])

    finance = ce(0, 1) + ce(1, 2) + ce(2, 3)
    general_pairs = [(3, 0), (0, 1), (1, 2), (2, 1)]  # block 3 0 1 2, then block 2 1 with its other labels masked
    general_kl = sum(kl(t) for t, _ in general_pairs)
    general_ce = sum(ce(t, n) for t, n in general_pairs)
    assert loss.item() == pytest.approx((finance + 0.5 * general_kl + 0.25 * general_ce) / 7, abs=1e-6)
    _assert_metrics(trainer, {"finance_ce": [finance / 3], "general_kl": [general_kl / 4],
                                                    "general_ce": [general_ce / 4], "lambda": [0.5]})

    # the gradient is that of the same objective written out in torch (general CE included: its weight is > 0)
    loss.backward()
    table = torch.tensor(POLICY, requires_grad=True)
    logp, logq = table.log_softmax(-1), torch.tensor(REFERENCE).log_softmax(-1)
    expected = sum(-logp[t, n] for t, n in ((0, 1), (1, 2), (2, 3)))
    for t, n in general_pairs:
        expected = expected + 0.5 * (logp[t].exp() * (logp[t] - logq[t])).sum() - 0.25 * logp[t, n]
    (expected / 7).backward()
    assert torch.allclose(policy.table.grad, table.grad, atol=1e-6)


def test_single_token_and_fully_masked_batches_by_hand(tmp_path):
    policy = Bigram(POLICY)
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), kl_lambda=0.5, general_ce_weight=0.25)
    # finance only, one target: no general metrics at all, the loss is that one CE
    loss = trainer.compute_loss(policy, _batch([[0, 1, 2]], [0], labels=[[0, 1, -100]]))
    assert loss.item() == pytest.approx(ce(0, 1), abs=1e-6)
    _assert_metrics(trainer, {"finance_ce": [ce(0, 1)], "lambda": [0.5]})
    trainer._metrics.clear()
    # one target in each domain: each metric is per its one token
    loss = trainer.compute_loss(policy, _batch([[0, 1, 2], [2, 1, 3]], [0, 1], labels=[[0, 1, -100], [2, 1, -100]]))
    assert loss.item() == pytest.approx((ce(0, 1) + 0.5 * kl(2) + 0.25 * ce(2, 1)) / 2, abs=1e-6)
    _assert_metrics(trainer, {"finance_ce": [ce(0, 1)], "general_kl": [kl(2)],
                                                    "general_ce": [ce(2, 1)], "lambda": [0.5]})
    trainer._metrics.clear()
    # nothing to predict: a zero loss and zero metrics, never a division by zero
    loss = trainer.compute_loss(policy, _batch([[0, 1, 2], [2, 1, 3]], [0, 1], labels=[[-100] * 3] * 2))
    assert loss.item() == 0.0
    assert dict(trainer._metrics) == {"finance_ce": [0.0], "general_kl": [0.0], "general_ce": [0.0], "lambda": [0.5]}


def test_a_large_all_finance_batch_has_no_general_part(tmp_path):
    """300 finance rows (past CPython's small-int cache, so the row counts are compared by value): CE only."""
    policy = Bigram(POLICY)
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), general_ce_weight=0.25)
    loss = trainer.compute_loss(policy, _batch([[0, 1, 2]] * 300, [0] * 300))
    assert loss.item() == pytest.approx((ce(0, 1) + ce(1, 2)) / 2, abs=1e-6)
    _assert_metrics(trainer, {"finance_ce": [(ce(0, 1) + ce(1, 2)) / 2], "lambda": [1.0]})


def test_return_outputs_gives_the_model_outputs_too(tmp_path):
    policy = Bigram(POLICY)
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE))
    loss, outputs = trainer.compute_loss(policy, _batch([[0, 1, 2]], [0]), return_outputs=True)
    assert loss.item() == pytest.approx((ce(0, 1) + ce(1, 2)) / 2, abs=1e-6)
    assert torch.equal(outputs.logits, policy.table[torch.tensor([[0, 1, 2]])])


def test_the_loss_is_a_per_micro_batch_mean_divided_by_gradient_accumulation_once(tmp_path):
    policy = Bigram(POLICY)
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), gradient_accumulation_steps=2)
    trainer.current_gradient_accumulation_steps = 2
    step_loss = trainer.training_step(policy, _batch([[0, 1, 2]], [0]))
    assert step_loss.item() == pytest.approx((ce(0, 1) + ce(1, 2)) / 2 / 2, abs=1e-6)


def test_lambda_warms_up_with_the_global_step(tmp_path):
    policy = Bigram(POLICY)
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), kl_lambda=0.5, kl_warmup_steps=4)
    trainer.state.global_step = 1
    loss = trainer.compute_loss(policy, _batch([[2, 1, 3]], [1]))
    assert loss.item() == pytest.approx(0.125 * (kl(2) + kl(1)) / 2, abs=1e-6)
    assert trainer._metrics["lambda"] == [0.125]


def test_a_kl_budget_updates_lambda_from_each_training_batch_in_turn(tmp_path):
    policy = Bigram(POLICY)
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), kl_lambda=2.0, kl_budget=0.3,
                       kl_budget_rate=0.5)
    [controller] = [c for c in trainer.callback_handler.callbacks if isinstance(c, KLBudget)]
    first, second = (kl(2) + kl(1)) / 2, (kl(0) + kl(3)) / 2
    assert first != pytest.approx(second, abs=1e-3)
    loss = trainer.compute_loss(policy, _batch([[2, 1, 3]], [1]))
    assert loss.item() == pytest.approx(2.0 * first, abs=1e-6)  # the batch is weighted by lambda before its update
    after_first = 2.0 * math.exp(0.5 * (first / 0.3 - 1))
    assert controller.weight == pytest.approx(after_first, rel=1e-5) and trainer.kl_weight() == controller.weight
    loss = trainer.compute_loss(policy, _batch([[0, 3, 1]], [1]))
    assert loss.item() == pytest.approx(after_first * second, rel=1e-5)
    after_second = after_first * math.exp(0.5 * (second / 0.3 - 1))
    assert controller.weight == pytest.approx(after_second, rel=1e-5)
    policy.eval()  # evaluation batches measure, they do not steer
    trainer.compute_loss(policy, _batch([[2, 1, 3]], [1]))
    assert controller.weight == pytest.approx(after_second, rel=1e-5)
    assert trainer._metrics["lambda"] == pytest.approx([2.0, after_first, after_second], rel=1e-5)


# --- the precomputed reference store ---------------------------------------------------------------------------


def _shards(folder, rows, domains, per_shard, names=("general", "finance", "other")):
    """A token-shard folder as the data stage writes it (input_ids, domain, block per shard, and index.json)."""
    folder.mkdir(parents=True)
    shards = []
    for start in range(0, len(rows), per_shard):
        name = f"shard-{len(shards):05d}.safetensors"
        save_numpy({"input_ids": np.array(rows[start:start + per_shard], dtype=np.int32),
                    "domain": np.array(domains[start:start + per_shard], dtype=np.int64),
                    "block": np.arange(start, start + len(rows[start:start + per_shard]), dtype=np.int64)},
                   str(folder / name))
        shards.append({"file": name, "blocks": len(rows[start:start + per_shard])})
    index = {"format": INDEX_FORMAT, "seq_len": len(rows[0]) if rows else 3, "blocks": len(rows),
             "domains": list(names), "shards": shards}
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


ROWS = [[3, 0, 1], [0, 1, 2], [2, 1, 3], [1, 1, 0], [0, 2, 3], [3, 3, 1], [1, 2, 0]]
DOMAINS = [2, 1, 0, 1, 0, 2, 0]  # finance is 1: general blocks at positions 0, 2, 4, 5, 6
GENERAL = [0, 2, 4, 5, 6]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_precompute_stores_the_reference_top_k_of_every_general_block(tmp_path, dtype):
    shards = _shards(tmp_path / "shards", ROWS, DOMAINS, per_shard=4)
    model = Bigram(REFERENCE)
    index = precompute_reference(model, shards, tmp_path / "store", top_k=2, finance_domain=1, batch_size=2,
                                 dtype=dtype, blocks_per_shard=4)  # batches of 2, 2, 1: a shard once 4 are in
    assert index == {"format": FORMAT, "top_k": 2, "dtype": dtype, "seq_len": 3, "finance_domain": 1, "blocks": 5,
                     "shards": [{"file": "ref-00000.safetensors", "blocks": 4},
                                {"file": "ref-00001.safetensors", "blocks": 1}],
                     "shard_index_hash": hash_path(shards / "index.json")}
    assert json.loads((tmp_path / "store" / "index.json").read_text()) == index
    assert load_file(tmp_path / "store" / "ref-00000.safetensors")["positions"].tolist() == [0, 2, 4, 5]
    assert load_file(tmp_path / "store" / "ref-00001.safetensors")["positions"].tolist() == [6]

    store = PrecomputedReference(tmp_path / "store")
    order = [6, 0, 5, 2, 4, 0]  # every row of both files, one twice, out of order
    indices, logprobs = store.lookup(order)
    with torch.no_grad():
        want_indices, want_logprobs = reference_top_k(model.table[torch.tensor([ROWS[p] for p in order])], 2)
    assert indices.dtype == torch.long and logprobs.dtype == torch.float32 and indices.shape == (6, 3, 2)
    assert torch.equal(indices, want_indices)
    assert torch.equal(logprobs, want_logprobs.to(getattr(torch, dtype)).float())
    with pytest.raises(KeyError, match="block 1 is not in the reference store"):
        store.lookup([0, 1])


def test_precompute_records_grad_free_values(tmp_path):
    """Called outside ``torch.no_grad`` with a trainable model, the reference pass still runs without autograd
    (no graph is kept for a frozen pass), in one shard by default."""
    shards = _shards(tmp_path / "shards", ROWS, DOMAINS, per_shard=4)
    model = Bigram(REFERENCE)
    assert torch.is_grad_enabled()
    index = precompute_reference(model, shards, tmp_path / "store", top_k=2, finance_domain=1)
    assert model.seen["grad"] is False and not model.training
    assert index["blocks"] == 5 and index["shards"] == [{"file": "ref-00000.safetensors", "blocks": 5}]


def test_precompute_shard_size_and_batch_defaults(tmp_path):
    """264 general blocks: 256 to a file by default, in batches of 8 (33 of them), so 256 and 8; in batches of 3 with
    4 to a file, 6 to a file."""
    rows = [[v % 4, (v // 4) % 4] for v in range(266)]
    domains = [1, 1] + [0] * 264
    shards = _shards(tmp_path / "shards", rows, domains, per_shard=100)
    model = Bigram(REFERENCE)
    by_default = precompute_reference(model, shards, tmp_path / "a", top_k=1, finance_domain=1)
    assert [s["blocks"] for s in by_default["shards"]] == [256, 8]
    one_at_a_time = precompute_reference(model, shards, tmp_path / "b", top_k=1, finance_domain=1, batch_size=1)
    assert [s["blocks"] for s in one_at_a_time["shards"]] == [256, 8]
    # a file is closed once it holds at least blocks_per_shard blocks, even when a batch goes past that number
    overshooting = precompute_reference(model, shards, tmp_path / "c", top_k=1, finance_domain=1, batch_size=3,
                                        blocks_per_shard=4)
    assert [s["blocks"] for s in overshooting["shards"]] == [6] * 44


def test_precompute_over_no_blocks_writes_an_empty_store(tmp_path):
    shards = _shards(tmp_path / "shards", [], [], per_shard=4)
    index = precompute_reference(Bigram(REFERENCE), shards, tmp_path / "store", top_k=2, finance_domain=1)
    assert (index["blocks"], index["shards"]) == (0, [])


@pytest.mark.parametrize("bad", ["finloom-reference-topk/0", "finloom-reference-topk/2", None])
def test_a_store_of_another_format_is_refused(tmp_path, bad):
    shards = _shards(tmp_path / "shards", ROWS, DOMAINS, per_shard=4)
    precompute_reference(Bigram(REFERENCE), shards, tmp_path / "store", top_k=2, finance_domain=1)
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    index.pop("format") if bad is None else index.update(format=bad)
    (tmp_path / "store" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a finloom reference store"):
        PrecomputedReference(tmp_path / "store")


def test_the_reference_key_hashes_model_shards_and_settings(tmp_path):
    shards = _shards(tmp_path / "shards", ROWS, DOMAINS, per_shard=4)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    key = reference_key(model, shards, 2, "float16", 1)
    assert key == hash_json({"model": hash_path(model), "shards": hash_path(shards / "index.json"), "top_k": 2,
                             "dtype": "float16", "finance_domain": 1})[:16]
    assert len(key) == 16
    assert len({key, reference_key(model, shards, 3, "float16", 1), reference_key(model, shards, 2, "float32", 1),
                reference_key(model, shards, 2, "float16", 0)}) == 4


def test_a_precomputed_reference_gives_the_online_top_k_loss_by_hand(tmp_path):
    """The trainer reads a store by block position; top 2 with a tail bucket (the default), by hand."""
    shards = _shards(tmp_path / "shards", ROWS, DOMAINS, per_shard=4)
    precompute_reference(Bigram(REFERENCE), shards, tmp_path / "store", top_k=2, finance_domain=1, dtype="float32")
    policy = Bigram(POLICY)
    batch = _batch([ROWS[4], ROWS[1], ROWS[6]], [0, 1, 0], positions=[4, 1, 6])
    stored = _trainer(tmp_path / "a", policy, reference=PrecomputedReference(tmp_path / "store"), kl_top_k=2,
                      finance_domain=1)
    online = _trainer(tmp_path / "b", policy, ref_model=Bigram(REFERENCE), kl_top_k=2, finance_domain=1)
    loss = stored.compute_loss(policy, dict(batch))
    general = [(0, 2), (2, 3), (1, 2), (2, 0)]  # blocks 0 2 3 and 1 2 0
    by_hand = (ce(0, 1) + ce(1, 2) + sum(kl_top2_tail(t) for t, _ in general)) / 6
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    assert online.compute_loss(policy, dict(batch)).item() == pytest.approx(by_hand, abs=1e-6)
