"""Learning a CoOp prompt: the feature cache, checkpoint selection, and reduction of the training loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from guidg.prompt_training import PromptConfig, train_prompt
from imagenet_dg.loading import LabeledImages

CONFIG = PromptConfig(n_ctx=4, lr=2e-2, batch_size=16, epochs=6, schedule_steps=100, eval_every=2, cached_views=2)


def pooled(pools: dict[str, LabeledImages]) -> LabeledImages:
    return LabeledImages.concat(list(pools.values()))


def test_cached_features_train_exactly_like_encoding_every_step_without_augmentation(mini_task, tiny_backbone) -> None:
    train, select = pooled(mini_task.expert), pooled(mini_task.guide)
    cached = train_prompt(tiny_backbone, mini_task.class_names, train, select, CONFIG, seed=3, method="t", augment=False)
    plain_config = dataclasses.replace(CONFIG, cached_views=0)
    plain = train_prompt(tiny_backbone, mini_task.class_names, train, select, plain_config, seed=3, method="t", augment=False)
    torch.testing.assert_close(cached.context["ctx"], plain.context["ctx"], rtol=1e-4, atol=1e-5)
    assert [h["loss"] for h in cached.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-4)


def test_prompt_learning_reduces_the_training_loss(mini_task, tiny_backbone) -> None:
    result = train_prompt(
        tiny_backbone, mini_task.class_names, pooled(mini_task.expert), None, CONFIG, seed=1, method="t"
    )
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.n_trainable == 4 * tiny_backbone.text.width


def test_the_returned_prompt_is_the_one_the_best_evaluated_epoch_produced(mini_task, tiny_backbone, monkeypatch) -> None:
    from guidg import prompt_training

    scores = iter([40.0, 70.0, 70.0])  # epochs 2, 4 and 6 are evaluated: 4 is the first best
    monkeypatch.setattr(prompt_training, "_accuracy", lambda *args: next(scores))
    train = pooled(mini_task.expert)
    result = train_prompt(tiny_backbone, mini_task.class_names, train, pooled(mini_task.guide), CONFIG, seed=1,
                          method="t")
    assert (result.best_epoch, result.best_accuracy) == (4, 70.0)
    assert [h.get("select_accuracy") for h in result.history] == [None, 40.0, None, 70.0, None, 70.0]
    # the same training stopped after epoch 4 (the schedule and every draw are the same up to there)
    until_then = train_prompt(tiny_backbone, mini_task.class_names, train, None, dataclasses.replace(CONFIG, epochs=4),
                              seed=1, method="t")
    assert torch.equal(result.context["ctx"], until_then.context["ctx"])
    assert torch.equal(result.text_features, until_then.text_features)
    last = train_prompt(tiny_backbone, mini_task.class_names, train, None, CONFIG, seed=1, method="t")
    assert not torch.equal(result.context["ctx"], last.context["ctx"])  # so the check above can fail


def test_same_seed_same_prompt_other_seed_other_prompt(mini_task, tiny_backbone) -> None:
    train = pooled(mini_task.expert)
    runs = [train_prompt(tiny_backbone, mini_task.class_names, train, None, CONFIG, seed=s, method="t") for s in (1, 1, 2)]
    assert torch.equal(runs[0].context["ctx"], runs[1].context["ctx"])
    assert not torch.equal(runs[0].context["ctx"], runs[2].context["ctx"])


def test_text_features_are_normalised_per_class(mini_task, tiny_backbone) -> None:
    result = train_prompt(tiny_backbone, mini_task.class_names, pooled(mini_task.expert), None, CONFIG, seed=1, method="t")
    assert result.text_features.shape == (len(mini_task.class_names), tiny_backbone.embed_dim)
    torch.testing.assert_close(result.text_features.norm(dim=-1), torch.ones(len(mini_task.class_names)))


def test_prefix_sharing_is_a_computation_choice_not_a_different_result(mini_task, tiny_backbone) -> None:
    train = pooled(mini_task.expert)
    shared = train_prompt(tiny_backbone, mini_task.class_names, train, None, CONFIG, seed=1, method="t")
    full = train_prompt(
        tiny_backbone, mini_task.class_names, train, None, dataclasses.replace(CONFIG, share_prefix=False),
        seed=1, method="t",
    )
    torch.testing.assert_close(shared.context["ctx"], full.context["ctx"], rtol=1e-3, atol=1e-4)


def test_the_text_encoding_and_image_pipeline_are_recorded(mini_task, tiny_backbone, tmp_path) -> None:
    from guidg.image_cache import CacheSettings, using_image_cache

    train = pooled(mini_task.expert)
    config = dataclasses.replace(CONFIG, epochs=1)
    plain = train_prompt(tiny_backbone, mini_task.class_names, train, None, config, seed=1, method="t")
    assert plain.text_encoding == {"text_encoding": "shared-prefix", "chosen_by": "rule (cpu)"}
    assert plain.pipeline["decoded_image_cache"] is None
    unshared = train_prompt(
        tiny_backbone, mini_task.class_names, train, None, dataclasses.replace(config, share_prefix=False),
        seed=1, method="t",
    )
    assert unshared.text_encoding["text_encoding"] == "cut"
    with using_image_cache(CacheSettings(tmp_path / "cache", place="runs")):
        cached = train_prompt(tiny_backbone, mini_task.class_names, train, None, config, seed=1, method="t")
    assert cached.pipeline["decoded_image_cache"]["place"] == "runs"
    assert any((tmp_path / "cache").iterdir())


def test_cached_and_uncached_evaluation_transformed_training_are_identical(mini_task, tiny_backbone, tmp_path) -> None:
    from guidg.image_cache import CacheSettings, using_image_cache

    train, select = pooled(mini_task.expert), pooled(mini_task.guide)
    config = dataclasses.replace(CONFIG, epochs=2)
    files = train_prompt(tiny_backbone, mini_task.class_names, train, select, config, seed=2, method="t", augment=False)
    with using_image_cache(CacheSettings(tmp_path / "cache")):
        cached = train_prompt(
            tiny_backbone, mini_task.class_names, train, select, config, seed=2, method="t", augment=False
        )
    assert torch.equal(files.context["ctx"], cached.context["ctx"])
    assert files.best_accuracy == cached.best_accuracy
