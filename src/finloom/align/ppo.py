"""PPO, the baseline Baichuan Alignment compares GRPO against: the GRPO loop plus a critic and GAE.

TRL no longer ships a PPO trainer, so this is finloom's, built on ``FinloomGRPOTrainer`` so that sampling,
the reward combination, the exact top-k KL and the SFT-data KL are the same code. What PPO changes:

- a value head (one linear layer on the policy's last hidden state, a module of the policy so it is
  optimised, checkpointed and resumed with it; left out of the exported model) estimates each token's return;
- at rollout the per-token reward is ``-kl_beta x KL`` on every completion token plus the answer's reward on its
  last one, and advantages come from GAE (gamma 1, ``gae_lambda``), whitened over the batch, instead of the
  group-normalised outcome;
- the loss adds ``value_coef`` x the clipped squared error of the values to the GAE returns. The training
  forward's hidden states are read by a hook on the backbone, so the critic costs no second forward there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from trl import GRPOTrainer

from finloom.align.grpo import FinloomGRPOConfig, FinloomGRPOTrainer


@dataclass
class FinloomPPOConfig(FinloomGRPOConfig):
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE's lambda (gamma is 1)."})
    value_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    value_clip: float = field(default=0.2, metadata={"help": "How far a value may move from its rollout estimate."})


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (B, T), gamma 1: the value after the last token is 0."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        following = values[:, t + 1] * mask[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + following - values[:, t]
        running = (delta + lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    variance = (((values - mean) * mask) ** 2).sum() / count
    return (values - mean) * torch.rsqrt(variance + 1e-8) * mask


class FinloomPPOTrainer(FinloomGRPOTrainer):
    """``FinloomGRPOTrainer`` with a value head and GAE (see the module docstring); ``reward_funcs`` must be one
    finloom ``RewardCombination`` (its last totals are the answers' rewards)."""

    def __init__(self, *args, model=None, **kwargs):
        self.value_head = nn.Linear(model.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        model.value_head = self.value_head
        super().__init__(*args, model=model, **kwargs)
        self._hidden = None
        self.accelerator.unwrap_model(self.model).base_model.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, args, output):
        self._hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def completion_values(self, hidden: torch.Tensor, tokens: int) -> torch.Tensor:
        """The value of the state before each completion token, from the hidden states of the whole sequence."""
        return self.value_head(hidden[:, -(tokens + 1):-1].float()).squeeze(-1)

    def _generate_and_score_completions(self, inputs):
        batch = GRPOTrainer._generate_and_score_completions(self, inputs)
        mask = (batch["completion_mask"] * batch.get("tool_mask", 1)).float()
        tokens = mask.size(1)
        kl = self.rollout_kl(batch) * mask if self.args.kl_beta else torch.zeros_like(mask)
        self.log_kl(kl, mask)
        rewards = -self.args.kl_beta * kl
        outcome = torch.tensor([r if r is not None else 0.0 for r in self.reward_funcs[0].last_totals],
                               device=mask.device)
        last = (mask * torch.arange(1, tokens + 1, device=mask.device)).argmax(-1)  # the last scored token
        rewards[torch.arange(mask.size(0)), last] += outcome
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with torch.no_grad():
            backbone = self.accelerator.unwrap_model(self.model).base_model
            values = torch.cat([self.completion_values(backbone(input_ids=ids[rows], attention_mask=attention[rows])
                                                       .last_hidden_state, tokens)
                                for rows in _chunks(ids.size(0), self.args.per_device_train_batch_size)]) * mask
        advantages, returns = gae(rewards, values, mask, self.args.gae_lambda)
        batch.update(advantages=whiten(advantages, mask), returns=returns, old_values=values)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["value_mean"].append((values.sum() / mask.sum().clamp(min=1)).item())
        return batch

    def auxiliary_loss(self, model, inputs):
        mask = (inputs["completion_mask"] * inputs.get("tool_mask", 1)).float()
        values = self.completion_values(self._hidden, mask.size(1))
        old, returns, clip = inputs["old_values"], inputs["returns"], self.args.value_clip
        clipped = old + (values - old).clamp(-clip, clip)
        error = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
        value_loss = 0.5 * (error * mask).sum() / mask.sum().clamp(min=1)
        self._metrics["train"]["value_loss"].append(value_loss.item())
        return self.args.value_coef * value_loss + super().auxiliary_loss(model, inputs)

    def save_model(self, output_dir=None, _internal_call=False):
        """Checkpoints keep the value head (a resumed run needs it); the exported model is the policy alone."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        model = self.accelerator.unwrap_model(self.model)
        del model.value_head
        try:
            return super().save_model(output_dir, _internal_call)
        finally:
            model.value_head = self.value_head


def _chunks(total: int, size: int):
    return [slice(start, start + size) for start in range(0, total, size)]
