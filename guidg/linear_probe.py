"""The linear probe: multinomial logistic regression on frozen CLIP image features.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021 (CLIP,
appendix A.3), with the few-shot protocol of CoOp's ``lpclip/linear_probe.py``
(https://github.com/KaiyangZhou/CoOp): L-BFGS with an L2 penalty on the weights (not the bias), at most 1000
iterations, one feature per training image under the evaluation transform, and the inverse penalty strength C
chosen on validation data by a sweep over 1e6, 1e4, ..., 1e-6 followed by 8 halvings in log space
(:func:`guidg.model_selection.log_bisection`). The validation data are the sources' validation images.

The reference fits scikit-learn's ``LogisticRegression(solver="lbfgs", penalty="l2", C=C, max_iter=1000)``,
whose objective is ``C * sum_i CE_i + ||W||^2 / 2``; this one minimises the same divided by ``C * N``
(``mean_i CE_i + ||W||^2 / (2 C N)``, as scikit-learn does internally), with the same minimiser, in
``torch.optim.LBFGS`` from zero weights. The features are the project's L2-normalised ones (the reference
fits unnormalised features; C is searched either way). Trained: the C x D weights and C biases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from guidg.backbone import Backbone
from guidg.divergence import check_finite_outputs
from guidg.evaluation import accuracy
from guidg.feature_training import (
    FeatureMethodError,
    FeaturePredictor,
    LabeledFeatures,
    PhaseClock,
    evaluation_features,
    require_tensors,
    source_data,
    to_cpu_state,
)
from guidg.model_selection import log_bisection
from guidg.settings import Each, Section, at_least, positive, setting
from imagenet_dg.loading import TaskData

NAME = "linear-probe"

C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
"""CoOp's first sweep of the inverse penalty strength C, in its order (CLIP's range 1e-6 .. 1e6)."""


@dataclass(frozen=True)
class LinearProbeConfig(Section):
    """The linear probe's settings, with the defaults of CoOp's ``lpclip/linear_probe.py``."""

    NAME: ClassVar[str] = "linear_probe"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"c_grid": (1e2, 1.0, 1e-2), "refine_steps": 1, "max_iter": 50},
        "mini": {"refine_steps": 2, "max_iter": 200},
    }

    c_grid: tuple[float, ...] = setting(
        C_GRID, Each(positive()), "inverse L2 strengths C of the first sweep, in the order tried (earlier wins ties)")
    refine_steps: int = setting(8, at_least(0), "halvings of the decade around the sweep's best C (--num_step)")
    max_iter: int = setting(1000, at_least(1), "L-BFGS iterations of one fit at most")
    tolerance: float = setting(
        1e-4, positive(), "a fit stops once no gradient entry of the averaged objective exceeds this (tol)")
    history_size: int = setting(10, at_least(1), "correction pairs L-BFGS keeps (scipy's default)")


@dataclass(frozen=True)
class LogisticFit:
    """One fit of :func:`fit_logistic_regression`."""

    weight: Tensor
    """(C, D)."""
    bias: Tensor
    """(C,)."""
    iterations: int
    objective: float
    max_gradient: float
    """Largest absolute entry of the objective's gradient at the returned weights."""


def logistic_objective(weight: Tensor, bias: Tensor, features: Tensor, labels: Tensor, c: float) -> Tensor:
    """``mean_i CE(f_i W^T + b, y_i) + ||W||^2 / (2 C N)``: scikit-learn's L2 logistic objective divided by C N."""
    logits = features @ weight.T + bias
    return F.cross_entropy(logits, labels) + weight.square().sum() / (2.0 * c * len(labels))


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    c: float,
    *,
    max_iter: int = 1000,
    tolerance: float = 1e-4,
    history_size: int = 10,
) -> LogisticFit:
    """Minimise :func:`logistic_objective` over W (C, D) and b (C,) from zeros with L-BFGS (strong Wolfe line
    search), stopping after ``max_iter`` iterations, once the largest gradient entry is at most ``tolerance``,
    or once the objective no longer changes in float32 (torch's ``tolerance_change``, 1e-9).

    Deterministic on CPU: no random draw, a fixed order of operations.
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],) or len(labels) == 0:
        raise FeatureMethodError(
            f"logistic regression needs features (N >= 1, D) and labels (N,); got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    features = features.float()
    weight = torch.zeros(num_classes, features.shape[1], device=features.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance, history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = logistic_objective(weight, bias, features, labels, c)
        loss.backward()
        return loss

    optimizer.step(closure)
    iterations = int(optimizer.state[optimizer.param_groups[0]["params"][0]].get("n_iter", 0))
    loss = closure()
    max_gradient = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    return LogisticFit(weight.detach(), bias.detach(), iterations, float(loss.detach()), max_gradient)


@dataclass
class LinearProbe(FeaturePredictor):
    """A trained linear probe: logits ``f W^T + b`` of normalised image features f."""

    weight: Tensor
    """(C, D) float32, CPU."""
    bias: Tensor
    """(C,) float32, CPU."""
    record: dict[str, Any] = field(default_factory=dict)
    """The chosen C, every C's validation accuracy, the fit's iterations, phase seconds."""

    name = NAME

    @property
    def n_trainable(self) -> int:
        """C x D weights + C biases."""
        return self.weight.numel() + self.bias.numel()

    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of normalised image features (N, D)."""
        weight, bias = self.weight.to(features.device), self.bias.to(features.device)
        return check_finite_outputs(features.float() @ weight.T + bias, "logits")

    def state_dict(self) -> dict[str, Tensor]:
        """``weight`` and ``bias``, CPU tensors (safetensors-saveable)."""
        return to_cpu_state({"weight": self.weight, "bias": self.bias})

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], record: dict[str, Any] | None = None) -> LinearProbe:
        """The probe saved by :meth:`state_dict`."""
        require_tensors(state, ("weight", "bias"), NAME)
        weight, bias = state["weight"].float(), state["bias"].float()
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise FeatureMethodError(
                f"a {NAME} state needs weight (C, D) and bias (C,); got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        return cls(weight, bias, dict(record or {}))


def train_linear_probe(
    backbone: Backbone, task: TaskData, config: LinearProbeConfig, *, seed: int, num_workers: int = 0
) -> LinearProbe:
    """Fit the probe on the sources' training shots, C chosen on the sources' validation images.

    Nothing is drawn at random (evaluation transform, zero initialisation), so ``seed`` changes nothing; it is
    recorded. ``task.test`` is never read.
    """
    data = source_data(task)
    if len(data.validation) == 0:
        raise FeatureMethodError(
            f"task {task.name}: the {NAME} chooses its penalty on the sources' validation images, and there are none"
        )
    clock = PhaseClock(backbone.device)
    with clock.phase("features"):
        train = evaluation_features(backbone, data.train, num_workers)
        validation = evaluation_features(backbone, data.validation, num_workers)
    num_classes = len(task.class_names)
    fits: dict[float, tuple[LogisticFit, float]] = {}

    def fitted(c: float) -> tuple[LogisticFit, float]:
        # The bisection revisits the winning end of each step; a fit is a pure function of C, so keep it.
        if c not in fits:
            fit = fit_logistic_regression(
                train.features, train.labels, num_classes, c, max_iter=config.max_iter, tolerance=config.tolerance,
                history_size=config.history_size,
            )
            fits[c] = (fit, _accuracy(fit, validation))
        return fits[c]

    with clock.phase("search"):
        search = log_bisection(config.c_grid, lambda c: fitted(c)[1], config.refine_steps)
    fit, select_accuracy = fitted(search.chosen)
    record = {
        "c": search.chosen,
        "select_accuracy": select_accuracy,
        "search": search.to_record(),
        "fits": len(fits),
        "iterations": fit.iterations,
        "max_gradient": fit.max_gradient,
        "seed": seed,
        "seconds": dict(clock.seconds),
    }
    return LinearProbe(fit.weight.float().cpu(), fit.bias.float().cpu(), record)


def _accuracy(fit: LogisticFit, data: LabeledFeatures) -> float:
    return accuracy(data.features @ fit.weight.T + fit.bias, data.labels)
