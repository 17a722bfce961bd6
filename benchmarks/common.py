"""What the benchmarks share: a clock on the Trainer's optimiser steps, and variants run in child processes
(so each one's peak RSS is its own) that print their result as a last JSON line."""

from __future__ import annotations

import contextlib
import json
import os
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


@contextlib.contextmanager
def finloom_server(model, port: int, *options: str, env: dict | None = None):
    """A ``finloom serve MODEL`` process on loopback (with ``options`` and extra environment ``env``); yields its /v1
    base URL once it answers, and stops it afterwards."""
    import httpx

    server = subprocess.Popen([sys.executable, "-m", "finloom", "serve", str(model), "--port", str(port), *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while server.poll() is None:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
