"""Gradient checkpointing per k layers: the same gradients, groups recomputed together, the sqrt rule."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finloom.llm.checkpointing import activations_per_layer, auto_group_size, checkpoint_every_k_layers


def model(layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                                        num_attention_heads=2, num_key_value_heads=1)).train()


def gradients_and_recompute_order(k: int | None) -> tuple[torch.Tensor, list[int]]:
    net = model()
    calls: list[int] = []
    for index, layer in enumerate(net.model.layers):
        layer.self_attn.register_forward_pre_hook(lambda *_, index=index: calls.append(index))
    if k is not None:
        checkpoint_every_k_layers(net, k)
    ids = torch.arange(24).view(2, 12) % 64
    loss = net(input_ids=ids, labels=ids, use_cache=False).loss
    forward_calls = len(calls)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()]), calls[forward_calls:]


def test_grouped_checkpointing_keeps_gradients_and_recomputes_groups_together():
    reference, recomputed = gradients_and_recompute_order(None)
    assert recomputed == []
    for k, order in [(1, [3, 2, 1, 0]), (2, [2, 3, 0, 1]), (4, [0, 1, 2, 3]), (3, [3, 0, 1, 2])]:
        grads, recomputed = gradients_and_recompute_order(k)
        assert recomputed == order, k  # backward replays each group of k layers, last group first
        assert torch.allclose(grads, reference, atol=1e-6), k


def test_evaluation_and_generation_run_every_layer_once():
    net = model()
    expected = net(input_ids=torch.tensor([[1, 2, 3]]), use_cache=False).logits
    checkpoint_every_k_layers(net, 2)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(input_ids=torch.tensor([[1, 2, 3]])).logits, expected, atol=1e-6)


def test_auto_group_size_follows_sqrt_rule():
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
    n = activations_per_layer(config)
    assert n == pytest.approx(7 + 2 + 4 * 11008 / 4096)
    assert auto_group_size(config, 32) == 1  # sqrt(32 / 19.75) = 1.27
    assert auto_group_size(config, 200) == 3  # sqrt(200 / 19.75) = 3.18
    assert checkpoint_every_k_layers(model(4), "auto") == 1
