"""Stopping a run whose loss is no longer a number."""

from __future__ import annotations

import torch

from imagenet_dg.errors import ImageNetDGError


class TrainingDivergedError(ImageNetDGError):
    """The training loss became NaN or infinite."""


def check_finite(loss: torch.Tensor, step: int, method: str) -> None:
    """Raise :class:`TrainingDivergedError` naming the step and the method when ``loss`` is not finite."""
    if not bool(torch.isfinite(loss).all()):
        raise TrainingDivergedError(
            f"{method}: the training loss is {loss.detach().float().cpu().tolist()} at step {step}; "
            "lower the learning rate or check the data"
        )


class EpochSteps:
    """The optimiser steps of one epoch and their losses. Each step's loss is checked for being finite one step
    late (:func:`check_finite`), so the device never waits for the host; :meth:`finish` checks the last one.

    ``step`` counts the run's steps: give the count before the epoch, read it after.
    """

    def __init__(self, method: str, step: int) -> None:
        self.method = method
        self.step = step
        self._losses: list[torch.Tensor] = []

    def take(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        """One step on ``loss``: the previous loss checked, gradients cleared, backward, the optimiser's step and
        the scheduler's (when given one stepped per step)."""
        if self._losses:
            check_finite(self._losses[-1], self.step - 1, self.method)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        self.step += 1
        self._losses.append(loss.detach())

    def finish(self) -> float:
        """The epoch's mean loss (NaN for an epoch of no step), after checking its last loss."""
        if not self._losses:
            return float("nan")
        check_finite(self._losses[-1], self.step - 1, self.method)
        return float(torch.stack(self._losses).mean())


class NonFiniteOutputError(TrainingDivergedError):
    """A model's features or logits hold NaN or infinite values, so its predictions would mean nothing."""


def check_finite_outputs(values: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` unchanged when every element is finite; raises :class:`NonFiniteOutputError` naming ``what``
    (e.g. "image features of the test split") and how many values are not finite otherwise.

    Scoring such outputs would record an accuracy near chance as if it were a result; a run stops instead.
    """
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteOutputError(
            f"the {what} hold {bad} NaN or infinite value(s) of {values.numel()}; the model's weights are not "
            "usable (a damaged checkpoint, or a diverged training): check the --pretrained weights, lower the "
            "learning rate, or use another precision"
        )
    return values
