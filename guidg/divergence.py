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
