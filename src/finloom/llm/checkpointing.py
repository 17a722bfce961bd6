"""Gradient checkpointing with one checkpoint per k consecutive decoder layers (Baichuan Alignment).

Per-layer checkpointing (transformers' own) keeps each layer's input and recomputes one layer at a time:
memory ~ h*L for the kept inputs plus one layer's n activations. Grouping k layers keeps L/k inputs and
recomputes k layers at a time: ~ h*L/k + k*h*n, smallest at k = sqrt(L / n). Within a group the first
layer runs the whole group under ``torch.utils.checkpoint``; the group's other layers pass the hidden state
through. The model's module tree, parameter names and saved weights do not change.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of decoder layers: the longest ModuleList of checkpointable layers."""
    stacks = [module for module in model.modules() if isinstance(module, torch.nn.ModuleList)
              and len(module) and all(isinstance(layer, GradientCheckpointingLayer) for layer in module)]
    if not stacks:
        raise ValueError(f"{type(model).__name__}: no stack of decoder layers to checkpoint")
    return max(stacks, key=len)


def activations_per_layer(config) -> float:
    """n: the activations one decoder layer keeps for backward, in units of its hidden state (per token).

    Counted for a pre-norm attention + gated-MLP layer: two norms, q/k/v, attention output, output projection,
    two residual sums (7 + 2*kv/h), and gate, up, activation and product of the MLP (4 * ffn/h)."""
    hidden = config.hidden_size
    kv = getattr(config, "num_key_value_heads", config.num_attention_heads) * (hidden // config.num_attention_heads)
    return 7 + 2 * kv / hidden + 4 * getattr(config, "intermediate_size", 4 * hidden) / hidden


def auto_group_size(config, layers: int) -> int:
    """The report's rule k = sqrt(L / n), rounded, at least 1."""
    return max(1, round(math.sqrt(layers / activations_per_layer(config))))


def checkpoint_every_k_layers(model, k: int | str) -> int:
    """Turn on grouped checkpointing (``k`` layers per checkpoint, or ``"auto"``); returns the k used."""
    layers = decoder_layers(model)
    k = auto_group_size(model.config, len(layers)) if k == "auto" else int(k)
    if hasattr(model, "config"):
        model.config.use_cache = False
    for start in range(0, len(layers), k):
        group = list(layers[start:start + k])
        group[0].forward = partial(_run_group, group)
        for layer in group[1:]:
            layer.forward = _pass_through
    return k


def _run_group(group: list[torch.nn.Module], hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    kwargs.update(use_cache=False, cache=None)

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        for layer in group:
            hidden = type(layer).forward(layer, hidden, *args, **kwargs)
        return hidden

    if group[0].training and torch.is_grad_enabled():
        return checkpoint(forward, hidden_states, use_reentrant=False)
    return forward(hidden_states)


def _pass_through(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return hidden_states
