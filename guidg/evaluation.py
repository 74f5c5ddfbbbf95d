"""Predictions of a trained method on a list of images: its image features, then its logits.

Images are encoded under the evaluation transform, in the order of the list (the manifests order images by
class, then path, as the reference evaluation does), by the predictor's image encoder (the backbone's own when
the method leaves it frozen). The logits are asked for in that order; a predictor whose prediction depends on
its batch-mates (CMAttn's batch routing) splits them into batches of the recorded ``eval.batch_size``
(``docs/methods.md``, "The method interface").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from guidg.backbone import Backbone
from guidg.divergence import check_finite_outputs
from guidg.features import encode_views
from guidg.image_pipeline import eval_batch_size
from guidg.settings import Section, at_least, setting
from guidg.transforms import eval_transform
from imagenet_dg.loading import LabeledImages

if TYPE_CHECKING:
    from guidg.methods.interface import Predictor


@dataclass(frozen=True)
class EvalConfig(Section):
    """How predictions are made; every run has this section, whatever its method."""

    NAME: ClassVar[str] = "eval"

    batch_size: int = setting(
        36, at_least(1),
        "evaluation batch; with CMAttn's batch routing a prediction depends on its batch-mates, so it is recorded")


@torch.no_grad()
def image_features(
    backbone: Backbone, images: LabeledImages, *, batch_size: int | None = None, num_workers: int = 0,
    encode: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Normalised features (N, D) of ``images`` under the evaluation transform, in list order.

    ``encode`` maps a batch of preprocessed images to features (default: the backbone's image encoder as it is).
    Batches of ``batch_size`` images (default: :func:`~guidg.image_pipeline.eval_batch_size` of the device);
    through the run's decoded-image cache when one is active, with the same result as from the files.
    """
    batch_size = batch_size or eval_batch_size(backbone.device)
    features = encode_views(
        backbone, images, eval_transform(backbone.image_size), batch_size=batch_size, num_workers=num_workers,
        encode=encode,
    )[:, 0]
    return check_finite_outputs(features, "image features")


@torch.no_grad()
def predict(predictor: Predictor, backbone: Backbone, images: LabeledImages, num_workers: int = 0) -> Tensor:
    """Logits (N, C) of ``images`` in list order: the predictor's image encoder, then its logits.

    Non-finite features or logits stop the run (:func:`guidg.divergence.check_finite_outputs`).
    """
    features = image_features(backbone, images, num_workers=num_workers, encode=predictor.image_encoder(backbone))
    return check_finite_outputs(predictor.logits(features), "logits")


def accuracy(logits: Tensor, labels: Tensor | Sequence[int]) -> float:
    """Top-1 accuracy in percent of ``logits`` (N, C) against ``labels`` (0 for no images): what a method's own
    selection on source validation data compares."""
    labels = torch.as_tensor(labels)
    if len(labels) == 0:
        return 0.0
    return 100.0 * float((logits.argmax(dim=-1).cpu() == labels.cpu()).float().mean())
