"""Bradley-Terry + MSE reward modelling: TRL's RewardTrainer with one more loss term (Baichuan Alignment).

Per pair: ``-log sigmoid(r_w - r_l) + alpha * [(r_w - s_w)^2 + (r_l - s_l)^2]``, with ``s`` the pair's
absolute scores normalised to [0, 1], and no second term for a pair without scores. BT alone fixes only the
order of rewards (any shift of all rewards leaves it unchanged) and overfits within an epoch; the squared
error ties their level to the scores. The BT part, its margin option and the logged metrics stay TRL's:
the override adds the term to what ``RewardTrainer.compute_loss`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

SCORE_KEYS = ("score_chosen", "score_rejected", "scored")


@dataclass
class ScoredRewardConfig(RewardConfig):
    score_alpha: float = field(default=1.0, metadata={"help": "Weight of the squared error to the scores."})
    remove_unused_columns: bool = False  # the collator reads the score columns


@dataclass
class ScoredPreferenceCollator(DataCollatorForPreference):
    """TRL's preference batches plus ``score_chosen``, ``score_rejected`` and ``scored`` (1 where the pair has
    scores) per pair."""

    def torch_call(self, examples):
        batch = super().torch_call([{k: v for k, v in e.items() if k in ("chosen_ids", "rejected_ids", "margin")}
                                    for e in examples])
        for key in SCORE_KEYS:
            batch[key] = torch.tensor([float(e.get(key) or 0.0) for e in examples])
        return batch


class ScoredRewardTrainer(RewardTrainer):
    def __init__(self, *args, **kwargs):
        if kwargs.get("data_collator") is None:
            tokenizer = kwargs["processing_class"]
            kwargs["data_collator"] = ScoredPreferenceCollator(pad_token_id=tokenizer.pad_token_id)
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = {key: inputs.pop(key) for key in SCORE_KEYS if key in inputs}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if scores and self.args.score_alpha:
            squared = score_error(outputs.logits.squeeze(-1), scores)
            loss = loss + self.args.score_alpha * squared
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["score_mse"].append(self.accelerator.gather_for_metrics(squared.detach()).mean().item())
        return (loss, outputs) if return_outputs else loss


def score_error(rewards: torch.Tensor, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the batch's pairs of ``(r_w - s_w)^2 + (r_l - s_l)^2``, zero for pairs without scores.

    ``rewards`` holds the chosen rewards, then the rejected ones (TRL's batch layout)."""
    chosen, rejected = torch.chunk(rewards, 2)
    scored = scores["scored"].to(rewards.dtype)
    per_pair = (chosen - scores["score_chosen"].to(rewards.dtype)) ** 2 + (rejected - scores["score_rejected"].to(rewards.dtype)) ** 2
    return (per_pair * scored).mean()
