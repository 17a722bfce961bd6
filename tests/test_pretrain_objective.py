"""Domain self-constraint: KL forms against hand computation, the loss on a tiny example, reference paths, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from finloom.data.mixing import TokenShardDataset, collate_blocks
from finloom.llm.kl import lambda_at, token_kl
from finloom.pretrain.reference import PrecomputedReference, precompute_reference
from finloom.pretrain.self_constraint import SelfConstraintConfig, SelfConstraintTrainer


def _softmax(row):
    top = max(row)
    exp = [math.exp(v - top) for v in row]
    return [e / sum(exp) for e in exp]


def _kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


POLICY = [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [-2.0, 1.0, 0.5, 3.0], [0.0, 0.0, 0.0, 1.0]]
REFERENCE = [[1.0, 0.9, 0.0, -1.0], [0.5, -0.5, 0.2, 0.0], [0.0, 2.0, 1.0, 0.7], [1.0, 0.0, -1.0, 0.5]]  # no ties


def test_full_kl_both_directions_by_hand():
    policy, reference = torch.tensor(POLICY), torch.tensor(REFERENCE)
    reverse = token_kl(policy, reference, direction="reverse")
    forward = token_kl(policy, reference, direction="forward")
    for row in range(4):
        p, q = _softmax(POLICY[row]), _softmax(REFERENCE[row])
        assert reverse[row].item() == pytest.approx(_kl(p, q), abs=1e-6)
        assert forward[row].item() == pytest.approx(_kl(q, p), abs=1e-6)


def test_top_k_kl_renormalises_over_the_reference_top_k_by_hand():
    policy, reference = torch.tensor(POLICY), torch.tensor(REFERENCE)
    got = token_kl(policy, reference, top_k=2)
    for row in range(4):
        top = sorted(range(4), key=lambda v: -REFERENCE[row][v])[:2]
        p = _softmax([POLICY[row][v] for v in top])
        q = _softmax([REFERENCE[row][v] for v in top])
        assert got[row].item() == pytest.approx(_kl(p, q), abs=1e-6)


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_top_k_with_k_equal_to_vocabulary_is_the_full_kl(direction):
    generator = torch.Generator().manual_seed(0)
    policy, reference = torch.randn(3, 5, 50, generator=generator), torch.randn(3, 5, 50, generator=generator)
    full = token_kl(policy, reference, direction=direction)
    assert torch.allclose(token_kl(policy, reference, top_k=50, direction=direction), full, atol=1e-5)
    assert torch.allclose(token_kl(policy, reference, top_k=500, direction=direction), full, atol=1e-5)


def test_lambda_warms_up_linearly():
    assert [lambda_at(step, 2.0, 4) for step in (0, 2, 4, 10)] == [0.0, 1.0, 2.0, 2.0]
    assert [lambda_at(step, 2.0, 1) for step in (0, 1)] == [0.0, 2.0]  # one warm-up step is still a warm-up
    assert lambda_at(0, 2.0, 0) == lambda_at(0, 2.0, -1) == 2.0  # none


def test_the_direction_is_read_by_value_and_an_unknown_one_is_refused_by_hand():
    """Directions come from parsed recipes (not interned literals); a name sorting before "forward" or after
    "reverse" is still refused."""
    policy, reference = torch.tensor(POLICY), torch.tensor(REFERENCE)
    for name, hand in (("rev" + "erse".strip(), _kl), ("for" + "ward".strip(), lambda p, q: _kl(q, p))):
        got = token_kl(policy, reference, direction="".join(list(name)))
        assert got[0].item() == pytest.approx(hand(_softmax(POLICY[0]), _softmax(REFERENCE[0])), abs=1e-6)
    for unknown in ("backward", "sideways"):
        with pytest.raises(ValueError, match="KL direction must be one of"):
            token_kl(policy, reference, direction=unknown)


def test_a_precomputed_top_k_gives_the_online_top_k_kl_and_exactly_one_reference_is_required():
    from finloom.llm.kl import reference_top_k

    policy, reference = torch.tensor(POLICY), torch.tensor(REFERENCE)
    stored = reference_top_k(reference, 2)
    assert torch.allclose(token_kl(policy, reference_topk=stored), token_kl(policy, reference, top_k=2), atol=1e-6)
    for both_or_neither in ({"reference_logits": reference, "reference_topk": stored}, {}):
        with pytest.raises(ValueError, match="give exactly one of reference_logits or reference_topk"):
            token_kl(policy, **both_or_neither)
    assert lambda_at(0, 2.0, 0) == 2.0


class Bigram(nn.Module):
    """A real (if tiny) causal LM: the next-token logits depend on the current token only."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return type("Output", (), {"logits": self.table[input_ids]})()


def _trainer(tmp_path, policy, **kwargs) -> SelfConstraintTrainer:
    options = {"finance_domain": 0, **{k: v for k, v in kwargs.items() if k not in ("ref_model", "reference")}}
    args = SelfConstraintConfig(output_dir=str(tmp_path), report_to="none", **options)
    return SelfConstraintTrainer(model=policy, args=args, ref_model=kwargs.get("ref_model"),
                                 reference=kwargs.get("reference"))


@pytest.mark.parametrize("general_first", [False, True])  # the trainer regroups rows by domain; order must not matter
def test_loss_equals_hand_computed_value(tmp_path, general_first):
    policy, reference = Bigram(POLICY), Bigram(REFERENCE)
    ids, domain = torch.tensor([[0, 1, 2], [2, 1, 3]]), torch.tensor([0, 1])
    if general_first:
        ids, domain = ids.flip(0), domain.flip(0)
    batch = {"input_ids": ids, "labels": ids.clone(), "domain": domain, "position": torch.tensor([0, 1])}
    trainer = _trainer(tmp_path, policy, ref_model=reference, kl_lambda=0.5, general_ce_weight=0.25)
    loss = trainer.compute_loss(policy, dict(batch))

    def ce(row, target):
        return -math.log(_softmax(POLICY[row])[target])

    finance = ce(0, 1) + ce(1, 2)  # finance block 0 1 2: predict 1 from 0, 2 from 1
    general = sum(0.5 * _kl(_softmax(POLICY[t]), _softmax(REFERENCE[t])) + 0.25 * ce(t, nxt)
                  for t, nxt in ((2, 1), (1, 3)))
    assert loss.item() == pytest.approx((finance + general) / 4, abs=1e-6)
    loss.backward()
    assert policy.table.grad is not None and reference.table.grad is None


def test_ce_only_settings_reduce_to_plain_cross_entropy(tmp_path):
    policy = Bigram(POLICY)
    ids = torch.tensor([[0, 1, 2], [2, 1, 3]])
    batch = {"input_ids": ids, "labels": ids.clone(), "domain": torch.tensor([0, 1]), "position": torch.tensor([0, 1])}
    trainer = _trainer(tmp_path, policy, ref_model=Bigram(REFERENCE), kl_lambda=0.0, general_ce_weight=1.0)
    logits = policy(ids).logits[:, :-1]
    expected = nn.functional.cross_entropy(logits.reshape(-1, 4), ids[:, 1:].reshape(-1))
    assert trainer.compute_loss(policy, dict(batch)).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.fixture(scope="module")
def tiny_lm(tiny_run):
    from finloom.llm.loading import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_run / "base" / "model"), load_tokenizer(tiny_run / "base" / "model"), tiny_run


def test_online_and_precomputed_reference_give_the_same_loss(tiny_lm, tmp_path):
    from finloom.llm.loading import load_causal_lm

    reference, _, run = tiny_lm
    shards = run / "data" / "shards" / "pretrain"
    dataset = TokenShardDataset(shards)
    finance = dataset.index["domains"].index("finance")
    store = tmp_path / "ref"
    index = precompute_reference(reference, shards, store, top_k=16, finance_domain=finance, batch_size=4,
                                 dtype="float32", blocks_per_shard=7)
    assert index["blocks"] == sum(1 for item in dataset if item["domain"] != finance)
    assert len(index["shards"]) > 1
    policy = load_causal_lm(run / "pretrain" / "model")  # a model that moved away from the reference
    items = list(TokenShardDataset(shards, seed=3))
    chosen = [i for i in items if i["domain"] == finance][:3] + [i for i in items if i["domain"] != finance][:5]
    batch = collate_blocks(tags=True)(chosen)
    online = _trainer(tmp_path / "a", policy, ref_model=reference, kl_top_k=16, finance_domain=finance)
    stored = _trainer(tmp_path / "b", policy, reference=PrecomputedReference(store), kl_top_k=16,
                      finance_domain=finance)
    with torch.no_grad():
        online_loss = online.compute_loss(policy, dict(batch))
        stored_loss = stored.compute_loss(policy, dict(batch))
    assert online_loss.item() > 0
    assert stored_loss.item() == pytest.approx(online_loss.item(), rel=1e-5)
    with pytest.raises(KeyError, match="not in the reference store"):
        PrecomputedReference(store).lookup([next(i for i, item in enumerate(dataset) if item["domain"] == finance)])


def test_resume_from_a_checkpoint_is_exact(tiny_lm, tmp_path):
    """Eight steps straight equal four steps, a stop, and a resume from checkpoint-4: same weights, same losses."""
    from transformers import TrainerCallback

    from finloom.llm.loading import load_causal_lm

    _, tokenizer, run = tiny_lm
    shards = run / "data" / "shards" / "pretrain"
    finance = TokenShardDataset(shards).index["domains"].index("finance")

    class StopAt(TrainerCallback):
        def __init__(self, step):
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                control.should_training_stop = True

    def trainer(folder, stop=None):
        model = load_causal_lm(run / "base" / "model")
        args = SelfConstraintConfig(output_dir=str(folder), report_to="none", max_steps=8, save_steps=4,
                                    per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, seed=5,
                                    data_seed=5, finance_domain=finance, disable_tqdm=True)
        made = SelfConstraintTrainer(model=model, args=args, train_dataset=TokenShardDataset(shards, seed=5),
                                     data_collator=collate_blocks(tags=True),
                                     ref_model=load_causal_lm(run / "base" / "model"),
                                     callbacks=[StopAt(stop)] if stop else None)
        return made

    straight = trainer(tmp_path / "straight")
    straight.train()
    interrupted = trainer(tmp_path / "resumed", stop=4)
    interrupted.train()
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-4"))

    def losses(t):
        return [(e["step"], e["loss"]) for e in t.state.log_history if "loss" in e]

    assert losses(resumed)[-4:] == losses(straight)[-4:]
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(weight, resumed.model.state_dict()[name]), name


def test_pretrain_stage_logs_objective_heldout_loss_and_tensorboard(tiny_run):
    history = json.loads((tiny_run / "pretrain" / "log_history.json").read_text())
    trained = [entry for entry in history if "loss" in entry]
    assert all("self_constraint/general_kl" in entry and "self_constraint/finance_ce" in entry for entry in trained)
    assert [e["step"] for e in history if "eval_finance_loss" in e] == [e["step"] for e in history
                                                                       if "eval_general_loss" in e] == [0, 4, 8]
    assert all(e["eval_general_ppl"] == pytest.approx(math.exp(e["eval_general_loss"]), rel=1e-3)
               for e in history if "eval_general_loss" in e)
    manifest = json.loads((tiny_run / "pretrain" / "manifest.json").read_text())
    assert manifest["metrics"]["objective"] == "self_constraint"
    assert manifest["metrics"]["heldout_general_loss"] > 0
    assert list((tiny_run / "pretrain" / "tensorboard").glob("events.out.tfevents.*"))


def test_precompute_ref_command_then_pretrain_reads_the_store(tiny_data, tmp_path):
    from conftest import finloom_cli, tiny_recipe, write_recipe
    from finloom.recipe import load_recipe
    from finloom.runner import Runner
    from finloom.stages import read_manifest

    recipe = tiny_recipe(**{"pretrain.objective": {"kl_top_k": 16, "reference": "precomputed"}})
    path = write_recipe(tiny_data, recipe, "precomputed.yaml")
    run_dir = tmp_path / "run"
    runner = Runner(load_recipe(path), run_dir)
    runner.run(only="data")
    runner.run(only="base")
    done = finloom_cli("pretrain", "precompute-ref", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    [store] = (run_dir / "reference").iterdir()
    index = json.loads((store / "index.json").read_text())
    assert index["top_k"] == 16 and index["blocks"] > 0
    written = (store / "index.json").stat().st_mtime_ns
    assert runner.run(only="pretrain") == {"pretrain": "done"}
    assert (store / "index.json").stat().st_mtime_ns == written  # read, not recomputed
    history = json.loads((run_dir / "pretrain" / "log_history.json").read_text())
    assert all(entry["self_constraint/general_kl"] >= 0 for entry in history if "loss" in entry)
    assert read_manifest(run_dir, "pretrain")["status"] == "done"
    wrong = finloom_cli("pretrain", "precompute-ref", "--run-dir", str(tmp_path / "nowhere"))
    assert wrong.returncode == 2 and "not a finloom run directory" in wrong.stderr


def test_top_k_with_a_tail_penalises_mass_leaving_the_top_k_by_hand():
    reference = torch.tensor([[3.0, 2.0, 0.0, 0.0]])  # top 2: tokens 0 and 1
    policy = torch.tensor([[3.0, 2.0, 4.0, 4.0]])  # same ratio inside the top 2, most mass moved out of it
    renormalised = token_kl(policy, reference, top_k=2)
    tailed = token_kl(policy, reference, top_k=2, tail=True)
    assert renormalised.item() == pytest.approx(0.0, abs=1e-6)  # the renormalised form does not see it
    p, q = _softmax([3.0, 2.0, 4.0, 4.0]), _softmax([3.0, 2.0, 0.0, 0.0])
    by_hand = _kl([p[0], p[1], p[2] + p[3]], [q[0], q[1], q[2] + q[3]])
    assert tailed.item() == pytest.approx(by_hand, abs=1e-5) and by_hand > 1.0
    generator = torch.Generator().manual_seed(1)
    policy, reference = torch.randn(2, 3, 40, generator=generator), torch.randn(2, 3, 40, generator=generator)
    assert torch.allclose(token_kl(policy, reference, top_k=40, tail=True), token_kl(policy, reference), atol=1e-5)


def test_the_reference_store_is_keyed_by_the_model_itself(tiny_run, tmp_path):
    """Two models with one tokenizer (the base and the pretrained model of a run) never share a store."""
    from finloom.errors import BadInput
    from finloom.pretrain.reference import reference_key

    shards = tiny_run / "data" / "shards" / "pretrain"
    base, pretrained = tiny_run / "base" / "model", tiny_run / "pretrain" / "model"
    assert (base / "tokenizer.json").read_bytes() == (pretrained / "tokenizer.json").read_bytes()
    key = reference_key(base, shards, 16, "float16", 1)
    assert key == reference_key(str(base), shards, 16, "float16", 1)
    assert key != reference_key(pretrained, shards, 16, "float16", 1)
    with pytest.raises(BadInput, match="cannot resolve 'no-such-org/no-such-model'"):
        reference_key("no-such-org/no-such-model", shards, 16, "float16", 1)


def test_an_online_reference_gets_its_inputs_on_its_own_device():
    from finloom.pretrain.self_constraint import on_device_of

    elsewhere = nn.Linear(2, 2, device="meta")  # a stand-in for a reference kept on another device
    assert on_device_of(torch.zeros(3, dtype=torch.long), elsewhere).device.type == "meta"


def test_a_lora_reference_runs_without_dropout(tiny_lm, tmp_path):
    """With LoRA the reference is the model with its adapters off; a config with dropout must not make it random."""
    from peft import LoraConfig, get_peft_model

    from finloom.llm.loading import load_causal_lm

    _, _, run = tiny_lm
    base = load_causal_lm(run / "base" / "model", attention_dropout=0.5)
    plain = load_causal_lm(run / "base" / "model").eval()
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).train()
    trainer = _trainer(tmp_path, model, kl_top_k=None)
    ids = torch.tensor([[5, 9, 33, 20, 7, 11]])
    first = trainer._reference_kl_input(model, ids, torch.tensor([0]))["reference_logits"]
    second = trainer._reference_kl_input(model, ids, torch.tensor([0]))["reference_logits"]
    assert torch.equal(first, second) and model.training  # deterministic, and training mode restored
    with torch.no_grad():
        assert torch.allclose(first, plain(input_ids=ids).logits, atol=1e-5)


def test_bf16_training_keeps_float32_master_weights(tiny_data, tiny_run, tmp_path):
    """At lr 2e-5 in bf16 mixed precision (the Qwen recipe's settings), almost every weight moves, and the loss
    follows float32 training closely. Trained in bf16 itself, most updates were below half a bf16 ulp."""
    import shutil

    from safetensors.torch import load_file

    from conftest import tiny_recipe, write_recipe
    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    losses, moved = {}, {}
    for name, dtype, bf16 in (("float32", "float32", False), ("bf16_mixed", "bfloat16", True)):
        run_dir = tmp_path / name
        shutil.copytree(tiny_run, run_dir)
        recipe = tiny_recipe(**{"model.dtype": dtype, "pretrain.train": {
            "max_steps": 3, "batch_size": 4, "seq_len": 64, "learning_rate": 2e-5, "bf16": bf16, "logging_steps": 1,
            "save_steps": 3}, "pretrain.eval_every": None})
        assert Runner(load_recipe(write_recipe(tiny_data, recipe, f"bf16_{name}.yaml")), run_dir).run(
            only="pretrain") == {"pretrain": "done"}
        start = load_file(run_dir / "base" / "model" / "model.safetensors")
        trained = load_file(run_dir / "pretrain" / "model" / "model.safetensors")
        changed = sum(int((trained[k] != start[k].to(trained[k].dtype)).sum()) for k in start)  # in the saved dtype
        moved[name] = changed / sum(t.numel() for t in start.values())
        history = json.loads((run_dir / "pretrain" / "log_history.json").read_text())
        losses[name] = [entry["loss"] for entry in history if "loss" in entry]
    assert moved["bf16_mixed"] > 0.99 and moved["float32"] > 0.99
    assert losses["bf16_mixed"] == pytest.approx(losses["float32"], rel=2e-2, abs=1e-4)


@pytest.mark.parametrize(("budget", "direction"), [(1e-6, "rises"), (10.0, "falls")])
def test_a_kl_budget_moves_lambda_toward_it_and_survives_resume(tiny_lm, tmp_path, budget, direction):
    from finloom.llm.loading import load_causal_lm
    from finloom.pretrain.self_constraint import KLBudget

    reference, _, run = tiny_lm
    shards = run / "data" / "shards" / "pretrain"
    finance = TokenShardDataset(shards).index["domains"].index("finance")

    def trainer(steps):
        args = SelfConstraintConfig(output_dir=str(tmp_path), report_to="none", max_steps=steps, save_steps=4,
                                    per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, seed=5,
                                    finance_domain=finance, kl_budget=budget, disable_tqdm=True,
                                    restore_callback_states_from_checkpoint=True)
        return SelfConstraintTrainer(model=load_causal_lm(run / "base" / "model"), args=args,
                                     train_dataset=TokenShardDataset(shards, seed=5),
                                     data_collator=collate_blocks(tags=True), ref_model=reference)

    first = trainer(4)
    first.train()
    lambdas = [e["self_constraint/lambda"] for e in first.state.log_history if "self_constraint/lambda" in e]
    assert (lambdas[-1] > 1.0) if direction == "rises" else (lambdas[-1] < 1.0), lambdas
    saved = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]["KLBudget"]
    assert saved["args"]["weight"] == pytest.approx(first.kl_weight())
    resumed = trainer(6)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    after = [e["self_constraint/lambda"] for e in resumed.state.log_history
             if "self_constraint/lambda" in e and e["step"] == 5]
    if direction == "falls":  # it went on from the checkpoint's lambda (restarting at 1.0 would give ~0.95)
        assert after[0] < lambdas[-1]
    assert isinstance(next(c for c in resumed.callback_handler.callbacks if isinstance(c, KLBudget)), KLBudget)
