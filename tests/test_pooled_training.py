"""Training on the pooled sources: seeded epochs that are permutations of the pooled images, steps independent of
each other, and the task's shots."""

from __future__ import annotations

from dataclasses import replace

import pytest

from guidg.pooled_training import (
    PooledEpochSampler,
    PooledTrainingError,
    epoch_steps,
    source_pools,
    task_shots,
)

SIZES = [5, 3, 4]


def _pooled(item):
    return sum(SIZES[: item.domain]) + item.index


def test_each_epoch_visits_every_pooled_image_once_with_a_smaller_last_batch():
    sampler = PooledEpochSampler(SIZES, 5, seed=1, total=6, purpose="t", drop_last=False)

    assert sampler.steps_per_epoch == 3
    for epoch in range(2):
        batches = [sampler.items(step) for step in range(3 * epoch, 3 * epoch + 3)]
        assert [len(b) for b in batches] == [5, 5, 2]
        assert sorted(_pooled(i) for b in batches for i in b) == list(range(12))


def test_with_drop_last_the_incomplete_batch_is_left_out_and_epochs_differ():
    sampler = PooledEpochSampler(SIZES, 5, seed=1, total=4, purpose="t", drop_last=True)
    first = [_pooled(i) for s in (0, 1) for i in sampler.items(s)]
    second = [_pooled(i) for s in (2, 3) for i in sampler.items(s)]

    assert sampler.steps_per_epoch == 2 == epoch_steps(SIZES, 5, drop_last=True)
    assert len(set(first)) == 10 and len(set(second)) == 10 and first != second


def test_a_step_is_the_same_whatever_came_before_it():
    whole = list(PooledEpochSampler(SIZES, 4, seed=3, total=9, purpose="t", drop_last=False))
    resumed = list(PooledEpochSampler(SIZES, 4, seed=3, total=9, purpose="t", drop_last=False, start=5))

    assert resumed == whole[5:]
    assert whole != list(PooledEpochSampler(SIZES, 4, seed=4, total=9, purpose="t", drop_last=False))


def test_augmentation_seeds_differ_per_slot_and_step():
    sampler = PooledEpochSampler(SIZES, 4, seed=3, total=9, purpose="t", drop_last=False)
    seeds = [i.augment_seed for s in range(6) for i in sampler.items(s)]

    assert len(set(seeds)) == len(seeds)


def test_fewer_images_than_one_dropped_batch_is_refused():
    with pytest.raises(PooledTrainingError, match="fewer than one batch"):
        PooledEpochSampler([2, 1], 4, seed=1, total=1, purpose="t", drop_last=True)


def test_the_shots_of_a_fewshot_task_and_none_under_full(mini_task):
    assert task_shots(mini_task) == 16
    assert task_shots(replace(mini_task, protocol="full")) is None
    assert [len(p) for p in source_pools(mini_task)] == [len(mini_task.expert[s]) for s in mini_task.sources]

