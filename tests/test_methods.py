"""The registered methods, end to end on the miniature benchmark with the tiny model."""

from __future__ import annotations

import open_clip
import pytest
import torch

from guidg.backbone import TINY_MODEL
from guidg.checkpoints import export_open_clip_checkpoint
from guidg.evaluation import accuracy
from guidg.methods import METHODS, fit_method, get_method
from guidg.presets import get_preset
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages

QUICK = get_preset("smoke").replace(
    prompt={"epochs": 2, "eval_every": 1}, finetune={"epochs": 1, "steps_per_epoch": 3}
)


def guide_images(task) -> LabeledImages:
    return LabeledImages.concat([task.guide[d] for d in task.sources])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_and_predicts_logits_for_each_image(name, mini_task, tiny_backbone) -> None:
    trained = fit_method(name, tiny_backbone, mini_task, QUICK, seed=1)
    logits = trained.predict(tiny_backbone, mini_task.test)
    assert logits.shape == (len(mini_task.test), len(mini_task.class_ids))
    assert torch.isfinite(logits).all()
    assert trained.method == name or name == "zeroshot"
    assert "heads" in trained.state_dict()


def test_trainable_parameter_counts_follow_what_each_method_trains(mini_task, tiny_backbone) -> None:
    width = tiny_backbone.text.width
    visual = sum(p.numel() for p in tiny_backbone.model.visual.parameters())
    counts = {name: fit_method(name, tiny_backbone, mini_task, QUICK, seed=1).n_trainable for name in ("zeroshot", "coop", "erm")}
    assert counts == {"zeroshot": 0, "coop": QUICK.prompt.n_ctx * width, "erm": visual}
    guided = fit_method("guidg+erm", tiny_backbone, mini_task, QUICK, seed=1)
    cmattn = sum(p.numel() for p in guided.cmattn.parameters())
    assert guided.n_trainable == 3 * QUICK.prompt.n_ctx * width + visual + cmattn


def test_guidg_classifies_the_guide_pools_well_above_chance(mini_task) -> None:
    from guidg.backbone import BackboneSpec, load_backbone

    backbone = load_backbone(BackboneSpec(TINY_MODEL, "mini"))  # the tiny CLIP pretrained on the miniature world
    trained = fit_method("guidg+erm", backbone, mini_task, get_preset("mini"), seed=1)
    guide = guide_images(mini_task)
    score = accuracy(trained.predict(backbone, guide), torch.tensor(guide.labels))
    chance = 100.0 / len(mini_task.class_ids)
    assert score >= 2 * chance


def test_a_fine_tuned_encoder_exports_to_a_checkpoint_open_clip_loads(mini_task, tiny_backbone, tmp_path) -> None:
    trained = fit_method("erm", tiny_backbone, mini_task, QUICK, seed=1)
    path = export_open_clip_checkpoint(tiny_backbone.model, tmp_path / "erm.safetensors", {"method": "erm"})
    model, _, _ = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=str(path))
    for name, tensor in trained.visual_state.items():
        assert torch.equal(model.visual.state_dict()[name], tensor), name


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(ImageNetDGError, match="guidg\\+clipood"):
        get_method("guidg+nothing")
