"""``--jobs N``: N runs at once in N processes sharing the runs folder, the same records as running in sequence,
each process on its own GPU or its share of the cores, all stopped cleanly and resumably by one signal; and
what cannot be combined with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from guidg import harness, launchers
from guidg.harness import SweepError
from imagenet_dg.cli import main
from imagenet_dg.records import DONE_FILE, RESULTS_FILE

TIMINGS = ("phase_seconds",)
FAST = ("finetune.epochs=6", "finetune.steps_per_epoch=10")
SWEEP = ["--target", "a", "--method", "zeroshot", "clipood", "erm", "--model", "imagenet-dg-tiny", "--pretrained",
         "mini", "--seeds", "1", "--device", "cpu", "--preset", "smoke", *(w for o in FAST for w in ("--set", o))]


def evaluate(benchmark: Path, root: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "imagenet_dg", "evaluate", "--benchmark", str(benchmark), "--root", str(root),
            "--runs", str(runs), *SWEEP, *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def records(runs: Path) -> dict[str, dict]:
    """Every finished run's record by folder name, without its timings."""
    found = {}
    for results in sorted(runs.glob(f"*/{RESULTS_FILE}")):
        record = json.loads(results.read_text())
        found[results.parent.name] = {k: v for k, v in record.items() if k not in TIMINGS}
    return found


def table_rows(text: str) -> list[list[str]]:
    lines = text.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("state "))
    return [line.split() for line in lines[start + 1:]]


def sweep_plan(benchmark: Path, root: Path, runs: Path):
    """The plan of :data:`SWEEP`, as the command line makes it."""
    sweep = harness.Sweep(targets=("a",), methods=("zeroshot", "clipood", "erm"), model="imagenet-dg-tiny",
                          pretrained="mini", seeds=(1,), device="cpu", preset="smoke", overrides=FAST, runs=runs,
                          benchmark=benchmark, root=root)
    return harness.make_plan(sweep)


@pytest.fixture(scope="module")
def sequential(mini_benchmark, mini_releases, tmp_path_factory) -> dict[str, dict]:
    runs = tmp_path_factory.mktemp("sequential") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # what each job process gets on this machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            outcomes = launchers.run_local(sweep_plan(mini_benchmark, mini_releases.root, runs))
        finally:
            torch.set_num_threads(threads)
    assert [o.status for o in outcomes] == ["ran"] * 3
    return records(runs)


def test_two_jobs_on_cpu_give_the_records_of_running_in_sequence(
    sequential, mini_benchmark, mini_releases, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    the_plan = sweep_plan(mini_benchmark, mini_releases.root, tmp_path / "runs")
    started = []
    outcomes = launchers.run_local(the_plan, on_start=started.append, jobs=2)
    assert [o.status for o in outcomes] == ["ran"] * 3 and len(started) == 3
    assert len(sequential) == 3 and records(tmp_path / "runs") == sequential
    assert [o.record.method for o in outcomes] == ["zeroshot", "clipood", "erm"]  # in plan order
    rows = table_rows(harness.summary_table(the_plan, outcomes))
    assert [(r[0], r[1], r[-1]) for r in rows] == [("ran", r.spec.method, r.folder.name) for r in the_plan.runs]


def test_sigterm_stops_every_job_resumably_and_the_rerun_gives_the_sequential_records(
    sequential, mini_benchmark, mini_releases, tmp_path, leftovers
) -> None:
    runs = tmp_path / "runs"
    args = evaluate(mini_benchmark, mini_releases.root, runs, "--jobs", "2")
    process = subprocess.Popen(args, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while sum("step 10/60" in log.read_text() for log in runs.glob("*/run.log")) < 2:  # both jobs fine-tuning
            assert process.poll() is None and time.monotonic() < deadline, "the jobs ended before the signal"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM during ") and last.count("(saved at step ") == 2
    assert "Traceback" not in stderr and leftovers(runs) == []
    # the zero-shot run finished before both fine-tuning runs were going; those two saved their state
    assert len(list(runs.glob(f"*/{DONE_FILE}"))) == 1 and len(list(runs.glob("*/finetune-state.pt"))) == 2

    again = subprocess.run(args, env=environment(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("resuming fine-tuning at step ") == 2
    assert records(runs) == sequential
    assert len(table_rows(again.stdout)) == 3


# --- what --jobs refuses ---------------------------------------------------------------------------------


def test_jobs_under_torchrun_are_refused_naming_both(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SweepError, match="torchrun trains each run over several GPUs .* use one or the other"):
        launchers.check_jobs(2, "cpu")


@pytest.mark.parametrize(("jobs", "device", "message"), [
    (0, "cpu", "expected 1 or more"),
    (2, "cuda:1", "each job takes its own GPU; give --device cuda"),
    (3, "cuda", "shows 2 CUDA GPU"),
])
def test_a_jobs_count_that_cannot_work_is_refused(jobs, device, message, monkeypatch) -> None:
    monkeypatch.setattr(launchers.torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SweepError, match=message):
        launchers.check_jobs(jobs, device)
    launchers.check_jobs(2, "cuda")  # one GPU each: accepted


def test_jobs_with_the_slurm_launcher_are_refused_before_anything_is_built(tmp_path) -> None:
    result = CliRunner().invoke(main, ["evaluate", "--mini", "--mini-dir", str(tmp_path / "mini"), "--method",
                                       "zeroshot", "--launcher", "slurm", "--jobs", "2", "--runs", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.startswith("error: --jobs 2 applies to --launcher local")
    assert not (tmp_path / "mini").exists() and not (tmp_path / "r").exists()


def fake_plan(device: str, workers: int, asked_workers: int | None) -> SimpleNamespace:
    sweep = SimpleNamespace(workers=asked_workers, runs=Path("runs"), export_model=False)
    return SimpleNamespace(checked=SimpleNamespace(device=device, workers=workers, sweep=sweep),
                           prepared=SimpleNamespace(roots={}))


def test_each_job_takes_its_own_gpu_and_a_share_of_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    gpus = launchers.job_settings(fake_plan("cuda", 15, None), 4)
    assert [s.device for s in gpus] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert {s.threads for s in gpus} == {4} and {s.workers for s in gpus} == {3}  # the default loaders divided
    cpus = launchers.job_settings(fake_plan("cpu", 0, None), 2)
    assert [s.device for s in cpus] == ["cpu", "cpu"] and {s.threads for s in cpus} == {8}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert {s.threads for s in launchers.job_settings(fake_plan("cpu", 0, None), 2)} == {2}
    assert {s.workers for s in launchers.job_settings(fake_plan("cuda", 6, 6), 2)} == {6}  # as asked
