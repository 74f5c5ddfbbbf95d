"""The registered methods, end to end on the miniature benchmark with the tiny model: each through the method
interface (fit, predict, save and load), their declarations, and what reads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import open_clip
import pytest
import torch

from guidg.backbone import TINY_MODEL, TINY_SPEC, load_backbone
from guidg.checkpoints import export_open_clip_checkpoint
from guidg.cmattn import ROUTING_MODES, CMAttn
from guidg.evaluation import image_features, predict
from guidg.methods import METHODS, REGISTERED, RUN_SECTIONS, fit_method, get_method, load_method
from guidg.model_selection import RULES
from guidg.presets import get_preset, method_config
from guidg.settings import SettingError
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages

QUICK = get_preset("smoke").replace(
    prompt={"epochs": 2, "eval_every": 1}, finetune={"epochs": 1, "steps_per_epoch": 3}
)


def guide_images(task) -> LabeledImages:
    return LabeledImages.concat([task.guide[d] for d in task.sources])


def accuracy(logits: torch.Tensor, images: LabeledImages) -> float:
    return 100.0 * float((logits.argmax(dim=-1).cpu() == torch.tensor(images.labels)).float().mean())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_and_predicts_logits_for_each_image(name, mini_task, tiny_backbone) -> None:
    predictor = fit_method(name, tiny_backbone, mini_task, QUICK, seed=1)
    logits = predict(predictor, tiny_backbone, mini_task.test)
    assert logits.shape == (len(mini_task.test), len(mini_task.class_ids))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["zeroshot", "coop", "erm", "guidg+clipood"])
def test_a_saved_predictor_loads_into_a_fresh_backbone_and_predicts_the_same(name, mini_task) -> None:
    trained_on = load_backbone(TINY_SPEC)
    predictor = fit_method(name, trained_on, mini_task, QUICK, seed=1)
    expected = predict(predictor, trained_on, mini_task.test)
    fresh = load_backbone(TINY_SPEC)
    loaded = load_method(name, fresh, mini_task, QUICK, predictor.state_dict(), seed=1)
    assert torch.equal(predict(loaded, fresh, mini_task.test), expected)


def test_trainable_parameter_counts_follow_what_each_method_trains(mini_task, tiny_backbone) -> None:
    width = tiny_backbone.text.width
    visual = sum(p.numel() for p in tiny_backbone.model.visual.parameters())
    counts = {name: fit_method(name, tiny_backbone, mini_task, QUICK, seed=1).n_trainable
              for name in ("zeroshot", "coop", "erm")}
    assert counts == {"zeroshot": 0, "coop": QUICK.prompt.n_ctx * width, "erm": visual}
    guided = fit_method("guidg+erm", tiny_backbone, mini_task, QUICK, seed=1)
    heads, dim, classes = QUICK.guidg.heads, tiny_backbone.embed_dim, len(mini_task.class_ids)
    cmattn = heads * (dim * dim + 2 * dim + classes)  # H (D^2 + 2 D + C), the count docs/methods.md gives
    assert guided.n_trainable == len(mini_task.sources) * QUICK.prompt.n_ctx * width + visual + cmattn


def test_guidg_classifies_the_guide_pools_well_above_chance(mini_task) -> None:
    backbone = load_backbone(dataclasses.replace(TINY_SPEC, pretrained="mini"))  # the tiny CLIP of the mini world
    predictor = fit_method("guidg+erm", backbone, mini_task, get_preset("mini"), seed=1)
    guide = guide_images(mini_task)
    chance = 100.0 / len(mini_task.class_ids)
    assert accuracy(predict(predictor, backbone, guide), guide) >= 2 * chance


def test_a_fine_tuned_encoder_exports_to_a_checkpoint_open_clip_loads(mini_task, tiny_backbone, tmp_path) -> None:
    predictor = fit_method("erm", tiny_backbone, mini_task, QUICK, seed=1)
    path = export_open_clip_checkpoint(tiny_backbone.model, tmp_path / "erm.safetensors", {"method": "erm"})
    model, _, _ = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=str(path))
    for name, tensor in predictor.state_dict().items():
        if name.startswith("visual."):
            assert torch.equal(model.visual.state_dict()[name.removeprefix("visual.")], tensor), name


def test_a_method_sees_only_the_sections_it_declares(mini_task, tiny_backbone, monkeypatch) -> None:
    import guidg.methods as registry

    seen = []
    zeroshot = get_method("zeroshot")

    def spy(context):
        seen.append(context.config.names)
        return zeroshot.fit(context)

    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, "zeroshot": dataclasses.replace(zeroshot, fit=spy)})
    fit_method("zeroshot", tiny_backbone, mini_task, QUICK, seed=1)
    assert set(seen[0]) == {"zeroshot", *(kind.NAME for kind in RUN_SECTIONS)}
    with pytest.raises(SettingError, match="no prompt section"):
        fit_method("coop", tiny_backbone, mini_task, method_config("zeroshot", "smoke"), seed=1)


@pytest.mark.parametrize("routing", ROUTING_MODES)
def test_the_routing_setting_reaches_the_cmattn_of_training_and_of_prediction(
    routing, mini_task, tiny_backbone, monkeypatch
) -> None:
    calls = []
    real_forward = CMAttn.forward

    def spy(self, features, experts):
        calls.append((self.routing, self.training))
        return real_forward(self, features, experts)

    monkeypatch.setattr(CMAttn, "forward", spy)
    predictor = fit_method("guidg+erm", tiny_backbone, mini_task, QUICK.replace(guidg={"routing": routing}), seed=1)
    assert set(calls) == {(routing, True)}  # every training step weighed the experts with this routing
    calls.clear()
    features = image_features(tiny_backbone, mini_task.test)
    together = predictor.logits(features)
    alone = torch.cat([predictor.logits(features[i : i + 1]) for i in range(len(features))])
    assert {used for used, _ in calls} == {routing}
    if routing == "sample":  # each image its own weights: its batch-mates do not matter
        torch.testing.assert_close(together, alone)
    else:  # one weight vector per evaluation batch: an image alone is weighed differently
        assert not torch.allclose(together, alone, atol=1e-4)


def test_training_and_selection_never_read_the_target(mini_task, tiny_backbone) -> None:
    nowhere = LabeledImages(tuple(Path("/nowhere") / f"{i}.jpg" for i in range(len(mini_task.test))),
                            mini_task.test.labels, mini_task.test.domains)
    blind = dataclasses.replace(mini_task, test=nowhere)
    for name in ("coop", "guidg+clipood"):
        predictor = fit_method(name, tiny_backbone, blind, QUICK, seed=1)
        assert predictor.n_trainable > 0


def test_every_declaration_is_complete() -> None:
    for method in REGISTERED:
        assert method.description and method.trains and method.trainable_parameters, method.name
        assert method.selection in RULES, method.name
        assert all(c.paper and c.url.startswith("https://") for c in method.citations), method.name
        assert method.citations[0].code is None or method.citations[0].code.startswith("https://github.com/")
        assert method.family == method.name.partition("+")[0], method.name


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(ImageNetDGError, match="guidg\\+clipood"):
        get_method("guidg+nothing")


@pytest.mark.parametrize("method", REGISTERED, ids=lambda m: m.name)
def test_the_declared_rule_is_the_rule_under_the_defaults(method) -> None:
    assert method.selection_of(method_config(method.name, "paper")) == method.selection
    assert method.selection_of(method_config(method.name, "smoke")) in RULES


@pytest.mark.parametrize(
    ("method", "changes", "rule"),
    [("clip-adapter", {"clip_adapter": {"checkpoint": "best"}}, "source-validation-epoch"),
     ("tip-adapter", {"tip_adapter": {"search": False}}, "none"),
     ("tip-adapter-f", {"tip_adapter_f": {"search": False}}, "source-validation-epoch"),
     ("tip-adapter-f", {"tip_adapter_f": {"checkpoint": "last"}}, "source-validation-grid"),
     ("tip-adapter-f", {"tip_adapter_f": {"checkpoint": "last", "search": False}}, "last-step")],
)
def test_a_setting_that_changes_what_is_selected_changes_the_recorded_rule(method, changes, rule) -> None:
    assert get_method(method).selection_of(method_config(method, "paper", changes)) == rule
