"""GRPO as Baichuan Alignment runs it: TRL's GRPOTrainer with the KL in the per-token reward, exact over the
reference's top-k tokens, and a KL to the pre-RL model on SFT data in place of the pre-training loss.

Where it departs from TRL (everything else, the sampling, group-normalised advantages, clipping and
vLLM generation, is TRL's):

- TRL adds ``beta`` x an approximate per-token KL (the k3 estimator on the sampled token) to the loss. Here
  TRL's own ``beta`` stays 0 and the KL is a reward: at rollout the exact ``KL(pi || pi_ref)`` over the
  reference's top-k tokens (both distributions renormalised there; ``finloom.llm.kl.token_kl``) is computed per
  completion token and ``kl_beta`` x its sum over the remaining tokens is subtracted from each token's advantage
  (the KL penalty's return-to-go, undiscounted, as in PPO's per-token reward). The group-normalised outcome
  advantage is unchanged, so ``kl_beta`` is in units of a normalised advantage.
- ``sft_kl_gamma`` > 0 adds gamma x the mean exact top-k ``KL(pi || pi_ref)`` over the assistant tokens of an
  SFT batch to every micro-batch's loss (with gradient; the report's replacement for PTX).
- The policy computes attention with ``finloom.llm.padded_attention`` (SDPA whose left-padding rows attend to
  something): on a GPU in bfloat16 PyTorch's SDPA backward gave NaN gradients for those rows.
- With ``prompt_categories`` the prompt sampler draws categories by weights a callback can change
  (``finloom.align.categories``), keeping TRL's grouping of each prompt's samples.

The KL uses the models' own distributions (temperature 1), whatever temperature samples the answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from finloom.align.categories import CategorySampler
from finloom.llm.kl import token_kl
from finloom.llm.padded_attention import use_padded_sdpa


@dataclass
class FinloomGRPOConfig(GRPOConfig):
    kl_beta: float = field(default=0.05, metadata={"help": "Weight of the per-token top-k KL in the reward."})
    kl_top_k: int = field(default=500, metadata={"help": "Reference tokens the exact KL runs over."})
    sft_kl_gamma: float = field(default=0.0, metadata={"help": "Weight of the KL to the reference on SFT data."})
    sft_kl_batch_size: int | None = field(default=None, metadata={"help": "SFT conversations per micro-batch "
                                                                          "(default: per_device_train_batch_size)."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta:
            raise ValueError("FinloomGRPOConfig: set kl_beta (the KL in the reward), not TRL's beta (its loss term)")
        for name in ("kl_beta", "sft_kl_gamma"):  # a negative weight would reward moving away from the reference
            if getattr(self, name) < 0:
                raise ValueError(f"FinloomGRPOConfig: {name} must be >= 0, got {getattr(self, name)}")


def completion_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_tokens: int):
    """Logits predicting each of the last ``completion_tokens`` tokens (the completion), nothing before."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=completion_tokens + 1).logits
    return logits[:, :-1]


def kl_shaped_advantages(advantages: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token advantages (B, T): the outcome advantage of each sequence minus ``beta`` x the KL of this token
    and every later one (``kl`` already zero outside the completion): the return-to-go of a per-token reward
    ``-beta x KL``, undiscounted."""
    to_go = kl.flip(-1).cumsum(-1).flip(-1)
    return (advantages if advantages.dim() == 2 else advantages.unsqueeze(1)) - beta * to_go


class ConversationBatches:
    """Tokenized conversations (``input_ids`` and ``labels``, -100 outside the assistant turns) as fixed-size,
    right-padded batches in a seeded order that cycles: batch ``i`` is always the same, so a resumed run sees the
    data an uninterrupted one would."""

    def __init__(self, rows: list[dict], batch_size: int, pad_id: int, seed: int):
        if not rows:
            raise ValueError("no SFT conversations for the KL regulariser")
        self.rows, self.batch_size, self.pad_id = rows, batch_size, pad_id
        self.order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = index * self.batch_size
        picked = [self.rows[self.order[(start + offset) % len(self.rows)]] for offset in range(self.batch_size)]
        width = max(len(row["input_ids"]) for row in picked)
        ids = torch.full((len(picked), width), self.pad_id)
        labels = torch.full((len(picked), width), -100)
        mask = torch.zeros((len(picked), width), dtype=torch.long)
        for i, row in enumerate(picked):
            n = len(row["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(row["input_ids"]), torch.tensor(row["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class FinloomGRPOTrainer(GRPOTrainer):
    """GRPOTrainer plus ``ref_model`` (the pre-RL model), ``sft_rows`` (the gamma term's data) and
    ``prompt_categories`` (one per training prompt, for re-weighting); see the module docstring."""

    def __init__(self, *args, ref_model=None, sft_rows: list[dict] | None = None,
                 prompt_categories: list[str] | None = None, category_weights: dict[str, float] | None = None,
                 **kwargs):
        self.prompt_categories, self.category_weights = prompt_categories, category_weights
        super().__init__(*args, **kwargs)
        use_padded_sdpa(self.model)
        config: FinloomGRPOConfig = self.args
        needs_reference = config.kl_beta > 0 or config.sft_kl_gamma > 0
        if needs_reference and ref_model is None:
            raise ValueError("kl_beta or sft_kl_gamma > 0 needs ref_model, the pre-RL model")
        self.ref_model = self._prepare_reference(ref_model) if needs_reference else None
        self.sft_batches = None
        if config.sft_kl_gamma > 0:
            pad = self.processing_class.pad_token_id
            self.sft_batches = ConversationBatches(sft_rows or [], config.sft_kl_batch_size
                                                   or config.per_device_train_batch_size, pad, config.seed)

    def _prepare_reference(self, model):
        model.eval()
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    def _get_train_sampler(self, dataset=None):
        if self.prompt_categories is None:
            return super()._get_train_sampler(dataset)
        self.category_sampler = CategorySampler(
            self.prompt_categories, self.category_weights, mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation, seed=self.args.seed)
        return self.category_sampler

    # -- the KL in the per-token reward -------------------------------------------------------------------------

    @torch.no_grad()
    def rollout_kl(self, batch: dict) -> torch.Tensor:
        """Exact top-k ``KL(pi || pi_ref)`` at every completion token of a generated batch, shape (B, T)."""
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        tokens = batch["completion_ids"].size(1)
        chunks = []
        for start in range(0, ids.size(0), self.args.per_device_train_batch_size):
            rows = slice(start, start + self.args.per_device_train_batch_size)
            policy = completion_logits(self.model, ids[rows], mask[rows], tokens)
            reference = completion_logits(self.ref_model, ids[rows], mask[rows], tokens)
            chunks.append(token_kl(policy, reference, top_k=self.args.kl_top_k))
        return torch.cat(chunks)

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        if not self.args.kl_beta:
            return batch
        mask = batch["completion_mask"] * batch.get("tool_mask", 1)
        kl = self.rollout_kl(batch) * mask
        batch["advantages"] = kl_shaped_advantages(batch["advantages"], kl, self.args.kl_beta)
        self.log_kl(kl, mask)
        return batch

    def log_kl(self, kl: torch.Tensor, mask: torch.Tensor) -> None:
        """The mean KL per completion token and the mean penalty per answer, over every process."""
        mode = "train" if self.model.training else "eval"
        totals = self.accelerator.reduce(torch.stack([kl.sum(), mask.sum().float(), kl.sum(-1).sum(),
                                                      torch.tensor(float(kl.size(0)), device=kl.device)]), "sum")
        self._metrics[mode]["kl"].append((totals[0] / totals[1].clamp(min=1)).item())
        self._metrics[mode]["kl_penalty"].append((self.args.kl_beta * totals[2] / totals[3]).item())

    # -- the KL to the pre-RL model on SFT data ----------------------------------------------------------------

    def sft_kl(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean exact top-k ``KL(pi || pi_ref)`` over the assistant tokens of ``batch``; gradient to the policy."""
        batch = {key: value.to(self.accelerator.device) for key, value in batch.items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        policy = model(**inputs).logits[:, :-1]
        with torch.no_grad():
            reference = self.ref_model(**inputs).logits[:, :-1]
        kl = token_kl(policy, reference, top_k=self.args.kl_top_k)
        scored = (batch["labels"][:, 1:] != -100).float()
        return (kl * scored).sum() / scored.sum().clamp(min=1)

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)  # TRL's policy loss
        if not self.model.training:
            return loss
        return loss + self.auxiliary_loss(model, inputs) / self.current_gradient_accumulation_steps

    def auxiliary_loss(self, model, inputs) -> torch.Tensor | float:
        """What finloom adds to TRL's loss per micro-batch, before the accumulation scaling: gamma x the SFT KL."""
        if self.sft_batches is None:
            return 0.0
        accumulation = self.current_gradient_accumulation_steps
        index = self.state.global_step * accumulation + self._step % accumulation
        sft_kl = self.sft_kl(model, self.sft_batches[index])
        self._metrics["train"]["sft_kl"].append(self.accelerator.gather(sft_kl.detach()).mean().item())
        return self.args.sft_kl_gamma * sft_kl
