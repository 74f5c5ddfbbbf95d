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
