"""SIGTERM and SIGINT stop runs cleanly and resumably: fine-tuning saves its state at the next step and stops,
anything else stops at once; a real ``imagenet-dg evaluate`` killed during fine-tuning resumes, when run again,
to the record of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import guidg.interruption as interruption
from guidg.distributed import LateAgreement, current_replica
from guidg.interruption import RunInterrupted, StepBoundaries, handling_stop_signals, stop_requested
from imagenet_dg.records import DONE_FILE, RESULTS_FILE

TIMINGS = ("phase_seconds",)
"""Fields of a record that differ between two identical runs: how long each phase took."""


def signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.5)  # the handler runs here, between two bytecodes of the main thread


# --- the module, in this process -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_outside_a_step_loop_stops_at_once(signum: int) -> None:
    with handling_stop_signals(), pytest.raises(RunInterrupted) as caught:
        signal_self(signum)
    assert caught.value.signum == signum and caught.value.step is None
    assert caught.value.exit_code == 128 + signum


def test_a_stop_signal_during_a_step_loop_finishes_the_step_and_stops_at_its_boundary() -> None:
    finished = []
    with handling_stop_signals(), pytest.raises(RunInterrupted) as caught:
        boundaries = StepBoundaries()
        for step in boundaries.steps(range(10)):
            if step == 3:
                signal_self(signal.SIGTERM)
            finished.append(step)  # the step goes on after the signal
            if boundaries.requested():
                boundaries.stop(step + 1, 10)
    assert finished == [0, 1, 2, 3] and caught.value.step == 4 and caught.value.total == 10
    assert "saved its state at step 4 of 10" in str(caught.value)


def test_a_second_signal_stops_at_once() -> None:
    with handling_stop_signals(), pytest.raises(RunInterrupted) as caught:
        for step in StepBoundaries().steps(range(10)):
            signal_self(signal.SIGTERM)
            assert stop_requested() == signal.SIGTERM
            signal_self(signal.SIGINT)
    assert caught.value.signum == signal.SIGINT and caught.value.step is None


def test_a_step_longer_than_the_grace_is_cut_short(monkeypatch) -> None:
    monkeypatch.setattr(interruption, "BOUNDARY_GRACE_S", 0.2)
    started = time.monotonic()
    with handling_stop_signals(), pytest.raises(RunInterrupted) as caught:
        for _ in StepBoundaries().steps(range(10)):
            signal_self(signal.SIGTERM)
            time.sleep(30)  # a step that would outlast a container's kill
    assert caught.value.step is None and time.monotonic() - started < 10


def test_a_checkpoint_signal_waits_for_the_boundary_and_never_stops_a_step_before_its_grace() -> None:
    with handling_stop_signals(checkpoint_signal=signal.SIGUSR2, checkpoint_grace_s=60), \
            pytest.raises(RunInterrupted) as caught:
        boundaries = StepBoundaries()
        signal_self(signal.SIGUSR2)  # outside the loop: nothing stops yet
        for step in boundaries.steps(range(5)):
            if boundaries.requested():
                boundaries.stop(step, 5)
    assert caught.value.signum == signal.SIGUSR2 and caught.value.step == 0


def test_the_previous_handlers_are_back_afterwards_and_requests_forgotten() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    with pytest.raises(RunInterrupted), handling_stop_signals():
        signal_self(signal.SIGTERM)
    assert {s: signal.getsignal(s) for s in before} == before and stop_requested() is None


# --- the real command line, killed during fine-tuning ----------------------------------------------------


def evaluate_args(benchmark: Path, root: Path, runs: Path) -> list[str]:
    return [sys.executable, "-m", "imagenet_dg", "evaluate", "--benchmark", str(benchmark), "--root", str(root),
            "--target", "a", "--method", "clipood", "--model", "imagenet-dg-tiny", "--pretrained", "mini",
            "--seeds", "1", "--device", "cpu", "--preset", "smoke", "--set", "finetune.epochs=6",
            "--set", "finetune.steps_per_epoch=10", "--runs", str(runs)]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def record_of(runs: Path) -> dict:
    [results] = list(runs.glob(f"*/{RESULTS_FILE}"))
    record = json.loads(results.read_text())
    return {k: v for k, v in record.items() if k not in TIMINGS}


@pytest.fixture(scope="module")
def uninterrupted(mini_benchmark, mini_releases, tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("uninterrupted") / "runs"
    subprocess.run(evaluate_args(mini_benchmark, mini_releases.root, runs), env=environment(), check=True,
                   capture_output=True, timeout=600)
    return record_of(runs)


def wait_for_log(runs: Path, text: str, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until a run's log under ``runs`` says ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before the signal could be sent"
        if any(text in log.read_text(errors="replace") for log in runs.glob("*/run.log")):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in a run.log under {runs}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_evaluate_killed_during_fine_tuning_resumes_to_the_uninterrupted_record(
    signum, uninterrupted, mini_benchmark, mini_releases, tmp_path, leftovers
) -> None:
    runs = tmp_path / "runs"
    args = evaluate_args(mini_benchmark, mini_releases.root, runs)
    process = subprocess.Popen(args, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_log(runs, "clipood: step 10/60", process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {signal.Signals(signum).name}: clipood on a-16shot-seed1 saved its state at "
                           "step ") and "of 60" in last and "run the same command again" in last
    assert "Traceback" not in stderr
    [folder] = [p for p in runs.iterdir() if (p / "run.json").is_file()]
    assert (folder / "finetune-state.pt").is_file() and not (folder / DONE_FILE).exists()
    assert leftovers(runs) == []

    again = subprocess.run(args, env=environment(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming fine-tuning at step " in again.stderr
    assert record_of(runs) == uninterrupted


# --- data-parallel ranks agree on the step to stop at ----------------------------------------------------


def _agreeing_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        boundaries = StepBoundaries(LateAgreement(current_replica(), torch.device("cpu")))
        stopped_at = None
        for step in boundaries.steps(range(10)):
            if rank == 1 and step == 3:
                interruption._REQUESTS.signum = signal.SIGTERM  # only this rank was signalled
            if boundaries.requested():
                stopped_at = step
                break
        Path(out).joinpath(f"rank{rank}").write_text(str(stopped_at))
    finally:
        dist.destroy_process_group()


def test_data_parallel_ranks_stop_at_the_same_step_when_one_is_signalled(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_agreeing_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    # rank 1's wish at step 3 is read by every rank at the next boundary
    assert (tmp_path / "rank0").read_text() == (tmp_path / "rank1").read_text() == "4"
