"""Learning-rate schedule shared by the training loops."""

from __future__ import annotations

import math
from collections.abc import Callable


def cosine_lambda(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Factor of the base learning rate at a step: linear warmup, then cosine from 1 to 0 over the rest.

    Past ``total_steps`` the factor stays 0. For ``torch.optim.lr_scheduler.LambdaLR``.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def constant_warmup_cosine_lambda(epochs: int, warmup_epochs: int, warmup_factor: float) -> Callable[[int], float]:
    """Factor of the base learning rate in an epoch (0-based; the schedule steps once per epoch): ``warmup_factor``
    for the first ``warmup_epochs`` epochs, then cosine ``0.5 (1 + cos(pi (e - warmup_epochs) / epochs))``.

    This is the schedule of the CoOp / CoCoOp reference code (Dassl's cosine over ``epochs`` with a constant
    warm-up whose epochs are recounted): the cosine starts at 1 after the warm-up and, counted over all
    ``epochs``, has not reached 0 by the last one. For ``torch.optim.lr_scheduler.LambdaLR``.
    """

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return warmup_factor
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch - warmup_epochs) / epochs)))

    return factor
