"""The Slurm launcher: what would be submitted, and the jobs run through submitit's debug executor."""

from __future__ import annotations

import os
import stat

from guidg import harness, launchers
from guidg.backbone import TINY_MODEL
from imagenet_dg.records import collect


def plan_of(mini_benchmark, mini_releases, runs, methods=("zeroshot",)):
    sweep = harness.Sweep(methods=methods, model=TINY_MODEL, pretrained="none", device="cpu", seeds=(1,),
                          targets=("a",), preset="smoke", runs=runs, benchmark=mini_benchmark,
                          root=mini_releases.root)
    checked = harness.validate(sweep)
    return harness.plan(checked, harness.prepare(checked))


def test_the_debug_executor_runs_each_submitted_run(mini_benchmark, mini_releases, tmp_path) -> None:
    the_plan = plan_of(mini_benchmark, mini_releases, tmp_path / "runs")
    options = launchers.SlurmOptions(cluster="debug", partition="gpu", gpus_per_job=0, folder=tmp_path / "slurm")
    jobs = launchers.submit_slurm(the_plan, options)
    assert len(jobs) == 1
    outcome = jobs[0].result()
    assert outcome.status == "ran" and outcome.record.method == "zeroshot"
    assert [r.folder for r in collect(tmp_path / "runs").runs] == [the_plan.runs[0].folder]
    again = plan_of(mini_benchmark, mini_releases, tmp_path / "runs")
    assert launchers.submit_slurm(again, options) == []  # finished runs are not submitted again


def test_a_sweep_is_submitted_as_one_array_job_with_the_resources_asked(
    mini_benchmark, mini_releases, tmp_path, monkeypatch
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    script = tools / "submitted.sh"
    fake = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": f"#!/bin/sh\ncp \"$1\" {script}\necho 'Submitted batch job 4242'\n",
    }
    for name, text in fake.items():
        (tools / name).write_text(text)
        (tools / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    the_plan = plan_of(mini_benchmark, mini_releases, tmp_path / "runs", methods=("zeroshot", "coop", "clipood"))
    options = launchers.SlurmOptions(partition="a100", time_minutes=90, gpus_per_job=2, cpus_per_job=6,
                                   array_parallelism=2, folder=tmp_path / "slurm")
    jobs = launchers.submit_slurm(the_plan, options)
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]
    text = script.read_text()
    for line in ("#SBATCH --partition=a100", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=6", "#SBATCH --array=0-2%2",
                 "#SBATCH --signal=USR2@120"):
        assert line in text, line
