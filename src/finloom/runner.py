"""Runs stages over a run directory: manifests, skip/resume, locking.

A stage is a function ``run(section, ctx) -> StageResult`` in its own module. Stages talk only
through artifacts on disk, so the runner can decide from manifests alone what to skip: a stage is
skipped when its fingerprint (its resolved config + the fingerprints of the stages it reads + the
hashes of the external files it reads) equals the one in its ``manifest.json``. A change re-runs
that stage, which changes its fingerprint, which re-runs everything downstream.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
from rich.console import Console

from finloom import __version__
from finloom.errors import BadInput, RunLocked
from finloom.files import atomic_write_json, hash_json, hash_path
from finloom.recipe import STAGE_NAMES, Recipe, parse_recipe, recipe_to_dict, stage_sources

console = Console(stderr=True)

# stage -> "module:function"
STAGE_ENTRY = {
    "data": "finloom.data.stage:run",
    "base": "finloom.pretrain.stage:run_base",
    "pretrain": "finloom.pretrain.stage:run_pretrain",
    "sft": "finloom.sft.stage:run",
    "reward": "finloom.reward.stage:run",
    "align": "finloom.align.stage:run",
    "eval": "finloom.eval.stage:run",
    "forgetting": "finloom.pretrain.forgetting:run",
    "report": "finloom.eval.report:run",
}
# Stages that produce a model directory at ``STAGE/model``, in pipeline order.
MODEL_STAGES = ("base", "pretrain", "sft", "align")
RECIPE_FILE = "recipe.json"


@dataclass
class StageResult:
    outputs: dict[str, str] = field(default_factory=dict)
    """Artifact name -> path relative to the run directory."""
    metrics: dict = field(default_factory=dict)


class RunContext:
    """What a stage may touch: its own directory, and the manifests and artifacts of upstream stages."""

    def __init__(self, run_dir: Path, recipe: Recipe, stage: str):
        self.run_dir = run_dir
        self.recipe = recipe
        self.stage = stage
        self.stage_dir = run_dir / stage
        self.resume = False
        """True when an interrupted attempt with the same fingerprint left checkpoints to resume."""

    def manifest(self, stage: str) -> dict:
        manifest = read_manifest(self.run_dir, stage)
        if manifest is None or manifest.get("status") != "done":
            raise BadInput(f"stage {self.stage!r} needs stage {stage!r}, which has not completed in {self.run_dir}")
        return manifest

    def artifact(self, stage: str, name: str) -> Path:
        outputs = self.manifest(stage)["outputs"]
        if name not in outputs:
            raise BadInput(f"stage {stage!r} has no output {name!r} (has: {sorted(outputs)})")
        return self.run_dir / outputs[name]

    def input_model(self) -> tuple[str, Path | str]:
        """The model this stage starts from: the newest enabled model stage before it, else model.hf."""
        upstream = model_stage_before(self.recipe, self.stage)
        if upstream is None:
            return "start", self.recipe.start_model()
        return upstream, self.artifact(upstream, "model")

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.run_dir.resolve()))


def model_stage_before(recipe: Recipe, stage: str) -> str | None:
    enabled = recipe.enabled_stages()
    order = STAGE_NAMES.index(stage)
    earlier = [s for s in MODEL_STAGES if s in enabled and STAGE_NAMES.index(s) < order]
    if stage in ("reward", "align") and "sft" in enabled:
        return "sft"
    return earlier[-1] if earlier else None


def upstream_stages(recipe: Recipe, stage: str) -> list[str]:
    """The stages whose artifacts ``stage`` reads."""
    enabled = recipe.enabled_stages()
    if stage == "data":
        return []
    if stage in ("eval", "forgetting", "report"):
        return [s for s in enabled if STAGE_NAMES.index(s) < STAGE_NAMES.index(stage)]
    needs = ["data"] if stage in ("base", "pretrain") and "data" in enabled else []
    model_stage = model_stage_before(recipe, stage)
    if model_stage:
        needs.append(model_stage)
    return needs


def tokenizer_spec(model: dict) -> dict:
    """The part of the model section the data stage's tokenizer depends on."""
    if model.get("scratch"):
        return {"scratch": {key: model["scratch"][key] for key in ("vocab_size", "tokenizer_max_chars")}}
    return {"hf": model["hf"], "trust_remote_code": model["trust_remote_code"]}


def read_manifest(run_dir: Path, stage: str) -> dict | None:
    path = run_dir / stage / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "finloom": __version__}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "datatrove", "tokenizers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def process_peak_rss_mb() -> float:
    """This process's peak resident memory in MB since it started (its exec), for benchmarks' subprocesses.

    Not ``ru_maxrss``: Linux carries the parent's high-water mark across fork + exec into it, so a
    child started by a big parent reports the parent's peak. ``VmHWM`` belongs to the process's own
    address space; where /proc is missing (macOS), ``ru_maxrss`` is the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


class PeakMemory:
    """Samples this process's resident memory in a thread; ru_maxrss can't be reset per stage."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def __enter__(self) -> "PeakMemory":
        self.peak_bytes = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


TRAINING_STAGES = ("base", "pretrain", "sft", "reward", "align")


class Processes:
    """The processes of one ``accelerate launch`` (FSDP / DeepSpeed: one per GPU), from the launcher's environment.

    Every process trains; the main one (rank 0) alone takes the run lock and writes recipe and
    manifests, and runs the stages that do not train. Barriers keep the others in step with it.
    """

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


class RunLock:
    """An exclusive lock on the run directory, released by the OS even after kill -9."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "another process"
            self._handle.close()
            raise RunLocked(f"run directory {self.path.parent} is locked by {holder}; wait for it to finish") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}")
        self._handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


class Runner:
    def __init__(self, recipe: Recipe, run_dir: Path):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self._hash_cache_path = self.run_dir / ".hash_cache.json"
        self.processes = Processes()

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> "Runner":
        path = Path(run_dir) / RECIPE_FILE
        if not path.exists():
            raise BadInput(f"{run_dir} is not a finloom run directory (no {RECIPE_FILE}); start it with `finloom run`")
        stored = json.loads(path.read_text(encoding="utf-8"))
        recipe = parse_recipe(stored["recipe"], Path(stored["source_dir"]))
        return cls(recipe, Path(run_dir))

    # -- fingerprints -------------------------------------------------------------------------
    def _file_hash(self, path: Path, cache: dict) -> str:
        """Content hash of a file or folder, cached by (size, mtime) so unchanged inputs are not re-read."""
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        key = hash_json([str(path)] + [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])
        if key not in cache:
            cache[key] = hash_path(path)
        return cache[key]

    def fingerprint(self, stage: str, cache: dict) -> dict:
        resolved = recipe_to_dict(self.recipe)
        config = {"section": resolved[stage], "seed": self.recipe.seed}
        if stage == "data":  # cleaning does not depend on the model; tokenising depends on its tokenizer
            config["tokenizer"] = tokenizer_spec(resolved["model"])
        else:
            config["model"] = resolved["model"]
        if stage in ("eval", "forgetting", "report"):
            config["enabled_stages"] = self.recipe.enabled_stages()
        if stage == "forgetting":  # its variants train like pretrain and evaluate like eval
            config["pretrain"], config["eval"] = resolved["pretrain"], resolved["eval"]
        upstream = {}
        for name in upstream_stages(self.recipe, stage):
            manifest = read_manifest(self.run_dir, name)
            upstream[name] = manifest.get("fingerprint") if manifest else None
        files = {}
        for _, source in stage_sources(self.recipe, stage):
            path = self.recipe.resolve(source.path)
            files[source.path] = self._file_hash(path, cache)
        inputs = {"stages": upstream, "files": files}
        return {
            "config": config,
            "config_hash": hash_json(config),
            "inputs": inputs,
            "fingerprint": hash_json({"config": config, "inputs": inputs}),
        }

    # -- planning -----------------------------------------------------------------------------
    def select(self, only: str | None, start: str | None) -> list[str]:
        """The stages to consider: all enabled ones, ``--only`` one, or ``--from`` one onwards."""
        enabled = self.recipe.enabled_stages()
        for name, value in (("--only", only), ("--from", start)):
            if value is not None and value not in enabled:
                raise BadInput(f"{name} {value}: not an enabled stage of this recipe (enabled: {', '.join(enabled)})")
        if only:
            return [only]
        if start:
            return enabled[enabled.index(start):]
        return enabled

    def run(self, only: str | None = None, start: str | None = None, force: bool = False) -> dict[str, str]:
        from finloom.logs import quiet_libraries

        quiet_libraries()
        if self.recipe.model.scratch is not None and not self.recipe.base.enabled:
            raise BadInput("base.enabled: a model.scratch recipe needs the base stage (it builds the model)")
        stages = self.select(only, start)
        states: dict[str, str] = {}
        with RunLock(self.run_dir) if self.processes.main else contextlib.nullcontext():
            if self.processes.main:
                self._write_recipe()
            self.processes.barrier()
            cache = self._load_hash_cache()
            for stage in stages:
                states[stage] = self._run_stage(stage, force, cache)
                if self.processes.main:
                    self._save_hash_cache(cache)
        return states

    def _write_recipe(self) -> None:
        stored = {"recipe": recipe_to_dict(self.recipe), "source_dir": str(self.recipe.source_dir)}
        path = self.run_dir / RECIPE_FILE
        if not path.exists() or json.loads(path.read_text(encoding="utf-8")) != stored:
            atomic_write_json(path, stored)

    def _load_hash_cache(self) -> dict:
        try:
            return json.loads(self._hash_cache_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save_hash_cache(self, cache: dict) -> None:
        atomic_write_json(self._hash_cache_path, cache)

    def _run_stage(self, stage: str, forced: bool, cache: dict) -> str:
        for name in upstream_stages(self.recipe, stage):
            manifest = read_manifest(self.run_dir, name)
            if manifest is None or manifest.get("status") != "done":
                raise BadInput(f"stage {stage!r} needs {name!r}, which has not completed; run it first")
        main = self.processes.main
        print_ = console.print if main else (lambda *args, **kwargs: None)
        plan = self.fingerprint(stage, cache)
        stage_dir = self.run_dir / stage
        previous = read_manifest(self.run_dir, stage)
        same = previous is not None and previous.get("fingerprint") == plan["fingerprint"]
        if same and previous.get("status") == "done" and not forced and self._outputs_exist(previous):
            print_(f"[dim]· {stage}: up to date, skipped[/dim]")
            return "skipped"
        resume = same and previous.get("status") in ("running", "interrupted") and not forced
        if main and not resume and stage_dir.exists():
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        ctx = RunContext(self.run_dir, self.recipe, stage)
        ctx.resume = resume
        manifest = {
            "stage": stage,
            "status": "running",
            "started_at": datetime.now(timezone.utc).isoformat(),
            "seed": self.recipe.seed,
            "versions": library_versions(),
            **plan,
        }
        if main:
            atomic_write_json(stage_dir / "manifest.json", manifest)
        self.processes.barrier()
        print_(f"[bold cyan]▶ {stage}[/bold cyan]" + (" (resuming)" if resume else ""))
        entry = _load_entry(stage)
        started = time.perf_counter()
        if not main:  # another process of a distributed launch: train along, keep no books
            if stage in TRAINING_STAGES:
                _seed_everything(self.recipe.seed, self.recipe.threads)
                entry(self.recipe.section(stage), ctx)
            self.processes.barrier()
            return "done"
        try:
            with PeakMemory() as memory:
                _seed_everything(self.recipe.seed, self.recipe.threads)
                result = entry(self.recipe.section(stage), ctx)
        except KeyboardInterrupt:
            manifest.update(status="interrupted", wall_time_s=round(time.perf_counter() - started, 2))
            atomic_write_json(stage_dir / "manifest.json", manifest)
            raise
        except BaseException as error:
            manifest.update(status="failed", error=f"{type(error).__name__}: {error}")
            atomic_write_json(stage_dir / "manifest.json", manifest)
            raise
        wall = time.perf_counter() - started
        manifest.update(
            status="done",
            finished_at=datetime.now(timezone.utc).isoformat(),
            wall_time_s=round(wall, 2),
            peak_rss_mb=round(memory.peak_bytes / 2**20, 1),
            outputs=result.outputs,
            output_hashes={name: hash_path(self.run_dir / rel) for name, rel in result.outputs.items()},
            metrics=result.metrics,
        )
        atomic_write_json(stage_dir / "manifest.json", manifest)
        self.processes.barrier()
        print_(f"[green]✓ {stage}[/green] in {wall:.1f}s, peak RSS {manifest['peak_rss_mb']:.0f} MB")
        return "done"

    def _outputs_exist(self, manifest: dict) -> bool:
        return all((self.run_dir / rel).exists() for rel in manifest.get("outputs", {}).values())


def _load_entry(stage: str) -> Callable:
    module_name, function = STAGE_ENTRY[stage].split(":")
    return getattr(importlib.import_module(module_name), function)


def _seed_everything(seed: int, threads: int | None) -> None:
    import random

    import numpy
    import torch

    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def stage_status(run_dir: Path) -> list[dict]:
    """One row per stage directory for `finloom status`."""
    rows = []
    for stage in STAGE_NAMES:
        manifest = read_manifest(Path(run_dir), stage)
        if manifest is None:
            continue
        rows.append(
            {
                "stage": stage,
                "status": manifest.get("status", "?"),
                "wall_time_s": manifest.get("wall_time_s"),
                "peak_rss_mb": manifest.get("peak_rss_mb"),
                "metrics": manifest.get("metrics", {}),
            }
        )
    return rows


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.run_dir) if recipe.run_dir else Path("runs") / recipe.name

