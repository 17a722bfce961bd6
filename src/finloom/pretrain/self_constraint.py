"""Continual pre-training with domain self-constraint: a small HF Trainer subclass beside its config.

Per token of a batch of packed blocks, each tagged with its domain by the data stage:

    finance block:  CE(x_t)
    general block:  lambda * KL_t(p_theta || p_ref)  +  general_ce_weight * CE(x_t)

and the loss is the mean over every token of the batch. ``p_ref`` is the frozen model the run
started from (the general base). It is either computed online (a frozen copy, or, with LoRA, the
same weights with the adapters switched off), or read from a precomputed top-k store
(``finloom.pretrain.reference``), so a large run need not hold two models. Everything else
(optimiser, schedule, checkpoints, resume, FSDP / DeepSpeed through accelerate) is the Trainer's.

Metrics are logged under ``self_constraint/``: ``finance_ce``, ``general_kl``, ``general_ce``
(always measured, even when its weight is 0, so forgetting shows in the curves) and ``lambda``.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState

from finloom.llm.kl import lambda_at, token_kl


@dataclass
class SelfConstraintConfig(TrainingArguments):
    """TrainingArguments plus the self-constraint objective. Defaults: reverse KL, full vocabulary, lambda 1."""

    kl_lambda: float = field(default=1.0, metadata={"help": "Weight of the KL on general tokens."})
    kl_direction: str = field(default="reverse", metadata={"help": "reverse: KL(p_theta||p_ref); forward: KL(p_ref||p_theta)."})
    kl_top_k: int | None = field(default=None, metadata={"help": "KL over the reference's top-k tokens; None: full vocabulary."})
    kl_tail: bool = field(default=True, metadata={"help": "Top-k KL with an 'everything else' bucket (k + 1 buckets); "
                                                          "False: renormalised over the top k."})
    kl_warmup_steps: int = field(default=0, metadata={"help": "Lambda rises linearly from 0 over these steps."})
    kl_budget: float | None = field(default=None, metadata={
        "help": "Hold the general KL (nats per token) at this budget: lambda follows the measured KL (KLBudget)."})
    kl_budget_rate: float = field(default=0.05, metadata={"help": "How fast lambda follows the KL budget."})
    general_ce_weight: float = field(default=0.0, metadata={"help": "Weight of plain CE on general tokens."})
    finance_domain: int = field(default=0, metadata={"help": "Domain index of finance blocks in the shards."})
    remove_unused_columns: bool = False  # the batch carries each block's domain and position


def on_device_of(tensor: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """``tensor`` on the device of ``module``'s parameters."""
    return tensor.to(next(module.parameters()).device)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module):
    """``module`` in eval mode (no dropout) inside the block, its training mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class KLBudget(TrainerCallback, ExportableState):
    """Lambda from a KL budget: after each training micro-batch, lambda *= exp(rate * (KL / budget - 1)), so it
    rises while general text drifts more than the budget allows and falls while it drifts less.

    A budget is easier to state than a lambda: general CE rose about 1.4-1.6x the KL in the forgetting study, so
    a 2% general-perplexity budget is about 0.013 nats per token. The current lambda is logged as
    ``self_constraint/lambda`` and kept in checkpoints, so a resumed run continues from it."""

    def __init__(self, weight: float, budget: float, rate: float):
        self.weight, self.budget, self.rate = weight, budget, rate

    def update(self, kl: float) -> None:
        self.weight = min(max(self.weight * math.exp(self.rate * (kl / self.budget - 1)), 1e-4), 1e4)

    def state(self) -> dict:
        return {"args": {"weight": self.weight, "budget": self.budget, "rate": self.rate}, "attributes": {}}


class CPTTrainer(Trainer):
    """The HF Trainer, logging held-out perplexity (``eval_<domain>_ppl`` = exp of the mean token CE) beside the loss."""

    def log(self, logs: dict, *args, **kwargs) -> None:
        for key in [k for k in logs if k.startswith("eval_") and k.endswith("_loss")]:
            logs[key.removesuffix("_loss") + "_ppl"] = round(math.exp(min(logs[key], 50.0)), 4)
        super().log(logs, *args, **kwargs)


class SelfConstraintTrainer(CPTTrainer):
    """``ref_model`` (online) or ``reference`` (a ``PrecomputedReference``) supplies p_ref; with neither, a
    PEFT model's own weights with adapters disabled do."""

    def __init__(self, *args, ref_model=None, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ref_model = ref_model
        self.reference = reference
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean
        self._metrics: dict[str, list[float]] = defaultdict(list)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        if self.args.kl_budget is not None:
            self.add_callback(KLBudget(self.args.kl_lambda, self.args.kl_budget, self.args.kl_budget_rate))

    def kl_weight(self) -> float:
        """Lambda now: the controller's under a KL budget, else the configured one (before warm-up)."""
        budget = next((c for c in self.callback_handler.callbacks if isinstance(c, KLBudget)), None)
        return budget.weight if budget is not None else self.args.kl_lambda

    def _reference_kl_input(self, model, input_ids: torch.Tensor, positions: torch.Tensor) -> dict:
        args: SelfConstraintConfig = self.args
        if self.reference is not None:
            return {"reference_topk": self.reference.lookup(positions.tolist(), input_ids.device),
                    "top_k": args.kl_top_k, "tail": args.kl_tail}
        with torch.no_grad():
            if self.ref_model is not None:  # it may live elsewhere (reference_device: cpu): inputs go to it
                logits = self.ref_model(input_ids=on_device_of(input_ids, self.ref_model)).logits.to(input_ids.device)
            else:  # LoRA: the start model is the same weights without adapters, run without dropout
                with self.accelerator.unwrap_model(model).disable_adapter(), evaluating(model):
                    logits = model(input_ids=input_ids).logits
        return {"reference_logits": logits, "top_k": args.kl_top_k, "tail": args.kl_tail}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "domain" not in inputs:  # held-out evaluation blocks: plain next-token CE
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        args: SelfConstraintConfig = self.args
        domain, positions = inputs.pop("domain"), inputs.pop("position")
        is_general = domain != args.finance_domain
        # Finance blocks first, general after (the loss is a mean, order-free): each domain is then one
        # contiguous slice of the logits, a view, where indexing rows would copy them and scatter in backward.
        order = torch.argsort(is_general.to(torch.int8), stable=True)
        finance_rows = int((~is_general).sum())
        input_ids = inputs["input_ids"][order]
        attention_mask = inputs.get("attention_mask")
        outputs = model(input_ids=input_ids, attention_mask=None if attention_mask is None else attention_mask[order])
        logits = outputs.logits
        # next-token targets padded at the end rather than logits shifted: logits[:, :-1] would be copied
        targets = F.pad(inputs["labels"][order][:, 1:], (0, 1), value=-100)
        mask = targets != -100
        vocab = logits.size(-1)
        weight = lambda_at(self.state.global_step, self.kl_weight(), args.kl_warmup_steps)
        loss = logits.new_zeros((), dtype=torch.float32)
        if finance_rows:
            finance_ce = F.cross_entropy(logits[:finance_rows].reshape(-1, vocab).float(),
                                         targets[:finance_rows].reshape(-1), reduction="sum")
            loss = loss + finance_ce
            self._metrics["finance_ce"].append(finance_ce.item() / max(int(mask[:finance_rows].sum()), 1))
        if finance_rows < len(order):
            general_logits, general_targets = logits[finance_rows:], targets[finance_rows:]
            general_mask = mask[finance_rows:]
            reference = self._reference_kl_input(model, input_ids[finance_rows:], positions[order][finance_rows:])
            kl = token_kl(general_logits, direction=args.kl_direction, **reference)
            loss = loss + weight * (kl * general_mask).sum()
            # general CE is always measured (forgetting shows in the curves); it has a gradient only when weighted
            with torch.set_grad_enabled(torch.is_grad_enabled() and args.general_ce_weight > 0):
                general_ce = F.cross_entropy(general_logits.reshape(-1, vocab).float(), general_targets.reshape(-1),
                                             reduction="sum")
            if args.general_ce_weight > 0:
                loss = loss + args.general_ce_weight * general_ce
            general_tokens = max(int(general_mask.sum()), 1)
            self._metrics["general_kl"].append((kl.detach() * general_mask).sum().item() / general_tokens)
            if args.kl_budget is not None and model.training:
                next(c for c in self.callback_handler.callbacks if isinstance(c, KLBudget)).update(
                    self._metrics["general_kl"][-1])
            self._metrics["general_ce"].append(general_ce.item() / general_tokens)
        self._metrics["lambda"].append(weight)
        loss = loss / mask.sum().clamp(min=1)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # training logs: add the averages since the last log, TRL style
            logs.update({f"self_constraint/{k}": round(sum(v) / len(v), 6) for k, v in self._metrics.items() if v})
            self._metrics.clear()
        super().log(logs, *args, **kwargs)
