"""MaPLe and CLIP-LoRA, registered: where they stand in the registry, their own image encoder on any copy of the
pretrained backbone, and CLIP-LoRA's exported model (their runs: ``test_baselines_registered.py``)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from guidg.backbone import TINY_MODEL, TINY_SPEC, load_backbone, register_model_configs
from guidg.evaluation import image_features, predict
from guidg.methods import REGISTERED, fit_method, load_method
from guidg.methods.clip_lora import CLIP_LORA
from guidg.methods.maple import MAPLE
from guidg.presets import get_preset
from guidg.run import MODEL_FILE, PREDICTOR_FILE, RunSpec, attempt
from imagenet_dg.loading import load_task

ENCODER_METHODS = (MAPLE, CLIP_LORA)
CONFIG = "a-16shot-seed1"


def test_they_are_registered_after_coop_and_after_tip_adapter_f() -> None:
    names = [method.name for method in REGISTERED]

    assert names.index("maple") > names.index("coop") and names.index("maple") < names.index("clip-adapter")
    assert names.index("clip-lora") == names.index("tip-adapter-f") + 1


@pytest.mark.parametrize("method", ENCODER_METHODS, ids=lambda m: m.name)
def test_its_image_encoder_is_its_own_on_any_copy_of_the_pretrained_backbone(method, mini_task) -> None:
    trained_on = load_backbone(TINY_SPEC)
    predictor = fit_method(method.name, trained_on, mini_task, get_preset("smoke"), seed=1)
    images = mini_task.test
    plain = image_features(load_backbone(TINY_SPEC), images)
    own = image_features(trained_on, images, encode=predictor.image_encoder(trained_on))
    fresh = load_backbone(TINY_SPEC)

    assert (own - plain).abs().max() > 1e-4  # not the pretrained encoder's features
    assert torch.equal(predict(predictor, fresh, images), predict(predictor, trained_on, images))


def test_the_exported_clip_lora_model_is_the_merged_encoder(mini_benchmark, mini_releases, tmp_path) -> None:
    roots = dict(mini_releases.paths)
    spec = RunSpec(mini_benchmark, CONFIG, CLIP_LORA.name, TINY_SPEC, "smoke", get_preset("smoke"), 1)
    outcome = attempt(spec, roots, tmp_path, device="cpu", export_model=True)
    register_model_configs()
    exported = open_clip.create_model(TINY_MODEL, pretrained=str(outcome.folder / MODEL_FILE)).eval()
    task = load_task(mini_benchmark, CONFIG, roots)
    backbone = load_backbone(TINY_SPEC)
    predictor = load_method(CLIP_LORA.name, backbone, task, spec.hparams,
                            load_file(outcome.folder / PREDICTOR_FILE), seed=1)
    batch = torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = predictor.image_encoder(backbone)(batch)
        assert torch.allclose(torch.nn.functional.normalize(exported.encode_image(batch), dim=-1), expected,
                              rtol=0, atol=1e-6)
