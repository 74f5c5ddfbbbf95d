"""Several processes: the run lock between real processes, and two evaluations sharing one runs folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from guidg.run_lock import RunLock
from imagenet_dg.records import RESULTS_FILE, collect

HOLD = textwrap.dedent(
    """
    import sys, time
    from guidg.run_lock import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)

EVALUATE = textwrap.dedent(
    """
    import json, sys
    from guidg.backbone import TINY_SPEC
    from guidg.presets import get_preset
    from guidg.run import RunSpec, attempt
    benchmark, roots, runs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    spec = RunSpec(benchmark, "a-16shot-seed1", "zeroshot", TINY_SPEC, "smoke", get_preset("smoke"), 1)
    outcome = attempt(spec, roots, runs, device="cpu")
    print(json.dumps({"status": outcome.status, "folder": str(outcome.folder)}), flush=True)
    """
)


def python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)


def test_a_lock_held_by_another_process_is_refused_and_freed_when_it_dies(tmp_path) -> None:
    holder = python(HOLD, str(tmp_path / "run"))
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = RunLock(tmp_path / "run")
        assert lock.acquire(blocking=False) is False
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the kernel releases the lock
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not lock.acquire(blocking=False):
            assert time.monotonic() < deadline, "the lock of a killed process was not released"
            time.sleep(0.05)
        assert lock.held
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_two_evaluations_sharing_a_runs_folder_run_a_run_once(mini_benchmark, mini_releases, tmp_path) -> None:
    roots = json.dumps({d: str(p) for d, p in mini_releases.paths.items()})
    runs = tmp_path / "runs"
    workers = [python(EVALUATE, str(mini_benchmark), roots, str(runs)) for _ in range(2)]
    outputs = [json.loads(w.communicate(timeout=600)[0].strip().splitlines()[-1]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sorted(o["status"] for o in outputs) == ["done", "ran"]
    assert outputs[0]["folder"] == outputs[1]["folder"]
    found = collect(runs)
    assert len(found.runs) == 1 and not found.unfinished
    assert len((found.runs[0].folder / RESULTS_FILE).read_text().splitlines()) == 1
