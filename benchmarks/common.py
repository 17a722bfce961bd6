"""What the benchmarks share: a clock on the Trainer's optimiser steps, and variants run in child processes
(so each one's peak RSS is its own) that print their result as a last JSON line."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time


class StepClock:
    """Timestamps at the end of every optimiser step; ``callback`` goes to ``trainer.add_callback``."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.stamps.append(time.perf_counter())

        self.warmup = warmup
        self.stamps: list[float] = []
        self.callback = Callback()

    def step_time(self) -> float:
        """The median step time after the warm-up steps."""
        gaps = [b - a for a, b in zip(self.stamps[self.warmup:], self.stamps[self.warmup + 1:])]
        return statistics.median(gaps)

    def timed_steps(self) -> tuple[int, float]:
        """The steps after the warm-up and the seconds they took."""
        return len(self.stamps) - 1 - self.warmup, self.stamps[-1] - self.stamps[self.warmup]


def run_child(script: str, *args: str) -> dict:
    """Run ``python SCRIPT ARGS`` and return the JSON of its last output line; its stderr tail if it fails."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(1)
    return json.loads(done.stdout.strip().splitlines()[-1])
