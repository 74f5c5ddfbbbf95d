"""Launchers: how the runs of a :class:`~guidg.harness.Plan` are executed.

``local`` runs them here, one after the other (under ``torchrun`` every process runs the same plan, the
fine-tuning data-parallel); ``slurm`` submits each run not yet done as one job of a Slurm array job through
submitit. Every launcher goes through :func:`run_one`, which takes the run folder's lock, so two launchers
sharing a runs folder never run one run twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from guidg.distributed import init_from_environment, rank_device
from guidg.harness import Plan, PlannedRun
from guidg.run import RunOutcome, attempt


def run_one(
    run: PlannedRun, roots: Mapping[str, Path], runs_dir: Path, device: str, workers: int, export_model: bool,
    blocking: bool = True,
) -> RunOutcome:
    """Run one planned run in this process (what a Slurm job executes)."""
    return attempt(run.spec, roots, runs_dir, device=device, num_workers=workers, export_model=export_model,
                   blocking=blocking)


def run_local(the_plan: Plan, on_start: Callable[[PlannedRun], None] | None = None) -> list[RunOutcome]:
    """Run every planned run here, in order (a finished one is read, not rerun).

    A run another process is running is put off to the end and then waited for, so two ``evaluate``
    processes sharing a runs folder share the work instead of queueing behind each other. Under ``torchrun``
    every process runs this with the same plan (the fine-tuning is data-parallel).
    """
    checked, prepared = the_plan.checked, the_plan.prepared
    device = rank_device(checked.device)
    init_from_environment(torch.device(device).type)
    outcomes: dict[int, RunOutcome] = {}
    put_off = []
    for index, run in enumerate(the_plan.runs):
        if on_start is not None and not run.done:
            on_start(run)
        outcome = run_one(run, prepared.roots, checked.sweep.runs, device, checked.workers,
                          checked.sweep.export_model, blocking=False)
        if outcome.status == "busy":
            put_off.append(index)
        else:
            outcomes[index] = outcome
    for index in put_off:
        run = the_plan.runs[index]
        outcomes[index] = run_one(run, prepared.roots, checked.sweep.runs, device, checked.workers,
                                  checked.sweep.export_model, blocking=True)
    return [outcomes[i] for i in range(len(the_plan.runs))]


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources of each job (one job per run; a sweep is one array job)."""

    partition: str | None = None
    time_minutes: int = 240
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: int | None = None
    array_parallelism: int = 64
    """At most this many jobs of the array run at once."""
    folder: Path | None = None
    """Where submitit keeps job scripts and logs; None: ``<runs>/slurm``."""
    cluster: str | None = "slurm"
    """submitit cluster: ``slurm``; ``debug`` or ``local`` run the jobs on this machine (for tests)."""

    def parameters(self, name: str) -> dict[str, Any]:
        """The submitit parameters of each job."""
        parameters: dict[str, Any] = {
            "name": name,
            "timeout_min": self.time_minutes,
            "gpus_per_node": self.gpus_per_job,
            "cpus_per_task": self.cpus_per_job,
            # One process per GPU: a job of several GPUs fine-tunes data-parallel, as under torchrun.
            "tasks_per_node": max(1, self.gpus_per_job),
            "nodes": 1,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.partition is not None:
            parameters["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        return parameters


def submit_slurm(the_plan: Plan, options: SlurmOptions) -> list[Any]:
    """Submit every run not yet done as one job of one array job; returns the submitit jobs.

    Each job runs :func:`run_one` on the cluster, which takes the run folder's lock, so a job that finds its
    run finished or running elsewhere does nothing twice.
    """
    import submitit

    checked, prepared = the_plan.checked, the_plan.prepared
    pending = [r for r in the_plan.runs if not r.done]
    if not pending:
        return []
    folder = options.folder or Path(checked.sweep.runs) / "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster)
    executor.update_parameters(**options.parameters(f"imagenet-dg-{checked.suite.name}"))
    device = "cuda" if options.gpus_per_job > 0 else "cpu"
    jobs = []
    with executor.batch():
        for run in pending:
            jobs.append(executor.submit(slurm_job, run, dict(prepared.roots), Path(checked.sweep.runs).absolute(),
                                        device, checked.workers, checked.sweep.export_model))
    return jobs


def slurm_job(run: PlannedRun, roots: Mapping[str, Path], runs_dir: Path, device: str, workers: int,
              export_model: bool) -> RunOutcome:
    """What each Slurm job runs: one planned run, data-parallel over the job's tasks when it has several."""
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*
    device = rank_device(device)
    init_from_environment(torch.device(device).type)
    return run_one(run, roots, runs_dir, device, workers, export_model)
