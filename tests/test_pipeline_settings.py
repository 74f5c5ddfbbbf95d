"""The pipeline settings (``--set pipeline.*``): augmentation on the device, a compiled image encoder, the decoder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import guidg.backbone as backbone_module
import guidg.image_pipeline as image_pipeline
from guidg.finetune import StepSampler, step_batches, train_step
from guidg.harness import SweepError, Sweep, parse_overrides, validate
from guidg.image_cache import CacheSettings, ImageCacheError, using_image_cache
from guidg.bases import get_base
from guidg.image_pipeline import PipelineConfig
from guidg.presets import get_preset
from guidg.run import RunSpec, attempt, precision_of, run_key
from guidg.transforms import finetune_train_transform, prompt_train_transform
from imagenet_dg.errors import ImageNetDGError
from test_image_cache import write_images

SIZES = [(75, 100), (60, 45), (90, 72), (64, 64)]


@pytest.fixture()
def images(tmp_path: Path):
    return write_images(tmp_path / "images", SIZES)


def _batches(images, transform, settings: CacheSettings, steps: int = 3):
    sampler = StepSampler([len(images)], 3, 11, steps)
    with using_image_cache(settings):
        return [
            (x.clone(), y.clone(), d.clone())
            for x, y, d in step_batches([images], transform, sampler, num_workers=0, pin_memory=False,
                                        device=torch.device("cpu"))
        ]


def _count_device_augmentation(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = image_pipeline.augment_on_device

    def counted(transform, crops, seeds):
        calls.append(len(crops))
        return original(transform, crops, seeds)

    monkeypatch.setattr(image_pipeline, "augment_on_device", counted)
    return calls


def test_randaugment_on_the_device_gives_each_image_the_operations_the_workers_give_it(images, tmp_path,
                                                                                       monkeypatch):
    transform = finetune_train_transform(32, randaugment=True)
    calls = _count_device_augmentation(monkeypatch)
    in_workers = _batches(images, transform, CacheSettings(tmp_path / "cache"))
    assert calls == []
    on_device = _batches(images, transform, CacheSettings(tmp_path / "cache", augment_on="device"))
    assert calls == [3, 3, 3]  # every batch was augmented after the loader, as a batch of crops
    assert len(in_workers) == len(on_device) == 3
    for (x, y, d), (dx, dy, dd) in zip(in_workers, on_device):
        assert dx.dtype == torch.float32 and dx.shape == x.shape
        assert torch.equal(x, dx) and torch.equal(y, dy) and torch.equal(d, dd)
    # and the augmentation is really random per image: without it the batches differ
    plain = _batches(images, finetune_train_transform(32, randaugment=False), CacheSettings(tmp_path / "cache"))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(in_workers, plain))


def test_a_transform_without_a_separate_random_part_is_refused_on_the_device(images, tmp_path):
    transform = prompt_train_transform(32, (0.5, 1.0), True)  # the crop box itself is random
    with pytest.raises(ImageCacheError, match="augment_on=workers"):
        _batches(images, transform, CacheSettings(tmp_path / "cache", augment_on="device"))


def test_pipeline_settings_are_checked_and_set_like_any_other():
    assert parse_overrides(["pipeline.compile=true", "pipeline.augment_on=device"]) == {
        "pipeline": {"compile": True, "augment_on": "device"}
    }
    config = get_preset("paper").replace(pipeline={"decoder": "nvjpeg"})
    assert config.pipeline.decoder == "nvjpeg" and not config.pipeline.is_default()
    assert PipelineConfig().is_default()
    with pytest.raises(ImageNetDGError, match="pipeline.augment_on = gpu: expected one of workers, device"):
        get_preset("paper").replace(pipeline={"augment_on": "gpu"})
    with pytest.raises(ImageNetDGError, match="pipeline.decoder"):
        PipelineConfig(decoder="turbojpeg")


def test_nvjpeg_without_a_gpu_is_refused_before_anything_runs(tmp_path):
    sweep = Sweep(mini=True, methods=("zeroshot",), device="cpu", runs=tmp_path / "runs",
                  overrides=("pipeline.decoder=nvjpeg",))
    with pytest.raises(SweepError, match="nvjpeg decodes on a CUDA GPU"):
        validate(sweep)


def test_the_default_pipeline_keeps_the_run_key_and_another_one_changes_it(mini_benchmark):
    spec = RunSpec(mini_benchmark, "a-16shot-seed1", "coop", backbone_module.TINY_SPEC, "smoke",
                   get_preset("smoke"), 1)
    hparams = spec.hparams.to_dict()
    del hparams["pipeline"]
    before = {  # the key as it was computed before pipeline settings existed
        "benchmark": "h", "config": spec.config, "method": spec.method, "backbone": spec.backbone.describe(),
        "hparams": hparams, "seed": 1, "device_type": "cpu", "precision": precision_of("cpu"),
    }
    assert run_key(spec, "h") == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:20]
    compiled = RunSpec(**{**spec.__dict__, "hparams": spec.hparams.replace(pipeline={"compile": True})})
    assert run_key(compiled, "h") != run_key(spec, "h")


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts what it was given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def test_a_compiled_image_encoder_computes_features_and_training_steps_as_the_plain_one(tiny_backbone):
    images = torch.randn(6, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    plain = tiny_backbone.encode_images(images)
    backend = CountingBackend()
    tiny_backbone.compile_image_encoder(backend)
    assert tiny_backbone.compile_backend is backend
    compiled = tiny_backbone.encode_images(images)
    assert backend.graphs >= 1
    assert torch.allclose(plain, compiled, atol=1e-6)

    config = get_preset("smoke").finetune
    erm = get_base("erm").objective(get_preset("smoke"))
    heads = F.normalize(torch.randn(1, 5, tiny_backbone.embed_dim), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    visual = tiny_backbone.model.visual
    start = {k: v.clone() for k, v in visual.state_dict().items()}

    def one_step() -> tuple[float, dict[str, torch.Tensor]]:
        visual.load_state_dict(start)
        visual.train()
        optimizer = torch.optim.AdamW(visual.parameters(), lr=1e-3)
        loss, _ = train_step(tiny_backbone, None, heads, images, labels, erm, config, optimizer)
        visual.eval()
        return loss.total.item(), {k: v.clone() for k, v in visual.state_dict().items()}

    graphs_before = backend.graphs
    compiled_loss, compiled_state = one_step()
    assert backend.graphs > graphs_before  # training mode compiled its own graph: the step went through it
    tiny_backbone.image_encoder = visual  # the plain encoder again
    plain_loss, plain_state = one_step()
    assert compiled_loss == pytest.approx(plain_loss, abs=1e-6)
    assert all(torch.allclose(compiled_state[k], plain_state[k], atol=1e-6) for k in plain_state)


def test_a_run_with_a_compiled_encoder_records_it_in_its_own_folder(mini_benchmark, mini_releases, tmp_path,
                                                                     monkeypatch):
    backend = CountingBackend()
    monkeypatch.setattr(backbone_module, "COMPILE_BACKEND", backend)
    calls = _count_device_augmentation(monkeypatch)
    smoke = get_preset("smoke").replace(finetune={"epochs": 1, "steps_per_epoch": 2})
    spec = RunSpec(mini_benchmark, "a-16shot-seed1", "erm", backbone_module.TINY_SPEC, "smoke",
                   smoke.replace(pipeline={"compile": True, "augment_on": "device"}), 1)
    record = attempt(spec, dict(mini_releases.paths), tmp_path / "runs", device="cpu").record
    assert backend.graphs >= 2  # fine-tuning (train mode) and evaluation (eval mode)
    assert len(calls) == 2  # both training steps augmented on the device
    assert record.config["pipeline"] == {"decoder": "pil", "augment_on": "device", "compile": True}
    assert record.details["image_pipeline"]["augment_on"] == "device"
    plain = RunSpec(**{**spec.__dict__, "hparams": smoke})
    assert run_key(plain, record.manifest_content_hash) != run_key(spec, record.manifest_content_hash)
