"""The four frozen-encoder baselines on the miniature world: they train, select on source data only, repeat
exactly, save and load, and train on cached features exactly as on images encoded at every step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from guidg.backbone import TINY_MODEL, BackboneSpec, load_backbone
from guidg.clip_adapter import ClipAdapterConfig, TrainedClipAdapter, train_clip_adapter
from guidg.evaluation import accuracy, image_features
from guidg.feature_training import evaluation_features, source_data
from guidg.linear_probe import LinearProbe, LinearProbeConfig, train_linear_probe
from guidg.losses import LOGIT_SCALE
from guidg.tip_adapter import TipAdapter, TipAdapterConfig, TipAdapterFConfig, train_tip_adapter, train_tip_adapter_f
from guidg.transforms import eval_transform
from guidg.zeroshot import zeroshot_classifier

# Short versions of the defaults, so that each run takes about a second on the miniature task.
METHODS: dict[str, tuple[Callable[..., Any], Any, type]] = {
    "linear-probe": (train_linear_probe, LinearProbeConfig(refine_steps=2, max_iter=200), LinearProbe),
    "clip-adapter": (train_clip_adapter, ClipAdapterConfig(epochs=6, cached_views=2, lr=0.05), TrainedClipAdapter),
    "tip-adapter": (train_tip_adapter, TipAdapterConfig(augment_views=2, beta_steps=20, alpha_steps=5), TipAdapter),
    "tip-adapter-f": (
        train_tip_adapter_f,
        TipAdapterFConfig(augment_views=2, beta_steps=20, alpha_steps=5, epochs=6, batch_size=64, lr=1e-2),
        TipAdapter,
    ),
}


@pytest.fixture(scope="module")
def backbone():
    """The tiny CLIP with its packaged miniature-world weights (never changed: the encoder stays frozen)."""
    return load_backbone(BackboneSpec(TINY_MODEL, "mini"))


@pytest.fixture(scope="module")
def trained(backbone, mini_task) -> dict[str, Any]:
    return {name: train(backbone, mini_task, config, seed=1) for name, (train, config, _) in METHODS.items()}


@pytest.fixture(scope="module")
def validation(backbone, mini_task):
    return evaluation_features(backbone, source_data(mini_task).validation)


class Untouchable:
    """Stands in for the target's test split: any use of it fails the test."""

    def __getattribute__(self, name: str) -> Any:
        raise AssertionError(f"task.test.{name} was read")

    def __len__(self) -> int:
        raise AssertionError("len(task.test) was read")

    def __iter__(self):
        raise AssertionError("task.test was iterated")

    def __getitem__(self, index: Any) -> Any:
        raise AssertionError("task.test was indexed")


def state_of(result: Any) -> dict[str, torch.Tensor]:
    return result.state_dict()


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(METHODS))
def test_training_and_selection_never_read_the_target_test_split(backbone, mini_task, trained, name) -> None:
    train, config, _ = METHODS[name]
    poisoned = dataclasses.replace(mini_task, test=Untouchable())
    result = train(backbone, poisoned, config, seed=1)
    assert same_state(state_of(result), state_of(trained[name]))


@pytest.mark.parametrize("name", list(METHODS))
def test_the_same_seed_gives_bit_identical_weights(backbone, mini_task, trained, name) -> None:
    train, config, _ = METHODS[name]
    assert same_state(state_of(train(backbone, mini_task, config, seed=1)), state_of(trained[name]))


@pytest.mark.parametrize("name", ["clip-adapter", "tip-adapter-f"])
def test_another_seed_gives_other_weights(backbone, mini_task, trained, name) -> None:
    train, config, _ = METHODS[name]
    assert not same_state(state_of(train(backbone, mini_task, config, seed=2)), state_of(trained[name]))


@pytest.mark.parametrize("name", list(METHODS))
def test_a_saved_method_loads_back_to_identical_logits(tmp_path, trained, validation, name) -> None:
    result, loader = trained[name], METHODS[name][2]
    save_file(result.state_dict(), str(tmp_path / "state.safetensors"))
    loaded = loader.from_state_dict(load_file(str(tmp_path / "state.safetensors")))
    assert same_state(loaded.state_dict(), result.state_dict())
    assert torch.equal(loaded.logits(validation.features), result.logits(validation.features))
    assert loaded.n_trainable == result.n_trainable


@pytest.mark.parametrize("name", list(METHODS))
def test_predicting_images_is_logits_of_their_evaluation_features(backbone, mini_task, trained, name) -> None:
    images = source_data(mini_task).validation
    expected = trained[name].logits(image_features(backbone, images))
    assert torch.equal(trained[name].predict(backbone, images), expected)
    assert expected.shape == (len(images), len(mini_task.class_names))


@pytest.mark.parametrize("name", list(METHODS))
def test_logits_of_preprocessed_image_batches_are_logits_of_their_features(backbone, mini_task, trained, name) -> None:
    images = source_data(mini_task).validation.select(range(5))
    transform = eval_transform(backbone.image_size)
    pixels = torch.stack([transform(image) for image, _ in images])
    expected = trained[name].logits(image_features(backbone, images))
    torch.testing.assert_close(trained[name].batch_logits(backbone, pixels), expected, rtol=1e-4, atol=1e-3)


def test_a_best_checkpoint_keeps_the_earliest_epoch_of_the_best_validation_accuracy(
    backbone, mini_task, validation
) -> None:
    train, config, _ = METHODS["clip-adapter"]
    adapter = train(backbone, mini_task, dataclasses.replace(config, checkpoint="best", epochs=8), seed=1)
    scores = [h["select_accuracy"] for h in adapter.record["history"]]
    assert adapter.record["kept_epoch"] == scores.index(max(scores)) + 1
    assert accuracy(adapter.logits(validation.features), validation.labels) == max(scores)


def test_tip_adapter_f_keeps_the_keys_of_its_best_epoch_at_the_initial_alpha_and_beta(trained, validation) -> None:
    adapter, config = trained["tip-adapter-f"], METHODS["tip-adapter-f"][1]
    scores = [h["select_accuracy"] for h in adapter.record["history"]]
    assert adapter.record["kept_epoch"] == scores.index(max(scores)) + 1
    at_start = TipAdapter(adapter.classifier, adapter.keys, adapter.labels, config.init_alpha, config.init_beta, True)
    assert accuracy(at_start.logits(validation.features), validation.labels) == max(scores)


def test_trainable_parameters_are_counted_as_the_papers_do(backbone, mini_task, trained) -> None:
    d, c, shots = backbone.embed_dim, len(mini_task.class_names), len(source_data(mini_task).train)
    assert trained["linear-probe"].n_trainable == c * d + c
    assert trained["clip-adapter"].n_trainable == 2 * d * d // 4
    assert trained["tip-adapter"].n_trainable == 0
    assert trained["tip-adapter-f"].n_trainable == shots * d


def test_the_linear_probe_beats_zero_shot_on_source_validation(backbone, mini_task, trained, validation) -> None:
    classifier = zeroshot_classifier(backbone, mini_task.class_names)
    zero_shot = accuracy(LOGIT_SCALE * validation.features @ classifier.T, validation.labels)
    probe = trained["linear-probe"]
    assert accuracy(probe.logits(validation.features), validation.labels) > zero_shot
    assert probe.record["select_accuracy"] == accuracy(probe.logits(validation.features), validation.labels)
    assert probe.record["c"] in [c for step in probe.record["search"]["steps"] for c, _ in step["scores"]]


@pytest.mark.parametrize("name", ["clip-adapter", "tip-adapter-f"])
def test_training_lowers_the_loss(trained, name) -> None:
    losses = [h["loss"] for h in trained[name].record["history"]]
    assert losses[-1] < losses[0]


def test_the_clip_adapter_is_above_chance_on_source_validation(mini_task, trained, validation) -> None:
    adapter = trained["clip-adapter"]
    assert accuracy(adapter.logits(validation.features), validation.labels) > 2 * 100.0 / len(mini_task.class_names)


def test_the_tip_adapter_cache_recalls_its_own_shots(backbone, mini_task) -> None:
    # With keys from unaugmented images and a very sharp, heavy cache, each shot's own key decides its class
    # (the miniature sketches of different classes lie within 0.001 of each other in cosine).
    config = TipAdapterConfig(augment_views=1, init_alpha=1e4, init_beta=1e5, search=False)
    adapter = train_tip_adapter(backbone, mini_task, config, seed=1, augment=False)
    shots = evaluation_features(backbone, source_data(mini_task).train)
    assert accuracy(adapter.logits(shots.features), shots.labels) == 100.0
    assert (adapter.alpha, adapter.beta) == (1e4, 1e5)


def test_the_tip_adapter_search_keeps_its_best_validation_score(trained, validation) -> None:
    for name in ("tip-adapter", "tip-adapter-f"):
        adapter = trained[name]
        search = adapter.record["search"]
        assert search["select_accuracy"] == accuracy(adapter.logits(validation.features), validation.labels)
        assert search["candidates"] == 20 * 5


@pytest.mark.parametrize("name, plain", [
    ("clip-adapter", {"cached_views": 0}),
    ("tip-adapter-f", {"cached_training": False}),
])
def test_cached_features_train_exactly_like_encoding_every_step_without_augmentation(
    backbone, mini_task, name, plain
) -> None:
    train, config, _ = METHODS[name]
    config = dataclasses.replace(config, epochs=2)  # the uncached run encodes every batch: keep it short
    cached = train(backbone, mini_task, config, seed=3, augment=False)
    fresh = train(backbone, mini_task, dataclasses.replace(config, **plain), seed=3, augment=False)
    for key, tensor in state_of(cached).items():
        torch.testing.assert_close(tensor, state_of(fresh)[key], rtol=1e-4, atol=1e-5)
    losses = [h["loss"] for h in cached.record["history"]]
    assert losses == pytest.approx([h["loss"] for h in fresh.record["history"]], rel=1e-4)
