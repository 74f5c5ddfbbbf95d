"""Training CoCoOp on the miniature benchmark: it learns, selects only on source data, repeats exactly on a CPU,
follows the reference schedule, and saves and loads its state."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from guidg.backbone import TINY_MODEL, BackboneSpec, load_backbone
from guidg.cocoop import CoCoOpConfig, build_learner, load_cocoop, train_cocoop
from guidg.evaluation import accuracy, image_features
from guidg.model_selection import pooled_validation_images
from guidg.schedule import constant_warmup_cosine_lambda
from imagenet_dg.loading import LabeledImages

QUICK = CoCoOpConfig(batch_size=8, epochs=3, eval_every=1, cached_views=3)


def validation_images(task) -> LabeledImages:
    return pooled_validation_images(task)


class Untouchable:
    """A stand-in for the target's test split that fails the test on any use."""

    def __getattr__(self, name: str):
        raise AssertionError(f"task.test.{name} was read")

    def __len__(self) -> int:
        raise AssertionError("len(task.test) was taken")

    def __iter__(self):
        raise AssertionError("task.test was iterated")


@pytest.fixture(scope="module")
def mini_weights():
    """The tiny CLIP pretrained on the miniature world (frozen by CoCoOp, so one copy serves every test)."""
    return load_backbone(BackboneSpec(TINY_MODEL, "mini"))


def test_training_classifies_source_validation_well_above_chance(mini_task, mini_weights) -> None:
    # The world weights already classify the sources' photographs and sketches well, so three epochs on random
    # crops do not lower the crop loss much; that CoCoOp learns is the next test's (images it first gets wrong).
    result = train_cocoop(mini_weights, mini_task, QUICK, seed=1)
    assert len(result.history) == QUICK.epochs and all(math.isfinite(h["loss"]) for h in result.history)
    validation = validation_images(mini_task)
    score = accuracy(result.predict(validation), torch.tensor(validation.labels))
    chance = 100.0 / len(mini_task.class_names)
    assert score >= 2 * chance
    assert score == pytest.approx(result.best_accuracy)


def test_it_fits_a_few_training_images_it_first_gets_wrong(mini_task, mini_weights) -> None:
    source = mini_task.sources[0]
    images = mini_task.expert[source]
    two_per_class = [i for c in range(len(mini_task.class_names)) for i in
                     [k for k, label in enumerate(images.labels) if label == c][:2]]
    few = images.select(two_per_class)
    task = dataclasses.replace(mini_task, sources=(source,), expert={source: few}, guide={source: few})
    config = CoCoOpConfig(epochs=10, warmup_epochs=0, cached_views=1, crop_scale=(1.0, 1.0), flip=False)
    features, labels = image_features(mini_weights, few), torch.tensor(few.labels)
    with torch.no_grad():
        before = accuracy(build_learner(mini_weights, mini_task.class_names, config, seed=1)(features), labels)
    result = train_cocoop(mini_weights, task, config, seed=1)
    assert before < 100.0
    assert accuracy(result.logits(features), labels) == 100.0


def test_the_kept_epoch_is_the_first_best_one_on_source_validation(mini_task, tiny_backbone) -> None:
    result = train_cocoop(tiny_backbone, mini_task, QUICK, seed=2)
    evaluated = {h["epoch"]: h["select_accuracy"] for h in result.history}
    assert sorted(evaluated) == [1, 2, 3]
    assert result.best_accuracy == max(evaluated.values())
    assert result.best_epoch == min(e for e, a in evaluated.items() if a == result.best_accuracy)
    validation = validation_images(mini_task)
    score = accuracy(result.predict(validation), torch.tensor(validation.labels))
    assert score == pytest.approx(result.best_accuracy)


def test_selection_every_few_epochs_and_after_the_last(mini_task, tiny_backbone) -> None:
    config = dataclasses.replace(QUICK, epochs=5, eval_every=2, cached_views=1, warmup_epochs=0)
    result = train_cocoop(tiny_backbone, mini_task, config, seed=1)
    assert [h["epoch"] for h in result.history if "select_accuracy" in h] == [2, 4, 5]


def test_nothing_reads_the_target_test_split(mini_task, tiny_backbone) -> None:
    poisoned = dataclasses.replace(mini_task, test=Untouchable())
    result = train_cocoop(tiny_backbone, poisoned, dataclasses.replace(QUICK, epochs=2), seed=1)
    assert result.best_accuracy is not None


def test_without_validation_images_the_last_epoch_is_kept(mini_task, tiny_backbone) -> None:
    empty = LabeledImages(paths=(), labels=(), domains=())
    task = dataclasses.replace(mini_task, guide={d: empty for d in mini_task.sources})
    config = dataclasses.replace(QUICK, epochs=2)
    result = train_cocoop(tiny_backbone, task, config, seed=1)
    assert result.best_accuracy is None and result.best_epoch == 2
    longer = train_cocoop(tiny_backbone, task, dataclasses.replace(config, epochs=3), seed=1)
    assert not torch.equal(result.state_dict()["ctx"], longer.state_dict()["ctx"])


def test_two_cpu_runs_with_one_seed_are_identical_and_another_seed_differs(mini_task, tiny_backbone) -> None:
    config = dataclasses.replace(QUICK, epochs=2)
    first, again, other = (train_cocoop(tiny_backbone, mini_task, config, seed=s) for s in (1, 1, 2))
    assert first.state_dict().keys() == again.state_dict().keys()
    assert all(torch.equal(first.state_dict()[k], again.state_dict()[k]) for k in first.state_dict())
    assert first.history == again.history
    assert not torch.equal(first.state_dict()["meta_net.linear2.weight"], other.state_dict()["meta_net.linear2.weight"])


def test_a_saved_state_loads_back_to_identical_logits(mini_task, tiny_backbone, tmp_path) -> None:
    result = train_cocoop(tiny_backbone, mini_task, dataclasses.replace(QUICK, epochs=2), seed=1)
    path = tmp_path / "cocoop.safetensors"
    save_file(result.state_dict(), path)
    loaded = load_cocoop(tiny_backbone, mini_task.class_names, QUICK, load_file(path))
    features = image_features(tiny_backbone, validation_images(mini_task))
    assert torch.equal(loaded.logits(features), result.logits(features))
    assert loaded.n_trainable == result.n_trainable


def test_the_learning_rate_of_each_epoch_follows_the_reference_schedule(mini_task, tiny_backbone) -> None:
    config = dataclasses.replace(QUICK, epochs=4, warmup_epochs=1, warmup_lr=1e-5, lr=0.002, cached_views=1)
    result = train_cocoop(tiny_backbone, mini_task, config, seed=1)
    expected = [1e-5] + [0.002 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 4)) for e in (1, 2, 3)]
    assert [h["lr"] for h in result.history] == pytest.approx(expected, rel=1e-12)


def test_the_schedule_is_constant_in_the_warm_up_then_a_cosine_over_all_epochs() -> None:
    factor = constant_warmup_cosine_lambda(epochs=10, warmup_epochs=1, warmup_factor=0.005)
    assert factor(0) == 0.005
    assert factor(1) == 1.0
    assert factor(6) == pytest.approx(0.5)  # five epochs into a ten-epoch cosine
    assert factor(9) == pytest.approx((1 + math.cos(0.8 * math.pi)) / 2) and factor(9) > 0


def test_the_record_names_the_text_encoding_and_counts_what_is_trained(mini_task, tiny_backbone) -> None:
    result = train_cocoop(tiny_backbone, mini_task, dataclasses.replace(QUICK, epochs=1), seed=1)
    record = result.record()
    assert record["text_encoding"] == {"text_encoding": "shared-prefix", "chosen_by": "rule (cpu)"}
    width, dim = tiny_backbone.text.width, tiny_backbone.embed_dim
    assert record["n_trainable"] == 4 * width + dim * (dim // 16) + dim // 16 + (dim // 16) * width + width
    assert record["best_epoch"] == 1 and len(record["history"]) == 1


def test_a_name_before_the_context_runs_the_cut_prompts_and_the_record_says_why(mini_task, tiny_backbone) -> None:
    config = dataclasses.replace(QUICK, epochs=1, class_position="front")
    result = train_cocoop(tiny_backbone, mini_task, config, seed=1)
    assert result.record()["text_encoding"] == {
        "text_encoding": "cut", "chosen_by": "rule (prompts cannot share a prefix)"
    }
