"""EpochSteps: an epoch's optimiser steps, each loss checked for being finite one step late, the mean recorded."""

from __future__ import annotations

import pytest
import torch

from guidg.divergence import EpochSteps, TrainingDivergedError


def _model_and_optimizer() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    return weight, torch.optim.SGD([weight], lr=0.1)


def test_the_steps_optimise_count_and_give_the_mean_loss() -> None:
    weight, optimizer = _model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    steps = EpochSteps("test", step=7)
    losses = []
    for _ in range(3):
        loss = (weight ** 2).sum()
        losses.append(float(loss.detach()))
        steps.take(loss, optimizer, scheduler)
    assert steps.step == 10
    assert steps.finish() == pytest.approx(sum(losses) / 3)
    # SGD on w^2 at lr 0.1, 0.05, 0.025: w is scaled by (1 - 2 lr) each step.
    expected = torch.tensor([1.0, -2.0]) * 0.8 * 0.9 * 0.95
    torch.testing.assert_close(weight.detach(), expected)


def test_a_non_finite_loss_is_found_at_the_next_step_naming_its_own() -> None:
    weight, optimizer = _model_and_optimizer()
    steps = EpochSteps("test", step=4)
    steps.take((weight ** 2).sum() * float("nan"), optimizer)
    with pytest.raises(TrainingDivergedError, match="test: the training loss is nan at step 4"):
        steps.take((weight ** 2).sum(), optimizer)


def test_the_last_loss_is_checked_when_the_epoch_ends() -> None:
    weight, optimizer = _model_and_optimizer()
    steps = EpochSteps("test", step=0)
    steps.take((weight ** 2).sum(), optimizer)
    steps.take((weight ** 2).sum() * float("inf"), optimizer)
    with pytest.raises(TrainingDivergedError, match="at step 1"):
        steps.finish()


def test_an_epoch_without_steps_has_no_loss() -> None:
    steps = EpochSteps("test", step=3)
    assert steps.finish() != steps.finish()  # NaN
    assert steps.step == 3
