"""Token-level KL divergences between a policy and a frozen reference, full-vocabulary or over the reference's top k.

Domain self-constraint (Baichuan4-Finance, as written out by Baichuan-M2) trains general text with
``KL(p_theta || p_ref)`` per token (reverse, the default; forward ``KL(p_ref || p_theta)`` is an
option). The top-k form follows Baichuan Alignment's exact KL: take the reference's top-k token
indices, renormalise both distributions over them, and apply the exact KL formula there (not a
sampled estimator). CPT's default adds an "everything else" bucket instead of renormalising (see
``token_kl``). With k equal to the vocabulary the top-k KL is the full KL, in either form.

A reference can be given as logits (computed online) or as precomputed top-k ``(indices,
log-probs)``: the log-probs are the reference's own full-vocabulary log-softmax values at those
indices, renormalised here, so online and precomputed references give the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_DIRECTIONS = ("reverse", "forward")


def _kl(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor, direction: str) -> torch.Tensor:
    """Exact KL over the last dimension of two normalised log-distributions."""
    if direction == "reverse":
        return (policy_logprobs.exp() * (policy_logprobs - reference_logprobs)).sum(-1)
    if direction == "forward":
        return (reference_logprobs.exp() * (reference_logprobs - policy_logprobs)).sum(-1)
    raise ValueError(f"KL direction must be one of {KL_DIRECTIONS}, got {direction!r}")


def reference_top_k(reference_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's k most likely tokens per position and their full-vocabulary log-probabilities."""
    logprobs = F.log_softmax(reference_logits.float(), dim=-1)
    values, indices = logprobs.topk(min(k, logprobs.size(-1)), dim=-1)
    return indices, values


def token_kl(
    policy_logits: torch.Tensor,
    reference_logits: torch.Tensor | None = None,
    reference_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    direction: str = "reverse",
    top_k: int | None = None,
    tail: bool = False,
) -> torch.Tensor:
    """KL per position (shape ``policy_logits.shape[:-1]``), computed in float32.

    Exactly one of ``reference_logits`` (full logits; with ``top_k`` the KL runs over their top k)
    or ``reference_topk`` (``(indices, log-probs)``, always top-k) must be given. Over the top k, two
    forms: renormalised (``tail`` False: both distributions rescaled to the k tokens, as Baichuan
    Alignment's GRPO does), or with a tail (``tail`` True: k + 1 buckets, the last holding everything
    outside the k, so probability the policy moves out of the reference's top k is penalised too).
    """
    if (reference_logits is None) == (reference_topk is None):
        raise ValueError("give exactly one of reference_logits or reference_topk")
    policy_logits = policy_logits.float()
    if reference_topk is None and top_k is None:
        return _kl(F.log_softmax(policy_logits, -1), F.log_softmax(reference_logits.float(), -1), direction)
    if reference_topk is None and not tail:  # renormalised over the k tokens: raw logits will do, no full softmax
        reference_values, indices = reference_logits.float().topk(min(top_k, reference_logits.size(-1)), dim=-1)
    else:
        indices, reference_values = reference_topk if reference_topk is not None else reference_top_k(reference_logits, top_k)
    indices = indices.long()
    if tail:
        policy_values = F.log_softmax(policy_logits, -1).gather(-1, indices)
        return _kl(with_tail(policy_values), with_tail(reference_values.float()), direction)
    policy_values = policy_logits.gather(-1, indices)
    return _kl(F.log_softmax(policy_values, -1), F.log_softmax(reference_values.float(), -1), direction)


TAIL_FLOOR = 1e-12
"""The smallest tail mass: k = vocabulary leaves none, and log 0 would give NaN gradients."""


def with_tail(logprobs: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary log-probabilities of k tokens, plus the log of the mass outside them (k + 1 buckets)."""
    rest = (1.0 - logprobs.exp().sum(-1, keepdim=True)).clamp(min=TAIL_FLOOR)
    return torch.cat([logprobs, rest.log()], dim=-1)


def lambda_at(step: int, kl_lambda: float, warmup_steps: int) -> float:
    """The KL weight at a training step: linear from 0 over ``warmup_steps``, then constant."""
    if warmup_steps <= 0:
        return kl_lambda
    return kl_lambda * min(1.0, step / warmup_steps)
