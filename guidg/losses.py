"""Training losses of the image-encoder fine-tuning step: expert-guided (GuiDG) and single-head baselines.

Logits are ``LOGIT_SCALE * g(f) T^T`` for image features ``f`` (B, D) and class text features ``T`` (C, D).
The base method (described once, in :mod:`guidg.bases`) decides ``g`` and any extra term:

- ``erm``: ``g(f) = f``; cross-entropy.
- ``clipood``: ``g(f) = f - lambda * T[y]``, CLIPood's margin metric softmax (see :func:`expert_logits`).
- ``ueo``: ``g(f) = f``; cross-entropy plus ``ueo_coef`` times (mean per-image entropy - entropy of the mean
  prediction) of the softmax.

GuiDG weighs one such cross-entropy per prompt expert with CMAttn's weights; the baselines are the same with
the single zero-shot classifier as the only expert, of weight 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from guidg.bases import BASES, Base
from imagenet_dg.errors import ImageNetDGError

LOGIT_SCALE = 100.0
"""CLIP's exp(logit_scale): logits are 100 * cosine."""



class LossInputError(ImageNetDGError, ValueError):
    """A loss was given tensors of mismatched shapes or an unknown base method."""


@dataclass(frozen=True)
class GuidedLoss:
    """A training loss and its parts, for logging.

    ``total = ce + ueo_coef * entropy_term`` (``entropy_term`` is None unless the base is ``ueo``).
    """

    total: Tensor
    """Scalar to minimise."""
    ce: Tensor
    """Scalar: mean over the batch of the expert-weighted cross-entropy."""
    entropy_term: Tensor | None
    """Scalar: UEO's entropy term summed over experts, before ``ueo_coef``; None for other bases."""


def expert_logits(
    features: Tensor, experts: Tensor, labels: Tensor | None = None, margin: float = 0.0
) -> Tensor:
    """Every expert's logits, shape (d, B, C): ``LOGIT_SCALE * g_i(f) T_i^T``, ``g_i(f) = f - margin T_i[y]``.

    ``features`` (B, D), ``experts`` (d, C, D) class text features, ``labels`` (B,) class indices. With
    ``margin == 0``, ``g_i(f) = f`` and labels are not needed (they are ignored if given); otherwise they
    are. ``g_i(f)`` is not re-normalised.

    What the margin amounts to (CLIPood's margin metric softmax): the logit of class c for an image of
    class y is ``100 * (f . T_c - margin * T_y . T_c)``. The true class loses ``100 * margin * |T_y|^2``
    (``100 * margin`` for normalised text features), class c loses ``100 * margin * T_y . T_c``. A softmax
    ignores a shift shared by all classes, so for normalised text features this is exactly the softmax of
    ``100 * (f . T_c + margin * (1 - T_y . T_c))``: every wrong class c gets a margin
    ``margin * (1 - cos(T_y, T_c))`` on its cosine, which depends on the text-text similarity: large for
    classes whose text is unlike the true class's, vanishing for classes whose text is like it.
    """
    _check_features_and_experts(features, experts)
    if margin == 0.0:
        return LOGIT_SCALE * torch.einsum("bd,ecd->ebc", features, experts)
    if labels is None:
        raise LossInputError(f"expert_logits with margin {margin} needs the labels; got labels=None")
    _check_labels(labels, features.shape[0])
    shifted = features[None, :, :] - margin * experts[:, labels, :]
    return LOGIT_SCALE * torch.einsum("ebd,ecd->ebc", shifted, experts)


def ueo_entropy_term(probs: Tensor) -> Tensor:
    """UEO's entropy term of one head's predictions ``probs`` (B, C): ``mean_b H(p_b) - H(mean_b p_b)``.

    Natural logarithms. By concavity of the entropy the result is never above 0; minimising it makes each
    prediction confident while keeping the batch's predictions spread over the classes.
    """
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise LossInputError(
            f"ueo_entropy_term expected probabilities of shape (B >= 1, C); got {tuple(probs.shape)}"
        )
    return _entropy_gap(probs.clamp_min(torch.finfo(probs.dtype).tiny).log())


def guided_loss(
    features: Tensor,
    experts: Tensor,
    weights: Tensor,
    labels: Tensor,
    base: str = "erm",
    clipood_lambda: float = 0.3,
    ueo_coef: float = 0.01,
) -> GuidedLoss:
    """GuiDG's loss: ``mean_b sum_i w[b, i] * CE(LOGIT_SCALE * g_i(f_b) T_i^T, y_b)`` plus the base's term.

    ``features`` (B, D) image features, ``experts`` (d, C, D) the experts' class text features, ``weights``
    (B, d) CMAttn's weights (batch routing gives identical rows, and then the loss is
    ``sum_i w_i * mean_b CE_i[b]``), ``labels`` (B,). ``base`` is one of :data:`BASES`: a margin base (``clipood``) uses
    ``g_i(f) = f - clipood_lambda * T_i[y]`` (see :func:`expert_logits`); an entropy-term base (``ueo``) adds
    ``ueo_coef * sum_i ueo_entropy_term(softmax of expert i)``, not weighted by ``w``.

    Gradient flows to ``features`` and to ``weights`` (CMAttn learns through them); ``experts`` are
    treated as constants (detached).
    """
    described = _base(base)
    experts = experts.detach()
    _check_features_and_experts(features, experts)
    batch, num_experts = features.shape[0], experts.shape[0]
    _check_labels(labels, batch)
    labels = labels.long()
    if tuple(weights.shape) != (batch, num_experts):
        raise LossInputError(
            f"guided_loss expected expert weights of shape (B, d) = {(batch, num_experts)}; "
            f"got {tuple(weights.shape)}"
        )
    margin = described.margin_size(clipood_lambda)
    logits = expert_logits(features, experts, labels, margin)
    # at least float32: the cross-entropy of bf16/fp16 logits loses the small differences that matter
    log_probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=-1)
    per_expert_ce = -log_probs.gather(-1, labels[None, :, None].expand(num_experts, batch, 1)).squeeze(-1)
    ce = (weights.to(per_expert_ce.dtype).T * per_expert_ce).sum(dim=0).mean()
    if not described.entropy_term:
        return GuidedLoss(total=ce, ce=ce, entropy_term=None)
    entropy_term = _entropy_gap(log_probs).sum()
    return GuidedLoss(total=ce + ueo_coef * entropy_term, ce=ce, entropy_term=entropy_term)


def single_head_loss(
    features: Tensor,
    classifier: Tensor,
    labels: Tensor,
    base: str = "erm",
    clipood_lambda: float = 0.3,
    ueo_coef: float = 0.01,
) -> GuidedLoss:
    """The baselines' loss (ERM, CLIPood, UEO without GuiDG): :func:`guided_loss` with ``classifier`` (C, D)
    as the only expert, of weight 1."""
    if classifier.ndim != 2:
        raise LossInputError(
            f"single_head_loss expected a classifier of shape (C, D); got {tuple(classifier.shape)}"
        )
    ones = features.new_ones(features.shape[0], 1)
    return guided_loss(features, classifier[None], ones, labels, base, clipood_lambda, ueo_coef)


def ensemble_logits(features: Tensor, experts: Tensor, weights: Tensor) -> Tensor:
    """Inference logits (B, C): ``sum_i w[b, i] * LOGIT_SCALE * f_b T_i^T`` for weights ``w`` (B, d)."""
    _check_features_and_experts(features, experts)
    expected = (features.shape[0], experts.shape[0])
    if tuple(weights.shape) != expected:
        raise LossInputError(
            f"ensemble_logits expected weights of shape (B, d) = {expected}; got {tuple(weights.shape)}"
        )
    return torch.einsum("be,ebc->bc", weights.to(features.dtype), expert_logits(features, experts))


def _base(name: str) -> Base:
    try:
        return BASES[name]
    except (KeyError, TypeError):
        raise LossInputError(f"unknown base method {name!r}; expected one of {', '.join(BASES)}") from None


def _entropy_gap(log_probs: Tensor) -> Tensor:
    """``mean_b H(p_b) - H(mean_b p_b)`` over the batch axis -2 of log-probabilities (..., B, C)."""
    probs = log_probs.exp()
    mean_entropy = -(probs * log_probs).sum(dim=-1).mean(dim=-1)
    # log of the mean prediction, computed in log space so classes with vanishing probability stay finite
    log_mean = torch.logsumexp(log_probs, dim=-2) - math.log(log_probs.shape[-2])
    entropy_of_mean = -(log_mean.exp() * log_mean).sum(dim=-1)
    return mean_entropy - entropy_of_mean


def _check_features_and_experts(features: Tensor, experts: Tensor) -> None:
    if features.ndim != 2:
        raise LossInputError(f"expected image features of shape (B, D); got {tuple(features.shape)}")
    if experts.ndim != 3 or experts.shape[2] != features.shape[1]:
        raise LossInputError(
            f"expected expert text features of shape (d, C, D={features.shape[1]}); "
            f"got {tuple(experts.shape)}"
        )


def _check_labels(labels: Tensor, batch: int) -> None:
    if labels.ndim != 1 or labels.shape[0] != batch or labels.dtype not in (torch.int64, torch.int32):
        raise LossInputError(
            f"expected integer class labels of shape ({batch},); "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
