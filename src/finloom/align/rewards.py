"""The reward GRPO optimises: the recipe's weighted combination of verifiable checks, a reward model and the
finance rubric (``finloom.grading.rewards``), as one TRL reward function.

Each prompt row carries ``reward_task``, its task fields as JSON (answer / valid, expected / unit / tolerance,
checks, and weights / checklist for the rubric), so rows with different fields share one dataset. Every
component of every sample goes to TRL's metrics (``rewards/<component>``, the mean over the samples that have
it) and to ``rewards.jsonl`` beside the step, so a user sees which component moved; rubric replies that never
parse are counted (``rubric_failures``), not scored as zero.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from finloom.grading.rewards import combine, rubric_rewards, verifiable_rewards
from finloom.recipe import REWARD_COMPONENTS, GRPOArgs

TASK_FIELDS = ("answer", "valid", "expected", "unit", "tolerance", "checks", "weights", "checklist", "task")
"""What a prompt record may carry for its rewards (``category`` comes with it too)."""


def reply_text(completion) -> str:
    """A completion as TRL hands it over: a message list (conversational prompts) or a string."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def prompt_text(prompt) -> str:
    return prompt[-1]["content"] if isinstance(prompt, list) else prompt


class RewardCombination:
    """Callable as a TRL reward function: ``(prompts, completions, reward_task, ...) -> [reward or None]``."""

    __name__ = "finance_reward"  # TRL names a reward function's metrics after it

    def __init__(self, settings: GRPOArgs, scorer=None, judge=None, judge_retries: int = 1, log_path: Path | None = None):
        self.settings, self.scorer, self.judge, self.judge_retries = settings, scorer, judge, judge_retries
        self.weights = {name: getattr(settings.rewards, name) for name in REWARD_COMPONENTS}
        self.log_path = log_path
        self.rubric_failures = 0
        self.last_totals: list[float | None] = []  # the last call's rewards (PPO adds them to its per-token reward)

    def components(self, prompts: list, replies: list[str], tasks: list[dict]) -> list[dict[str, float | None]]:
        found = [verifiable_rewards(reply, task, self.settings.partial_credit, self.settings.tolerance)
                 for reply, task in zip(replies, tasks)]
        if self.weights["rm"] and self.scorer is not None:
            conversations = [list(p) + [{"role": "assistant", "content": r}] if isinstance(p, list)
                             else [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                             for p, r in zip(prompts, replies)]
            for row, score in zip(found, self.scorer.score(conversations)):
                row["rm"] = 0.5 * (1 + math.tanh(score / 2))  # the sigmoid, finite for any score
        if self.weights["rubric"] and self.judge is not None:
            judged = [i for i, task in enumerate(tasks) if task.get("weights")]
            rows = [{"scenario": {**tasks[i], "prompt": prompt_text(prompts[i])}, "answer": replies[i]} for i in judged]
            for i, result in zip(judged, rubric_rewards(self.judge, rows, self.judge_retries)):
                found[i]["rubric"] = result["rubric"]
                self.rubric_failures += result["rubric"] is None
        return found

    def __call__(self, prompts, completions, reward_task, log_metric=None, trainer_state=None, **_):
        replies = [reply_text(c) for c in completions]
        tasks = [json.loads(task) for task in reward_task]
        found = self.components(prompts, replies, tasks)
        combined = [combine(row, self.weights) for row in found]
        if log_metric is not None:
            by_name = defaultdict(list)
            for row in found:
                for name, value in row.items():
                    if value is not None:
                        by_name[name].append(value)
            for name, values in by_name.items():
                log_metric(f"rewards/{name}", sum(values) / len(values))
            if self.weights["rubric"]:
                log_metric("rubric_failures", float(self.rubric_failures))
        if self.log_path is not None and trainer_state is not None:
            step = trainer_state.global_step
            lines = "".join(json.dumps({"step": step, "category": task.get("category"), "reward": total.total,
                                        "components": row, "reply": reply[:200]}, ensure_ascii=False) + "\n"
                            for task, reply, row, total in zip(tasks, replies, found, combined))
            # A log, appended by every process with one write each (whole lines); a resumed run repeats some steps.
            with self.log_path.open("a", encoding="utf-8") as sink:
                sink.write(lines)
        self.last_totals = [c.total for c in combined]
        return self.last_totals
