"""Runs the catalogue's stages over a run directory: manifests, skip/resume, locking, distributed launches.

Stages talk only through artifacts on disk (``finloom.stages``), so the runner decides from
manifests alone what to skip: a stage is skipped when its fingerprint (its resolved section, the
other recipe settings it reads, the fingerprints of the stages it reads and the hashes of the
external files it reads) equals the one in its ``manifest.json``. A change re-runs that stage,
which changes its fingerprint, which re-runs everything downstream.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from finloom import __version__
from finloom.errors import BadInput, RunLocked
from finloom.files import atomic_write_json, hash_json, hash_path
from finloom.interrupts import raise_if_interrupted, remembering_interrupts
from finloom.llm.chat_template import check_recipe_template
from finloom.progress import console
from finloom.recipe import Recipe, parse_recipe, recipe_to_dict, stage_sources
from finloom.stages import (
    STAGE_NAMES,
    STAGES,
    RunContext,
    enabled_stages,
    read_manifest,
    settings_read,
    upstream_stages,
)

RECIPE_FILE = "recipe.json"


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
    """Samples this process's resident memory in a thread; ru_maxrss can't be reset per stage. On a GPU it also
    keeps the stage's peak of memory allocated by PyTorch on this process's device (``peak_gpu_bytes``)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_gpu_bytes: int | None = None
        self._stop = threading.Event()
        self._process = psutil.Process()

    def __enter__(self) -> "PeakMemory":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
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
        import torch

        if torch.cuda.is_available():
            self.peak_gpu_bytes = torch.cuda.max_memory_allocated()


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
    """An exclusive lock on the run directory, released by the OS when its holder dies (even by kill -9).

    ``flock`` locks belong to the open file, which children forked by libraries (datatrove's
    process manager) inherit and may keep after the run is killed. So the lock file names its
    holder (pid and start time); a lock whose holder is gone is stale, and the file is replaced by
    a new one (a new inode, which the orphan does not hold).
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                if _holder_alive(holder):
                    handle.close()
                    raise RunLocked(f"run directory {self.path.parent} is locked by {holder}; wait for it to "
                                    "finish") from None
                _remove_if_same(self.path, handle)  # stale: held only by an orphan of a dead run
                handle.close()
                continue
            if _remove_if_same(self.path, handle, remove=False):
                break
            handle.close()  # replaced by another process's stale-lock cleanup meanwhile: lock the new file
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} started {psutil.Process().create_time():.3f}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """Who holds the run now ("pid N started T"), or None when no live process does."""
        path = Path(run_dir) / ".lock"
        if not path.exists():
            return None
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                return holder if _holder_alive(holder) else None
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None


def _holder_alive(holder: str) -> bool:
    """Whether the process a lock file names ("pid N started T") still runs. An empty name is a holder
    writing it right now; a pid alone (older runs) is checked for existence only."""
    parts = holder.split()
    if len(parts) < 2 or parts[0] != "pid":
        return True
    try:
        process = psutil.Process(int(parts[1]))
        return len(parts) < 4 or abs(process.create_time() - float(parts[3])) < 0.01
    except (psutil.NoSuchProcess, ValueError):
        return False


def _remove_if_same(path: Path, handle, remove: bool = True) -> bool:
    """Whether ``path`` is still the file ``handle`` has open; with ``remove``, unlink it if so."""
    try:
        same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
    if same and remove:
        path.unlink(missing_ok=True)
    return same


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
        config = {"section": recipe_to_dict(self.recipe)[stage], "seed": self.recipe.seed,
                  "settings": settings_read(self.recipe, stage)}
        if STAGES[stage].reads_all_before:
            config["enabled_stages"] = enabled_stages(self.recipe)
        upstream = {}
        for name in upstream_stages(self.recipe, stage):
            manifest = read_manifest(self.run_dir, name)
            upstream[name] = manifest.get("fingerprint") if manifest else None
        files = {}
        for _, source in stage_sources(self.recipe, stage):  # a Hub dataset is named, not hashed
            files[source.path] = "hub" if source.on_hub else self._file_hash(self.recipe.resolve(source.path), cache)
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
        enabled = enabled_stages(self.recipe)
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
        stages = self.select(only, start)
        if self.processes.main:
            check_recipe_template(self.recipe)
        states: dict[str, str] = {}
        with RunLock(self.run_dir) if self.processes.main else contextlib.nullcontext(), remembering_interrupts():
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
        resumable = ("running", "interrupted") + (("failed",) if STAGES[stage].resumes_after_failure else ())
        resume = same and previous.get("status") in resumable and not forced
        if main and not resume and stage_dir.exists():
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        ctx = RunContext(self.run_dir, self.recipe, stage, resume=resume)
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
        entry = STAGES[stage].entry_point()
        started = time.perf_counter()
        if not main:  # another process of a distributed launch: train along, keep no books
            if STAGES[stage].trains:
                _seed_everything(self.recipe.seed, self.recipe.threads)
                entry(self.recipe.section(stage), ctx)
            self.processes.barrier()
            return "done"
        try:
            with PeakMemory() as memory:
                _seed_everything(self.recipe.seed, self.recipe.threads)
                result = entry(self.recipe.section(stage), ctx)
                raise_if_interrupted()  # a Ctrl-C that library code swallowed still stops the run here
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
            **({} if memory.peak_gpu_bytes is None else {"peak_gpu_mb": round(memory.peak_gpu_bytes / 2**20, 1)}),
            outputs=result.outputs,
            output_hashes={name: hash_path(self.run_dir / rel) for name, rel in result.outputs.items()},
            metrics=result.metrics,
        )
        atomic_write_json(stage_dir / "manifest.json", manifest)
        self.processes.barrier()
        gpu = f", peak GPU {manifest['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in manifest else ""
        print_(f"[green]✓ {stage}[/green] in {wall:.1f}s, peak RSS {manifest['peak_rss_mb']:.0f} MB{gpu}")
        return "done"

    def _outputs_exist(self, manifest: dict) -> bool:
        return all((self.run_dir / rel).exists() for rel in manifest.get("outputs", {}).values())


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
    """One row per stage directory for `finloom status`; a "running" stage that no live process holds was killed."""
    rows = []
    held = RunLock.holder(run_dir) is not None
    for stage in STAGE_NAMES:
        manifest = read_manifest(Path(run_dir), stage)
        if manifest is None:
            continue
        status = manifest.get("status", "?")
        rows.append(
            {
                "stage": stage,
                "status": status if status != "running" or held else "interrupted (no process holds the run)",
                "wall_time_s": manifest.get("wall_time_s"),
                "peak_rss_mb": manifest.get("peak_rss_mb"),
                "metrics": manifest.get("metrics", {}),
            }
        )
    return rows


def default_run_dir(recipe: Recipe) -> Path:
    return Path(recipe.run_dir) if recipe.run_dir else Path("runs") / recipe.name

