"""The harness as a library: sweeps expanded into runs and checked before anything is scanned or trained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from guidg import harness
from guidg.backbone import TINY_MODEL
from guidg.methods import METHODS
from guidg.presets import get_preset
from guidg.run import precision_of, run_folder
from imagenet_dg.build import BuildOptions
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.protocols import DEFAULT_SEEDS, PROTOCOLS
from imagenet_dg.suites import get_suite


def sweep(**changes) -> harness.Sweep:
    base = harness.Sweep(methods=("zeroshot",), model=TINY_MODEL, pretrained="none", device="cpu", seeds=(1,),
                         root=Path("releases"))
    return dataclasses.replace(base, **changes)


def test_guidg_with_a_base_is_the_registered_variant() -> None:
    assert harness.resolve_methods(("guidg",), "clipood") == ("guidg+clipood",)
    assert harness.resolve_methods(("zeroshot", "guidg"), "ueo") == ("zeroshot", "guidg+ueo")
    assert harness.resolve_methods(("guidg+erm", "coop"), None) == ("guidg+erm", "coop")


def test_all_runs_every_registered_method_once() -> None:
    assert harness.resolve_methods(("all", "zeroshot"), None) == tuple(METHODS)
    with_base = harness.resolve_methods(("all",), "clipood")
    assert "guidg+clipood" in with_base and "guidg+erm" not in with_base and "erm" in with_base


def test_a_base_given_to_methods_without_one_is_an_error() -> None:
    with pytest.raises(ImageNetDGError, match="--base clipood.*none of the methods"):
        harness.resolve_methods(("zeroshot", "coop"), "clipood")
    with pytest.raises(ImageNetDGError, match="runs on a base"):
        harness.resolve_methods(("guidg",), None)
    with pytest.raises(ImageNetDGError, match="unknown base"):
        harness.resolve_methods(("guidg",), "sgd")
    with pytest.raises(ImageNetDGError, match="unknown method"):
        harness.resolve_methods(("gudg",), None)


def test_overrides_take_the_type_of_their_setting() -> None:
    changes = harness.parse_overrides(
        ["finetune.lr=1e-5", "prompt.epochs=3", "finetune.randaugment=false", "prompt.ctx_init=a photo of a",
         "prompt.crop_scale=0.5,1.0", "guidg.routing=sample"]
    )
    assert changes == {
        "finetune": {"lr": 1e-5, "randaugment": False},
        "prompt": {"epochs": 3, "ctx_init": "a photo of a", "crop_scale": (0.5, 1.0)},
        "guidg": {"routing": "sample"},
    }
    config = get_preset("paper").replace(**changes)
    assert config.finetune.lr == 1e-5 and config.prompt.crop_scale == (0.5, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [("finetune.lrr=1", "no setting 'lrr'"), ("optim.lr=1", "unknown section"), ("finetune.lr", "section.key=value"),
     ("prompt.epochs=many", "an integer"), ("finetune.randaugment=3", "true or false")],
)
def test_a_bad_override_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ImageNetDGError, match=message):
        harness.parse_overrides([text])


def test_a_gpu_that_is_not_there_is_an_error_not_a_fallback(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "gpu", "cuda:1"):
        with pytest.raises(ImageNetDGError, match="no CUDA GPU"):
            harness.resolve_device(name)
    assert harness.resolve_device(None) == "cpu"
    with pytest.raises(ImageNetDGError, match="not a device"):
        harness.resolve_device("tpu9")


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"suite": "pacss"}, "unknown suite"), ({"targets": ("x",)}, "no task or target"),
     ({"preset": "fast"}, "unknown preset"), ({"protocol": "full"}, "only the fewshot"),
     ({"shots": (0,)}, "positive"), ({"pretrained": "nowhere.safetensors"}, "neither a pretrained tag"),
     ({"suite": "mini-pacs", "protocol": "full", "shots": (16,)}, "full protocol trains on every image"),
     ({"root": None}, "no release given.*--mini"), ({"suite": "mini-pacs", "mini": True}, "apply to ImageNet-DG"),
     ({"hub": "org/pacs"}, "--suite imagenet-dg is not one"), ({"revision": "main"}, "only with --hub"),
     ({"suite": "pacs", "hub": "org/pacs"}, "--revision is required"),
     ({"suite": "pacs", "hub": "org/pacs", "revision": "main", "root": None}, "needs --root"),
     ({"suite": "pacs", "hub": "org/pacs", "revision": "main", "benchmark": Path("b")}, "leave --benchmark out")],
)
def test_validation_refuses_a_bad_sweep_before_anything_runs(changes, message, tmp_path) -> None:
    with pytest.raises(ImageNetDGError, match=message):
        harness.validate(sweep(runs=tmp_path, **changes))
    assert not any(tmp_path.iterdir())  # nothing scanned, built or written


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"methods": ("maple",), "preset": "paper"},
      r"maple.depth = 9: this model's towers have 2 \(text\) and 2 \(image\) layers; use at most 2"),
     ({"methods": ("maple",), "preset": "smoke", "overrides": ("maple.depth=3",)}, "maple.depth = 3"),
     ({"methods": ("maple",), "model": "RN50"}, "prompts a transformer image tower"),
     ({"methods": ("clip-lora",), "suite": "mini-pacs", "protocol": "full", "preset": "paper"},
      r"clip_lora.iterations: the full protocol has no shots.*--set clip_lora.iterations=N")],
)
def test_a_setting_the_model_or_protocol_cannot_run_is_refused_before_anything_runs(changes, message,
                                                                                     tmp_path) -> None:
    with pytest.raises(ImageNetDGError, match=message):
        harness.validate(sweep(runs=tmp_path, mini=True, root=None, **changes)
                         if changes.get("suite") is None else sweep(runs=tmp_path, root=None, **changes))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "changes",
    [{"methods": ("maple",), "preset": "smoke", "overrides": ("maple.depth=2",)},
     {"methods": ("clip-lora",), "suite": "mini-pacs", "protocol": "full", "preset": "paper",
      "overrides": ("clip_lora.iterations=5",)}],
)
def test_the_same_settings_within_the_models_depth_or_given_what_the_protocol_needs_pass(changes, tmp_path) -> None:
    kwargs = {"mini": True} if changes.get("suite") is None else {}
    checked = harness.validate(sweep(runs=tmp_path, root=None, **kwargs, **changes))
    assert checked.methods == changes["methods"]


def test_default_presets_fit_the_suite() -> None:
    assert harness.default_preset(get_suite("pacs"), "sketch", synthetic=False) == "paper"
    assert harness.default_preset(get_suite("imagenet-dg"), "a", synthetic=False) == "paper-imagenet-dg"
    assert harness.default_preset(get_suite("imagenet-dg"), "i", synthetic=False) == "paper-imagenet-dg-i"
    assert harness.default_preset(get_suite("mini-pacs"), "sketch", synthetic=True) == "mini"


def test_manifests_built_for_some_targets_go_to_a_folder_named_for_them(tmp_path) -> None:
    checked = harness.validate(sweep(runs=tmp_path, mini=True, root=None))
    every = harness.built_folder_name(checked, ("a", "i", "r"), mini=True)
    only_a = harness.built_folder_name(checked, ("a",), mini=True)
    only_r = harness.built_folder_name(checked, ("r",), mini=True)
    assert len({every, only_a, only_r}) == 3 and every.endswith("-mini") and "tasks-a" in only_a


def test_a_leave_one_domain_out_suite_builds_every_task_imagenet_dg_only_those_asked() -> None:
    assert harness.built_tasks(get_suite("mini-pacs"), ("sketch",)) == ("art_painting", "cartoon", "photo", "sketch")
    assert harness.built_tasks(get_suite("imagenet-dg"), ("imagenet-r", "a")) == ("a", "r")
    assert harness.built_tasks(get_suite("imagenet-dg"), ()) == ("a", "i", "r")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_evaluate_and_build_take_the_same_default_seeds_and_shots(protocol: str, tmp_path) -> None:
    checked = harness.validate(sweep(suite="mini-pacs", protocol=protocol, seeds=(), runs=tmp_path, root=None))
    options = BuildOptions(protocol=protocol)
    assert checked.seeds == options.resolved_seeds() == DEFAULT_SEEDS[protocol]
    assert (checked.shots or ()) == options.resolved_shots()


@pytest.fixture
def planned(mini_benchmark, mini_releases, tmp_path):
    def make(**changes):
        checked = harness.validate(sweep(runs=tmp_path / "runs", benchmark=mini_benchmark, root=mini_releases.root,
                                         targets=("a",), **changes))
        prepared = harness.prepare(checked)
        return harness.plan(checked, prepared)

    return make


def test_a_sweep_expands_into_configurations_times_methods(planned) -> None:
    the_plan = planned(methods=("zeroshot", "guidg+erm"), preset="smoke")
    assert [(r.spec.config, r.spec.method) for r in the_plan.runs] == [
        ("a-16shot-seed1", "zeroshot"), ("a-16shot-seed1", "guidg+erm")]
    assert all(not r.done for r in the_plan.runs)
    assert len({r.folder for r in the_plan.runs}) == 2
    listing = harness.describe_plan(the_plan)
    assert "2 runs, 0 done, 2 to run" in listing and str(the_plan.runs[0].folder) in listing


def test_asking_for_a_configuration_the_manifests_lack_says_what_they_hold(planned) -> None:
    with pytest.raises(ImageNetDGError, match="a-16shot-seed2.*a-16shot-seed1"):
        planned(seeds=(1, 2))


def test_overrides_reach_the_runs_and_change_their_folders(planned) -> None:
    plain = planned(preset="smoke").runs[0]
    changed = planned(preset="smoke", overrides=("eval.batch_size=7",)).runs[0]
    assert changed.spec.hparams.eval.batch_size == 7 and changed.folder != plain.folder
    routed = planned(preset="smoke", methods=("zeroshot", "guidg+erm"), overrides=("guidg.routing=sample",)).runs
    assert [r.spec.hparams.names for r in routed][0] == ("zeroshot", "eval", "pipeline")  # not GuiDG's settings
    assert routed[0].folder == plain.folder  # so an override of GuiDG leaves zero-shot's run as it was
    assert METHODS["guidg+erm"].routing_of(routed[1].spec.hparams) == "sample"


def test_the_run_key_holds_the_device_type_and_precision(planned) -> None:
    run = planned(preset="smoke").runs[0]
    content = harness.read_manifest(run.spec.benchmark)["content_hash"]
    assert precision_of("cpu") == "fp32" and precision_of("cuda") == "bf16"
    assert run_folder(run.spec, "runs", content, "cpu") != run_folder(run.spec, "runs", content, "cuda")


def test_a_missing_image_is_found_before_anything_trains(mini_benchmark, mini_releases, tmp_path) -> None:
    import shutil

    copy = tmp_path / "releases"
    shutil.copytree(mini_releases.root, copy)
    checked = harness.validate(sweep(runs=tmp_path / "runs", benchmark=mini_benchmark, root=copy, targets=("a",)))
    prepared = harness.prepare(checked)
    from imagenet_dg.loading import load_task

    victim = load_task(mini_benchmark, "a-16shot-seed1", prepared.roots).test.paths[0]
    victim.unlink()
    with pytest.raises(ImageNetDGError, match=r"imagenet-a \(root .*\): 1 of .* missing"):
        harness.check_image_sample(prepared, ["a-16shot-seed1"])
