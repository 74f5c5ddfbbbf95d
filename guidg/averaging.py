"""Weight averaging of a fine-tuned model: CLIPood's Beta moving average and WiSE-FT interpolation.

Beta moving average (BMA): the weights theta_0 (pretrained), theta_1, ..., theta_T seen along training are
averaged with weights ``alpha_t = BetaPDF((t + 0.5) / (T + 1); beta, beta)``, so with ``beta < 1`` both the
start and the end of training count most. WiSE-FT: a straight line between the pretrained and the
fine-tuned weights (when it is applied, once or after every epoch, is the base's setting ``wise_ft.mode``:
:mod:`guidg.bases`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from imagenet_dg.errors import ImageNetDGError


class AveragingError(ImageNetDGError, ValueError):
    """Weights to average do not fit together, or an average was used beyond what it was set up for."""


def beta_weight(t: int, total_steps: int, beta: float) -> float:
    """The BMA weight of step ``t`` in ``0..total_steps``: ``BetaPDF((t + 0.5) / (T + 1); beta, beta)``.

    ``T`` is ``total_steps``; ``beta`` must be positive. Computed with :func:`math.lgamma`.
    """
    if total_steps < 0 or not 0 <= t <= total_steps:
        raise AveragingError(f"beta_weight needs 0 <= t <= total_steps; got t={t}, total_steps={total_steps}")
    if not beta > 0:
        raise AveragingError(f"beta_weight needs beta > 0; got {beta}")
    x = (t + 0.5) / (total_steps + 1)
    log_beta_function = 2.0 * math.lgamma(beta) - math.lgamma(2.0 * beta)
    return math.exp((beta - 1.0) * (math.log(x) + math.log1p(-x)) - log_beta_function)


class BetaMovingAverage:
    """The Beta moving average of a module's parameters; buffers follow the live module.

    Built from the pretrained module (step 0, weight ``alpha_0``); :meth:`update` is then called with the
    live module after each of the ``total_steps`` optimisation steps t = 1..T and applies
    ``avg <- (avg + (alpha_t / S_{t-1}) theta_t) / (1 + alpha_t / S_{t-1})``, ``S_t = S_{t-1} + alpha_t``,
    so that after step t the average is ``sum_{s <= t} alpha_s theta_s / sum_{s <= t} alpha_s``.

    The average lives in a copy of the module (:attr:`module`), kept in the module's dtype, on ``device``
    if given. To average only part of a model, pass that part (for instance the image encoder).
    :meth:`state_dict` / :meth:`load_state_dict` carry everything needed to resume to the identical result.
    """

    def __init__(
        self,
        model: nn.Module,
        total_steps: int,
        beta: float = 0.1,
        device: torch.device | str | None = None,
    ) -> None:
        if total_steps < 1:
            raise AveragingError(f"BetaMovingAverage needs total_steps >= 1; got {total_steps}")
        beta_weight(0, total_steps, beta)  # validates beta
        self.total_steps = total_steps
        self.beta = float(beta)
        self._parameter_names = tuple(name for name, _ in model.named_parameters())
        self._blend_weight = 0.0
        self._averaged = AveragedModel(model, device=device, multi_avg_fn=self._blend)
        self._averaged.requires_grad_(False)
        self._averaged.update_parameters(model)  # first call copies: the average starts at theta_0
        self._step = 0
        self._weight_sum = beta_weight(0, total_steps, self.beta)

    @property
    def module(self) -> nn.Module:
        """The averaged module (same architecture as the one given)."""
        return self._averaged.module

    @property
    def step(self) -> int:
        """Number of updates applied so far (0 right after construction)."""
        return self._step

    @property
    def weight_sum(self) -> float:
        """``S_t = alpha_0 + ... + alpha_t`` for the current step t."""
        return self._weight_sum

    def update(self, model: nn.Module) -> None:
        """Fold the live ``model``'s parameters in as the next step's theta_t and copy its buffers."""
        if self._step >= self.total_steps:
            raise AveragingError(
                f"BetaMovingAverage was set up for {self.total_steps} steps and has had them all; "
                "build it with the number of optimisation steps the training makes"
            )
        names = tuple(name for name, _ in model.named_parameters())
        if names != self._parameter_names:
            raise AveragingError(
                "BetaMovingAverage.update got a module whose parameters differ from the averaged one's: "
                f"{_describe_key_mismatch(self._parameter_names, names, 'averaged', 'given')}"
            )
        t = self._step + 1
        alpha = beta_weight(t, self.total_steps, self.beta)
        # (avg + r theta) / (1 + r) with r = alpha / S_{t-1} is a step of alpha / S_t from avg towards theta
        self._blend_weight = alpha / (self._weight_sum + alpha)
        self._averaged.update_parameters(model)
        self._weight_sum += alpha
        self._step = t

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the averaged weights, the step, ``S`` and the schedule."""
        return {
            "averaged": self._averaged.state_dict(),
            "step": torch.tensor(self._step, dtype=torch.int64),
            "weight_sum": torch.tensor(self._weight_sum, dtype=torch.float64),
            "total_steps": torch.tensor(self.total_steps, dtype=torch.int64),
            "beta": torch.tensor(self.beta, dtype=torch.float64),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; its schedule (total steps, beta) must be this average's."""
        expected_keys = {"averaged", "step", "weight_sum", "total_steps", "beta"}
        if set(state) != expected_keys:
            raise AveragingError(
                f"not a BetaMovingAverage state: expected keys {sorted(expected_keys)}, found {sorted(state)}"
            )
        total_steps, beta = int(state["total_steps"]), float(state["beta"])
        if (total_steps, beta) != (self.total_steps, self.beta):
            raise AveragingError(
                f"the saved Beta moving average ran over {total_steps} steps with beta {beta}, this one over "
                f"{self.total_steps} steps with beta {self.beta}; build it with the saved schedule to resume"
            )
        self._averaged.load_state_dict(state["averaged"])
        self._step = int(state["step"])
        self._weight_sum = float(state["weight_sum"])

    def _blend(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        for avg, theta in zip(averaged, current, strict=True):
            avg.lerp_(theta, self._blend_weight)


def wise_ft(
    pretrained: Mapping[str, Tensor], finetuned: Mapping[str, Tensor], alpha: float = 0.5
) -> dict[str, Tensor]:
    """WiSE-FT: ``(1 - alpha) * pretrained + alpha * finetuned`` for every floating-point tensor.

    Integer and boolean tensors (counters, masks) are taken from ``finetuned``. The keys of the two state
    dicts must be the same and each pair of tensors of one shape. Results have ``finetuned``'s dtype and
    device and are computed in at least float32; ``alpha`` 0 gives ``pretrained``, 1 gives ``finetuned``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise AveragingError(f"wise_ft needs 0 <= alpha <= 1; got {alpha}")
    if set(pretrained) != set(finetuned):
        raise AveragingError(
            "wise_ft needs the pretrained and fine-tuned state dicts to have the same keys: "
            f"{_describe_key_mismatch(tuple(pretrained), tuple(finetuned), 'pretrained', 'fine-tuned')}"
        )
    mixed: dict[str, Tensor] = {}
    for key, tuned in finetuned.items():
        start = pretrained[key]
        if start.shape != tuned.shape:
            raise AveragingError(
                f"wise_ft: {key!r} has shape {tuple(start.shape)} in the pretrained weights but "
                f"{tuple(tuned.shape)} in the fine-tuned ones"
            )
        if not tuned.is_floating_point():
            mixed[key] = tuned.detach().clone()
            continue
        dtype = torch.promote_types(tuned.dtype, torch.float32)
        start = start.detach().to(device=tuned.device, dtype=dtype)
        blend = (1.0 - alpha) * start + alpha * tuned.detach().to(dtype)
        mixed[key] = blend.to(tuned.dtype)
    return mixed


def _describe_key_mismatch(
    first: tuple[str, ...], second: tuple[str, ...], first_name: str, second_name: str
) -> str:
    only_first = sorted(set(first) - set(second))
    only_second = sorted(set(second) - set(first))
    if not only_first and not only_second:
        return "the same names in a different order"
    return (
        f"only in the {first_name} one: {only_first or 'none'}; "
        f"only in the {second_name} one: {only_second or 'none'}"
    )
