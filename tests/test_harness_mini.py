"""End to end on a miniature standard suite: the harness makes the data, builds the manifests, runs, resumes."""

from __future__ import annotations

from guidg import harness, launchers
from guidg.backbone import TINY_MODEL
from imagenet_dg.records import collect

FAST = ("prompt.epochs=2", "finetune.epochs=1", "finetune.steps_per_epoch=2")


def test_a_sweep_over_a_miniature_suite_builds_runs_and_resumes(tmp_path) -> None:
    sweep = harness.Sweep(suite="mini-pacs", targets=("sketch",), methods=("zeroshot", "guidg"), base="clipood",
                          model=TINY_MODEL, pretrained="none", seeds=(1,), preset="smoke", overrides=FAST,
                          device="cpu", runs=tmp_path / "runs", mini_dir=tmp_path / "mini")
    builds: list[str] = []
    the_plan = harness.make_plan(sweep, on_build=builds.append)
    assert len(builds) == 1 and str(the_plan.prepared.benchmark) in builds[0]
    assert the_plan.prepared.synthetic and the_plan.prepared.manifest["suite"] == "mini-pacs"
    outcomes = launchers.run_local(the_plan)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    records = [o.record for o in outcomes]
    assert [(r.suite, r.target, r.method, r.base) for r in records] == [
        ("mini-pacs", "sketch", "zeroshot", None), ("mini-pacs", "sketch", "guidg", "clipood")]
    assert all(set(r.validation_accuracy) == {"art_painting", "cartoon", "photo"} for r in records)
    table = harness.summary_table(the_plan, outcomes)
    assert "guidg+clipood" in table and f"{records[1].accuracy:.2f}" in table
    assert all(r.synthetic_data and not r.synthetic_weights for r in records)
    assert "mini-pacs (synthetic miniature), target sketch: 7 classes, chance 14.3%" in table
    assert "imagenet-dg-tiny: random weights" in table and "Synthetic miniature data:" in table

    again = harness.make_plan(sweep, on_build=builds.append)
    assert len(builds) == 1  # the manifests are there: nothing is rebuilt
    assert all(r.done for r in again.runs)
    assert [o.status for o in launchers.run_local(again)] == ["done", "done"]
    assert len(collect(tmp_path / "runs").runs) == 2


def test_a_sweep_reads_a_standard_suite_from_its_hub_mirror_and_records_it(tmp_path) -> None:
    from test_suites_hub import write_hub_repo

    repo = tmp_path / "hub" / "pacs"
    write_hub_repo(repo, domain_names=["art painting", "Cartoon", "photo", "sketch"], per_class=5)
    sweep = harness.Sweep(suite="pacs", protocol="full", targets=("sketch",), methods=("zeroshot",),
                          model=TINY_MODEL, pretrained="none", seeds=(0,), device="cpu", runs=tmp_path / "runs",
                          root=tmp_path / "images", hub=str(repo))
    builds: list[str] = []
    the_plan = harness.make_plan(sweep, on_build=builds.append)
    assert builds[0].startswith(f"Reading {repo}") and "-hub-" in the_plan.prepared.benchmark.name
    assert (tmp_path / "images" / "PACS" / "sketch").is_dir()  # written in the suite's own layout
    [outcome] = launchers.run_local(the_plan)
    record = outcome.record
    assert record.suite == "pacs" and record.target == "sketch" and not record.synthetic_data
    assert record.suite_source["kind"] == "hub" and record.suite_source["repo_id"] == "pacs"
    assert record.suite_source["revision"] and record.test_images > 0
