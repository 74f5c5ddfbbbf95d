"""Launchers: how the runs of a :class:`~guidg.harness.Plan` are executed.

``local`` runs them here: one after the other (under ``torchrun`` every process runs the same plan, the
fine-tuning of each run data-parallel), or with ``jobs`` N, N runs at once in N processes, each on its own GPU
or on its share of the CPU cores. ``slurm`` submits each run not yet done as one job of a Slurm array job
through submitit; a job warned of its time limit (or preempted) saves its run's state at the next step and
requeues itself. Every launcher goes through :func:`run_one`, which takes the run folder's lock, so launchers
sharing a runs folder never run one run twice. SIGINT and SIGTERM stop every launcher cleanly, each run
resumable (:mod:`guidg.interruption`).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch

from imagenet_dg.errors import ImageNetDGError
from guidg.distributed import init_from_environment, launched_world_size, rank_device
from guidg.harness import Plan, PlannedRun, SweepError
from guidg.interruption import STOP_SIGNALS, RunInterrupted, handling_stop_signals, stop_requested
from guidg.run import RunOutcome, attempt

logger = logging.getLogger(__name__)
LOGGERS = ("imagenet_dg", "guidg", "leaderboard")
"""The project's loggers, whose progress each job process passes on."""


def run_one(
    run: PlannedRun, roots: Mapping[str, Path], runs_dir: Path, device: str, workers: int, export_model: bool,
    blocking: bool = True, requeues: int = 0,
) -> RunOutcome:
    """Run one planned run in this process (what a Slurm job or a ``--jobs`` process executes)."""
    return attempt(run.spec, roots, runs_dir, device=device, num_workers=workers, export_model=export_model,
                   blocking=blocking, requeues=requeues)


def run_local(the_plan: Plan, on_start: Callable[[PlannedRun], None] | None = None, jobs: int = 1) -> list[RunOutcome]:
    """Run every planned run here (a finished one is read, not rerun); the outcomes are in plan order.

    With ``jobs`` 1, in order in this process. A run another process is running is put off to the end and
    then waited for, so two ``evaluate`` processes sharing a runs folder share the work instead of queueing
    behind each other. Under ``torchrun`` every process runs this with the same plan (the fine-tuning is
    data-parallel). With ``jobs`` N > 1, N processes (no more than there are runs to do) take the runs in turn
    (:func:`check_jobs`). SIGINT or SIGTERM stops the runs going, resumable, and raises
    :class:`~guidg.interruption.RunInterrupted`.
    """
    check_jobs(jobs, the_plan.checked.device)
    jobs = min(jobs, max(1, sum(not run.done for run in the_plan.runs)))
    if jobs > 1:
        return _run_in_processes(the_plan, jobs, on_start)
    checked, prepared = the_plan.checked, the_plan.prepared
    device = rank_device(checked.device)
    init_from_environment(torch.device(device).type)
    outcomes: dict[int, RunOutcome] = {}
    put_off = []
    with handling_stop_signals():
        for index, run in enumerate(the_plan.runs):
            if on_start is not None and not run.done:
                on_start(run)
            outcome = run_one(run, prepared.roots, checked.sweep.runs, device, checked.workers,
                              checked.sweep.export_model, blocking=False)
            if outcome.status == "busy":
                put_off.append(index)
            else:
                outcomes[index] = outcome
            _stop_if_asked()
        for index in put_off:
            run = the_plan.runs[index]
            outcomes[index] = run_one(run, prepared.roots, checked.sweep.runs, device, checked.workers,
                                      checked.sweep.export_model, blocking=True)
            _stop_if_asked()
    return [outcomes[i] for i in range(len(the_plan.runs))]


def _stop_if_asked() -> None:
    """A stop asked for while a run was finishing anyway: start no other."""
    signum = stop_requested()
    if signum is not None:
        raise RunInterrupted(signum)


# --- several runs at once on one machine ----------------------------------------------------------------------


def check_jobs(jobs: int, device: str) -> None:
    """Refuse a ``jobs`` count that cannot work: below 1, under ``torchrun`` (where every process already
    trains the same run), on one named GPU, or more jobs than GPUs (each job takes its own)."""
    if jobs < 1:
        raise SweepError(f"--jobs {jobs}: expected 1 or more runs at once")
    if jobs == 1:
        return
    if launched_world_size() > 1:
        raise SweepError(
            f"--jobs {jobs} under torchrun: torchrun trains each run over several GPUs (data-parallel), --jobs runs "
            "several runs at once, each on its own GPU; use one or the other"
        )
    parsed = torch.device(device)
    if parsed.type == "cuda":
        if parsed.index is not None:
            raise SweepError(f"--jobs {jobs} with --device {device}: each job takes its own GPU; give --device cuda")
        count = torch.cuda.device_count()
        if jobs > count:
            raise SweepError(
                f"--jobs {jobs}: this machine shows {count} CUDA GPU(s) and each job takes its own; use --jobs "
                f"{count} or fewer"
            )


@dataclass(frozen=True)
class JobSettings:
    """What one ``--jobs`` process runs its runs with."""

    slot: int
    device: str
    threads: int
    """CPU threads for torch (and OpenMP) in this process."""
    workers: int
    roots: Mapping[str, Path]
    runs_dir: Path
    export_model: bool
    log_levels: Mapping[str, int] = field(default_factory=dict)


def job_settings(the_plan: Plan, jobs: int) -> list[JobSettings]:
    """The settings of each of ``jobs`` processes: job i on ``cuda:i`` with a GPU, the CPU cores divided
    between them (never more threads than ``OMP_NUM_THREADS`` where it is set), the default loader workers
    divided too."""
    checked, prepared = the_plan.checked, the_plan.prepared
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, min(threads, int(os.environ["OMP_NUM_THREADS"])))
    cuda = torch.device(checked.device).type == "cuda"
    workers = checked.workers if checked.sweep.workers is not None else checked.workers // jobs
    levels = {name: logging.getLogger(name).getEffectiveLevel() for name in LOGGERS}
    return [JobSettings(slot, f"cuda:{slot}" if cuda else checked.device, threads, workers, dict(prepared.roots),
                        Path(checked.sweep.runs), checked.sweep.export_model, levels) for slot in range(jobs)]


def _run_in_processes(the_plan: Plan, jobs: int, on_start: Callable[[PlannedRun], None] | None) -> list[RunOutcome]:
    """Run the plan in ``jobs`` processes sharing its runs folder through the run locks.

    The processes take the runs in plan order from one queue. A run held by another program is put back at
    the end and then waited for. The first failure lets the runs going finish and starts no other, then is
    raised here; SIGINT or SIGTERM is passed on to every process, which stops its run resumable.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch or CUDA state
    tasks, results = context.Queue(), context.Queue()
    halt = context.Event()
    for index in range(len(the_plan.runs)):
        tasks.put((index, False))
    processes = [context.Process(target=_job_process, args=(settings, the_plan.runs, tasks, results, halt,
                                                            os.getpid()), name=f"imagenet-dg job {settings.slot}")
                 for settings in job_settings(the_plan, jobs)]
    outcomes: dict[int, RunOutcome] = {}
    running: dict[int, int] = {}
    failures: list[BaseException] = []
    stops: list[RunInterrupted] = []
    signals: list[int] = []
    unresolved = set(range(len(the_plan.runs)))
    released = False

    def pass_on(signum: int, frame: Any) -> None:
        signals.append(signum)
        halt.set()
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    def release_if_over() -> None:
        nonlocal released
        if (halt.is_set() or not unresolved) and not released:
            for _ in processes:
                tasks.put(None)  # no more runs
            released = True

    # The processes start with these signals blocked (they unblock them once they can stop cleanly); one that
    # comes meanwhile waits here, then is passed on.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    previous = {s: signal.signal(s, pass_on) for s in STOP_SIGNALS}
    try:
        try:
            for process in processes:
                process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        while any(p.is_alive() for p in processes) or not results.empty():
            try:
                kind, slot, index, payload = results.get(timeout=0.2)
            except queue.Empty:
                for slot, process in enumerate(processes):
                    if not process.is_alive() and slot in running and process.exitcode != 0:
                        index = running.pop(slot)
                        unresolved.discard(index)
                        failures.append(ImageNetDGError(
                            f"job process {slot} ended (exit code {process.exitcode}) during "
                            f"{_name(the_plan.runs[index])}; run the same command again: the run resumes from its "
                            "last saved state"))
                        halt.set()
                release_if_over()
                continue
            if kind == "start":
                running[slot] = index
                if on_start is not None and not the_plan.runs[index].done:
                    on_start(the_plan.runs[index])
                continue
            running.pop(slot, None)
            if kind == "busy":
                tasks.put((index, True))  # held by another program: waited for once the rest is done
                continue
            unresolved.discard(index)
            if kind == "outcome":
                outcomes[index] = payload
            elif kind == "stopped":
                stops.append(payload)
            else:
                failures.append(payload)
                halt.set()
            release_if_over()
        for process in processes:
            process.join()
    finally:
        for one, handler in previous.items():
            signal.signal(one, handler)
        tasks.cancel_join_thread()
    if failures:
        raise failures[0]
    if stops or signals:
        raise _joined_stop(stops, signals[0] if signals else stops[0].signum)
    if unresolved:
        raise ImageNetDGError(
            f"the job processes ended before running {len(unresolved)} run(s), e.g. "
            f"{_name(the_plan.runs[min(unresolved)])}; run the same command again")
    return [outcomes[i] for i in range(len(the_plan.runs))]


def _name(run: PlannedRun) -> str:
    return f"{run.spec.method} on {run.spec.config} ({run.folder})"


def _joined_stop(stops: Sequence[RunInterrupted], signum: int) -> RunInterrupted:
    """One interruption standing for every run the signal stopped."""
    if len(stops) == 1:
        return stops[0]
    joined = RunInterrupted(signum)
    if stops:
        joined.run = ", ".join((s.run or "a run") + (f" (saved at step {s.step} of {s.total})" if s.step is not None
                                                    else "") for s in stops)
    return joined


def _job_process(settings: JobSettings, runs: Sequence[PlannedRun], tasks: Any, results: Any, halt: Any,
                 parent: int) -> None:
    """One ``--jobs`` process: runs taken from ``tasks`` until told there are no more or to stop."""
    os.setpgrp()  # Ctrl-C at the terminal reaches the parent, which passes it on once
    _end_with(parent)
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)
    torch.set_num_threads(settings.threads)
    logging.basicConfig(level=logging.WARNING, format=f"[job {settings.slot}] %(message)s")
    for name, level in settings.log_levels.items():
        logging.getLogger(name).setLevel(level)
    if torch.device(settings.device).type == "cuda":
        torch.cuda.set_device(torch.device(settings.device))
    with handling_stop_signals():
        index = None
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the parent until now
            while not halt.is_set():
                try:
                    task = tasks.get(timeout=1.0)
                except queue.Empty:
                    if os.getppid() != parent:
                        return
                    continue
                if task is None or halt.is_set():
                    return
                index, blocking = task
                results.put(("start", settings.slot, index, None))
                outcome = run_one(runs[index], settings.roots, settings.runs_dir, settings.device, settings.workers,
                                  settings.export_model, blocking=blocking)
                results.put(("busy" if outcome.status == "busy" else "outcome", settings.slot, index, outcome))
                index = None
        except RunInterrupted as stop:
            results.put(("stopped", settings.slot, index, stop))
        except ImageNetDGError as error:
            results.put(("failed", settings.slot, index, _portable(error)))
        except Exception:  # a bug: its traceback, as the sequential launcher would show it
            results.put(("failed", settings.slot, index, RuntimeError(
                f"job process {settings.slot} failed during {_name(runs[index]) if index is not None else 'no run'}:"
                f"\n{traceback.format_exc()}")))


def _portable(error: ImageNetDGError) -> ImageNetDGError:
    """``error`` if it survives pickling to the parent process, else the same message as a plain error."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - an exception whose constructor pickle cannot call again
        return ImageNetDGError(str(error))
    return error


def _end_with(parent: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (it then stops at its next step)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


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
    signal_delay_s: int = 120
    """Slurm warns a job this many seconds before its time limit (``--signal=USR2@...``); the job then saves
    its run's state at the next step and requeues itself."""
    max_requeues: int = 3
    """A run whose job was requeued this many times (time limits and preemptions together) stops there, its
    state saved, instead of requeuing again."""
    folder: Path | None = None
    """Where submitit keeps job scripts and logs; None: ``<runs>/slurm``."""
    cluster: str | None = "slurm"
    """submitit cluster: ``slurm``; ``debug`` or ``local`` run the jobs on this machine (for tests)."""

    def __post_init__(self) -> None:
        if self.max_requeues < 0:
            raise SweepError(f"--max-requeues {self.max_requeues}: expected 0 or more")
        if not 0 < self.signal_delay_s < 60 * self.time_minutes:
            raise SweepError(f"--signal-delay {self.signal_delay_s}: expected seconds within the job's time "
                             f"(--time {self.time_minutes} minutes)")

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
            "slurm_signal_delay_s": self.signal_delay_s,
        }
        if self.partition is not None:
            parameters["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        return parameters


def submit_slurm(the_plan: Plan, options: SlurmOptions) -> list[Any]:
    """Submit every run not yet done as one job of one array job; returns the submitit jobs.

    Each job runs a :class:`SlurmRun`, which takes the run folder's lock (so a job that finds its run finished
    or running elsewhere does nothing twice), and saves the run's state and requeues itself when Slurm warns
    it of its time limit or preempts it.
    """
    checked, prepared = the_plan.checked, the_plan.prepared
    pending = [r for r in the_plan.runs if not r.done]
    if not pending:
        return []
    folder = options.folder or Path(checked.sweep.runs) / "slurm"
    # submitit's own bound on requeues after time limits, kept no lower than ours
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster,
                                     slurm_max_num_timeout=options.max_requeues,
                                     local_max_num_timeout=options.max_requeues)
    executor.update_parameters(**options.parameters(f"imagenet-dg-{checked.suite.name}"))
    device = "cuda" if options.gpus_per_job > 0 else "cpu"
    job = SlurmRun(options.max_requeues, options.signal_delay_s)
    jobs = []
    with executor.batch():
        for run in pending:
            jobs.append(executor.submit(job, run, dict(prepared.roots), Path(checked.sweep.runs).absolute(),
                                        device, checked.workers, checked.sweep.export_model))
    return jobs


class RequeueLimitError(ImageNetDGError):
    """A run's job was requeued as often as allowed and stopped again before the run finished."""


class SlurmRun(submitit.helpers.Checkpointable):
    """What each Slurm job runs: one planned run, data-parallel over the job's tasks when it has several.

    Slurm sends its warning signal (submitit's, SIGUSR2) ``signal_delay_s`` before the time limit, and on
    preemption where the cluster is set to. The run then saves its state at the next fine-tuning step (a
    phase without steps goes on for half the delay, then stops at once, resuming from its last periodic
    state), and the job requeues itself through submitit: :meth:`checkpoint` gives the requeued job the same
    run, one requeue more, and it resumes exactly where the state was saved. After ``max_requeues`` requeues
    the job stops with the state saved instead (:class:`RequeueLimitError`). On SIGTERM (a cancelled job, or a
    preemption without the warning) the run saves its state at the next step and the job ends; a job Slurm
    requeues itself resumes from there too.
    """

    def __init__(self, max_requeues: int, signal_delay_s: int) -> None:
        self.max_requeues = max_requeues
        self.signal_delay_s = signal_delay_s

    def __call__(self, run: PlannedRun, roots: Mapping[str, Path], runs_dir: Path, device: str, workers: int,
                 export_model: bool, requeues: int = 0) -> RunOutcome:
        _log_progress()
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*
        device = rank_device(device)
        init_from_environment(torch.device(device).type)
        warning = signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]
        requeue = signal.getsignal(warning)  # submitit's: calls checkpoint(), requeues the job and exits
        requeues = max(requeues, _restart_count())
        try:
            with handling_stop_signals(checkpoint_signal=warning, checkpoint_grace_s=self.signal_delay_s / 2):
                return run_one(run, roots, runs_dir, device, workers, export_model, requeues=requeues)
        except RunInterrupted as stop:
            if stop.signum != warning or not callable(requeue):
                raise
            if requeues >= self.max_requeues:
                raise RequeueLimitError(
                    f"{stop}; its job was requeued {requeues} time(s), the most --max-requeues allows, so it was "
                    "not requeued again"
                ) from None
            logger.warning("%s; requeuing the job (requeue %d of at most %d)", stop, requeues + 1, self.max_requeues)
            requeue(warning, None)
            raise

    def checkpoint(self, run: PlannedRun, roots: Mapping[str, Path], runs_dir: Path, device: str, workers: int,
                   export_model: bool, requeues: int = 0) -> submitit.helpers.DelayedSubmission:
        """The requeued job: the same run, which resumes from its saved state, counted as requeued once more."""
        return submitit.helpers.DelayedSubmission(self, run, roots, runs_dir, device, workers, export_model,
                                                  requeues=max(requeues, _restart_count()) + 1)


def _log_progress() -> None:
    """In a job's process, the project's progress at INFO, as the command line logs it (into each run's
    ``run.log`` and the job's error file)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def _restart_count() -> int:
    """How often Slurm has requeued this job (``SLURM_RESTART_COUNT``; 0 outside Slurm)."""
    text = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(text) if text.isdigit() else 0
