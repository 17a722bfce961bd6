"""Per-category evaluation during RL and a prompt sampler re-weighted toward the weak categories.

Baichuan Alignment evaluates each category periodically during RL and shifts the share of RL prompts toward
the ones that lag. Here every ``eval_every`` optimiser steps (and before the first and after the last) the
policy answers the held-out prompts of each category greedily, the reward combination scores the answers, and
a category's sampling weight becomes its share of the training prompts times
``exp(strength x max(0, target - score))``, normalised and floored at ``min_share``. Every evaluation and
weight is a row of ``categories.jsonl`` (the report plots them); a resumed run restores the last weights.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from finloom.files import atomic_write_jsonl
from finloom.recipe import Reweighting


EXAMPLES = 2
"""Held-out answers kept per category at each evaluation, for the report to show beside the numbers."""


class CategorySampler(Sampler):
    """TRL's RepeatSampler layout (each prompt ``mini_repeat_count`` times in a row, each chunk of ``batch_size``
    prompts ``repeat_count`` times) with the prompts of a chunk drawn by category weight, each category's prompts
    in its own shuffled cycle. Weights set while training apply from the next chunk drawn."""

    def __init__(self, categories: list[str], weights: dict[str, float] | None, mini_repeat_count: int,
                 batch_size: int, repeat_count: int, seed: int):
        self.mini_repeat_count, self.batch_size, self.repeat_count = mini_repeat_count, batch_size, repeat_count
        self.by_category: dict[str, list[int]] = defaultdict(list)
        for index, category in enumerate(categories):
            self.by_category[category].append(index)
        self.names = sorted(self.by_category)
        self.num_samples = len(categories)
        self.generator = torch.Generator().manual_seed(seed)
        self.weights = shares(categories)
        if weights:
            self.set_weights(weights)

    def set_weights(self, weights: dict[str, float]) -> None:
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.names}

    def __len__(self) -> int:
        return (self.num_samples // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count

    def __iter__(self):
        cycles = {name: [] for name in self.names}
        for _ in range(self.num_samples // self.batch_size):
            probabilities = torch.tensor([self.weights[name] for name in self.names])
            drawn = torch.multinomial(probabilities, self.batch_size, replacement=True, generator=self.generator)
            chunk = []
            for position in drawn.tolist():
                name = self.names[position]
                if not cycles[name]:
                    order = torch.randperm(len(self.by_category[name]), generator=self.generator).tolist()
                    cycles[name] = [self.by_category[name][i] for i in order]
                chunk.append(cycles[name].pop())
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from [index] * self.mini_repeat_count


def shares(categories: list[str]) -> dict[str, float]:
    counts = Counter(categories)
    return {name: counts[name] / len(categories) for name in sorted(counts)}


def reweighted(base: dict[str, float], scores: dict[str, float], settings: Reweighting) -> dict[str, float]:
    """Each category's base share times exp(strength x shortfall below its target), normalised so that none is
    below ``min_share`` (those at the floor hold it; the rest share what is left in proportion)."""
    raw = {name: share * math.exp(settings.strength * max(0.0, settings.target_for(name) - scores.get(name, 0.0)))
           for name, share in base.items()}
    floor = min(settings.min_share, 1 / len(raw))
    at_floor: set[str] = set()
    while True:
        left, rest = 1 - floor * len(at_floor), sum(value for name, value in raw.items() if name not in at_floor)
        weights = {name: floor if name in at_floor else left * value / rest for name, value in raw.items()}
        below = {name for name, value in weights.items() if name not in at_floor and value < floor}
        if not below:
            return {name: round(value, 6) for name, value in weights.items()}
        at_floor |= below


class CategoryEvaluation(TrainerCallback):
    """Evaluates held-out prompts per category and re-weights the trainer's category sampler.

    ``heldout`` maps a category to its prompts (``{"prompt": messages, "reward_task": json}``); ``score`` is the
    reward function (prompts, completions, reward_task) -> rewards, the same the trainer optimises."""

    def __init__(self, trainer, heldout: dict[str, list[dict]], score, settings: Reweighting, base: dict[str, float],
                 max_tokens: int, log_path: Path):
        self.trainer, self.heldout, self.score, self.settings = trainer, heldout, score, settings
        self.base, self.max_tokens, self.log_path = base, max_tokens, log_path
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.evaluate(state.global_step)
            return
        if self.log_path.exists():  # resumed: the evaluations up to the checkpoint, and the weights then in force
            rows = [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()]
            self.rows = [row for row in rows if row["step"] <= state.global_step and not row["final"]]
        if self.rows:
            self.apply(self.rows[-1]["weights"])

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.settings.eval_every == 0 and state.global_step < state.max_steps:
            self.evaluate(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.evaluate(state.global_step, final=True)

    def apply(self, weights: dict[str, float]) -> None:
        sampler = getattr(self.trainer, "category_sampler", None)
        if sampler is not None and self.settings.enabled:
            sampler.set_weights(weights)

    def evaluate(self, step: int, final: bool = False) -> dict[str, float]:
        trainer = self.trainer
        scores, examples = {}, {}
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            for name, rows in self.heldout.items():
                replies, rewards = greedy_rewards(model, trainer.processing_class, rows, self.score, self.max_tokens)
                scores[name] = round(sum(rewards) / len(rewards), 6) if rewards else 0.0
                examples[name] = [{"prompt": row["prompt"][-1]["content"][:160], "reply": reply[:160], "reward": reward}
                                  for row, reply, reward in list(zip(rows, replies, rewards))[:EXAMPLES]]
        weights = reweighted(self.base, scores, self.settings) if self.settings.enabled else dict(self.base)
        if not final:
            self.apply(weights)
        self.rows.append({"step": step, "scores": scores, "weights": weights, "final": final,  # alike on every process
                          "examples": examples})
        if self.trainer.accelerator.is_main_process:
            atomic_write_jsonl(self.log_path, self.rows)
        return scores


@torch.no_grad()
def greedy_rewards(model, tokenizer, rows: list[dict], score, max_tokens: int) -> tuple[list[str], list[float]]:
    """``model``'s greedy answers to ``rows`` (``{"prompt": messages, "reward_task": json}``) and their rewards by
    ``score`` (a reward function: prompts, completions, reward_task -> rewards; None counts as 0)."""
    prompts = [row["prompt"] for row in rows]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    was_training = model.training
    model.eval()
    output = model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    model.train(was_training)
    replies = tokenizer.batch_decode(output[:, encoded["input_ids"].size(1):], skip_special_tokens=True)
    rewards = score(prompts=prompts, completions=[[{"role": "assistant", "content": r}] for r in replies],
                    reward_task=[row["reward_task"] for row in rows])
    return replies, [r or 0.0 for r in rewards]
