"""Runs read their images through the decoded-image cache beside the dataset folder, and reuse it."""

from __future__ import annotations

import guidg.image_cache as image_cache
from guidg.backbone import TINY_SPEC
from guidg.image_pipeline import describe_pipeline, eval_batch_size, machine_workers
from guidg.presets import get_preset
from guidg.run import RunSpec, attempt

QUICK = get_preset("smoke").replace(prompt={"epochs": 2}, finetune={"epochs": 1, "steps_per_epoch": 2})


def test_a_run_builds_its_caches_beside_the_dataset_and_a_second_run_reuses_them(
    mini_benchmark, mini_releases, tmp_path, monkeypatch
) -> None:
    spec = RunSpec(mini_benchmark, "a-16shot-seed1", "coop", TINY_SPEC, "smoke", QUICK, 1)
    first = attempt(spec, dict(mini_releases.paths), tmp_path / "runs1", device="cpu").record
    assert first.details["text_encoding"] == {"text_encoding": "shared-prefix", "chosen_by": "rule (cpu)"}
    beside = mini_benchmark.parent / f"{mini_benchmark.name}.decoded-images"
    assert first.details["image_pipeline"]["decoded_image_cache"] == {"place": "dataset"}
    assert any(beside.iterdir())
    assert not (mini_benchmark / "decoded-images").exists()  # never inside the build folder

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_cache, "_decode_pil", refuse)
    second = attempt(spec, dict(mini_releases.paths), tmp_path / "runs2", device="cpu").record
    assert second.accuracy == first.accuracy  # the same images, the same seeded views: the same result
    assert second.class_accuracy == first.class_accuracy


def test_loader_settings_follow_the_device() -> None:
    assert machine_workers("cpu") == 0
    assert machine_workers("cuda") >= 1
    assert eval_batch_size("cuda") > eval_batch_size("cpu")
    assert describe_pipeline("cpu")["decoded_image_cache"] is None
