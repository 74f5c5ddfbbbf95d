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
