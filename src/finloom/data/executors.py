"""Run the data pipeline's phases on datatrove's executors: local processes, a Ray cluster or Slurm.

A phase is one executor launch: a list of steps and a task count. Phases that need every
document at once (the dedup index steps) separate phases that stream. The same phases run on any
executor; each keeps datatrove's completion markers under ``logs/<phase>``, so a relaunch after an
interruption skips the tasks that finished, on every executor alike.

Ray: ``address: null`` starts a local Ray instance (what the tests use); set it to join a cluster.
Slurm: finloom submits the phases as dependent job arrays, then waits for the completion markers,
polling every ``poll_s`` seconds; the run directory must be on a file system the nodes share.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from finloom.errors import BadInput
from finloom.recipe import ExecutorSettings


@dataclass
class Phase:
    """One executor launch: its steps and task count; ``name`` is its logs folder."""

    name: str
    pipeline: list[PipelineStep]
    tasks: int


def completed_tasks(logs_dir: Path, phase: Phase) -> int:
    folder = Path(logs_dir) / phase.name / "completions"
    return sum(1 for _ in folder.iterdir()) if folder.exists() else 0


def run_phases(phases: list[Phase], settings: ExecutorSettings, logs_dir: Path,
               on_phase: Callable[[int, Phase], None] | None = None) -> None:
    """Run ``phases`` in order on the configured executor; ``on_phase(index, phase)`` before each."""
    logs_dir = Path(logs_dir)
    if settings.type == "slurm":
        _run_slurm(phases, settings, logs_dir, on_phase)
        return
    with _ray_session(settings) if settings.type == "ray" else contextlib.nullcontext():
        for index, phase in enumerate(phases):
            if on_phase:
                on_phase(index, phase)
            _executor(phase, settings, logs_dir).run()
            if completed_tasks(logs_dir, phase) < phase.tasks:
                raise RuntimeError(f"data phase {phase.name}: only {completed_tasks(logs_dir, phase)} of "
                                   f"{phase.tasks} tasks completed; see {logs_dir / phase.name / 'logs'}")


def _executor(phase: Phase, settings: ExecutorSettings, logs_dir: Path):
    logging_dir = str(logs_dir / phase.name)
    if settings.type == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(phase.pipeline, tasks=phase.tasks, workers=settings.workers,
                                   logging_dir=logging_dir, cpus_per_task=settings.ray.cpus_per_task,
                                   mem_per_cpu_gb=settings.ray.mem_per_cpu_gb)
    from datatrove.executor import LocalPipelineExecutor

    workers = phase.tasks if settings.workers == -1 else min(settings.workers, phase.tasks)
    return LocalPipelineExecutor(phase.pipeline, tasks=phase.tasks, workers=workers, logging_dir=logging_dir)


@contextlib.contextmanager
def _ray_session(settings: ExecutorSettings):
    try:
        import ray
    except ImportError:
        raise BadInput("data.executor.type: ray needs the ray extra (pip install 'finloom[ray]')") from None
    started = not ray.is_initialized()
    if started:
        if settings.ray.address:
            ray.init(address=settings.ray.address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(settings.workers, 1) if settings.workers != -1 else None,
                     include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def slurm_executors(phases: list[Phase], settings: ExecutorSettings, logs_dir: Path) -> list:
    """One SlurmPipelineExecutor per phase, each depending on the one before."""
    from datatrove.executor import SlurmPipelineExecutor

    slurm = settings.slurm
    executors, previous = [], None
    for phase in phases:
        previous = SlurmPipelineExecutor(
            phase.pipeline, tasks=phase.tasks, time=slurm.time, partition=slurm.partition,
            cpus_per_task=slurm.cpus_per_task, mem_per_cpu_gb=slurm.mem_per_cpu_gb, qos=slurm.qos,
            workers=settings.workers, job_name=f"finloom-data-{phase.name}", env_command=slurm.env_command,
            sbatch_args=dict(slurm.sbatch_args), depends=previous, logging_dir=str(logs_dir / phase.name),
        )
        executors.append(previous)
    return executors


def _run_slurm(phases: list[Phase], settings: ExecutorSettings, logs_dir: Path, on_phase) -> None:
    if shutil.which("sbatch") is None:
        raise BadInput("data.executor.type: slurm, but sbatch is not on PATH (run finloom on a Slurm login node)")
    executors = slurm_executors(phases, settings, logs_dir)
    executors[-1].run()  # submits every dependency first
    for index, phase in enumerate(phases):
        if on_phase:
            on_phase(index, phase)
        while completed_tasks(logs_dir, phase) < phase.tasks:
            if not _slurm_jobs_alive(executors[index]):
                time.sleep(settings.slurm.poll_s)  # markers of a just-finished job may still be syncing
                if completed_tasks(logs_dir, phase) < phase.tasks:
                    raise RuntimeError(f"data phase {phase.name}: Slurm job {executors[index].job_id} ended with "
                                       f"{completed_tasks(logs_dir, phase)} of {phase.tasks} tasks complete; see "
                                       f"{logs_dir / phase.name}")
                break
            time.sleep(settings.slurm.poll_s)


def _slurm_jobs_alive(executor) -> bool:
    """Whether the phase's job (array) is still queued or running."""
    if not getattr(executor, "job_id", None):
        return False
    listed = subprocess.run(["squeue", "-h", "-j", str(executor.job_id)], capture_output=True, text=True)
    return listed.returncode == 0 and bool(listed.stdout.strip())
