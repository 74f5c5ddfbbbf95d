"""Slurm's warning signal before a job's time limit (or at preemption): the job saves its run's state at the
next step, requeues itself through submitit, and the requeued job resumes to the record of an uninterrupted
run, the requeue counted; ``--max-requeues`` bounds it. Run through submitit's local executor, whose jobs are
real processes, with a real SIGUSR2 sent to the job's process as Slurm sends it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import submitit

from guidg import harness, launchers
from guidg.backbone import TINY_MODEL
from guidg.finetune import CHECKPOINT_FILE
from imagenet_dg.records import DONE_FILE

FAST = ("finetune.epochs=6", "finetune.steps_per_epoch=10")


def plan_of(mini_benchmark, mini_releases, runs: Path):
    sweep = harness.Sweep(methods=("clipood",), model=TINY_MODEL, pretrained="mini", device="cpu", seeds=(1,),
                          targets=("a",), preset="smoke", overrides=FAST, runs=runs, benchmark=mini_benchmark,
                          root=mini_releases.root)
    checked = harness.validate(sweep)
    return harness.plan(checked, harness.prepare(checked))


def local_options(tmp_path: Path, max_requeues: int) -> launchers.SlurmOptions:
    return launchers.SlurmOptions(cluster="local", gpus_per_job=0, cpus_per_job=1, time_minutes=60,
                                  max_requeues=max_requeues, folder=tmp_path / "slurm")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def warn_job_during_fine_tuning(job, runs: Path, timeout: float = 600) -> None:
    """Send SIGUSR2 to the job's process once its fine-tuning is under way, as Slurm does before the limit."""
    deadline = time.monotonic() + timeout
    while not any("clipood: step 10/60" in log.read_text() for log in runs.glob("*/run.log")):
        assert time.monotonic() < deadline and not job.done(), "the job ended before it could be warned"
        time.sleep(0.05)
    [task] = children_of(job._process.pid)  # the local executor's controller runs the job as its child
    os.kill(task, signal.SIGUSR2)


@pytest.fixture(scope="module")
def uninterrupted(mini_benchmark, mini_releases, tmp_path_factory):
    runs = tmp_path_factory.mktemp("uninterrupted") / "runs"
    [outcome] = launchers.run_local(plan_of(mini_benchmark, mini_releases, runs))
    return outcome.record


def comparable(record) -> dict:
    values = record.to_dict() if hasattr(record, "to_dict") else dict(record.__dict__)
    values.pop("phase_seconds")
    values["details"] = {k: v for k, v in values["details"].items() if k != "requeues"}
    return values


def test_a_warned_job_checkpoints_requeues_and_resumes_to_the_uninterrupted_record(
    uninterrupted, mini_benchmark, mini_releases, tmp_path
) -> None:
    runs = tmp_path / "runs"
    [job] = launchers.submit_slurm(plan_of(mini_benchmark, mini_releases, runs), local_options(tmp_path, 2))
    warn_job_during_fine_tuning(job, runs)
    outcome = job.result()
    assert outcome.status == "ran" and outcome.record.details["requeues"] == 1
    assert uninterrupted.details["requeues"] == 0
    assert comparable(outcome.record) == comparable(uninterrupted)
    said = job.stderr()
    assert "clipood on a-16shot-seed1 saved its state at step " in said
    assert "requeuing the job (requeue 1 of at most 2)" in said
    assert "resuming fine-tuning at step " in next(runs.glob("*/run.log")).read_text()
    assert (outcome.folder / DONE_FILE).is_file() and not (outcome.folder / CHECKPOINT_FILE).exists()


def test_a_job_warned_after_its_last_allowed_requeue_stops_with_its_state_saved(
    mini_benchmark, mini_releases, tmp_path
) -> None:
    runs = tmp_path / "runs"
    [job] = launchers.submit_slurm(plan_of(mini_benchmark, mini_releases, runs), local_options(tmp_path, 0))
    warn_job_during_fine_tuning(job, runs)
    with pytest.raises(submitit.core.utils.FailedJobError) as caught:
        job.result()
    assert "RequeueLimitError" in str(caught.value) and "the most --max-requeues allows" in str(caught.value)
    [folder] = [p.parent for p in runs.glob("*/run.json")]
    assert (folder / CHECKPOINT_FILE).is_file() and not (folder / DONE_FILE).exists()
    [outcome] = launchers.run_local(plan_of(mini_benchmark, mini_releases, runs))  # the sweep run again resumes it
    assert outcome.status == "ran" and outcome.record.details["requeues"] == 0


def test_requeue_settings_outside_their_range_are_refused() -> None:
    with pytest.raises(harness.SweepError, match="--max-requeues -1"):
        launchers.SlurmOptions(max_requeues=-1)
    with pytest.raises(harness.SweepError, match="--signal-delay 900"):
        launchers.SlurmOptions(time_minutes=10, signal_delay_s=900)
