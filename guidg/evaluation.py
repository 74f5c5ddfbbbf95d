"""Scoring a trained method: features of the evaluation images, logits, accuracy per domain (SPEC 6.4).

Predictions are made in the order of the image list (the manifests order images by class, then path, as the
reference evaluation does) and in batches of a fixed, recorded size: with CMAttn's batch routing a prediction
depends on its batch-mates, so both are part of the result.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from imagenet_dg.loading import LabeledImages
from guidg.backbone import Backbone
from guidg.cmattn import CMAttn
from guidg.divergence import check_finite_outputs
from guidg.features import encode_views
from guidg.image_pipeline import eval_batch_size
from guidg.losses import LOGIT_SCALE, ensemble_logits
from guidg.transforms import eval_transform


@torch.no_grad()
def image_features(
    backbone: Backbone, images: LabeledImages, *, batch_size: int | None = None, num_workers: int = 0
) -> Tensor:
    """Normalised features (N, D) of ``images`` under the evaluation transform, in list order.

    Batches of ``batch_size`` images (default: :func:`~guidg.image_pipeline.eval_batch_size` of the device);
    through the run's decoded-image cache when one is active, with the same result as from the files.
    """
    batch_size = batch_size or eval_batch_size(backbone.device)
    features = encode_views(
        backbone, images, eval_transform(backbone.image_size), batch_size=batch_size, num_workers=num_workers
    )[:, 0]
    return check_finite_outputs(features, "image features")


@torch.no_grad()
def head_logits(features: Tensor, heads: Tensor, cmattn: CMAttn | None, batch_size: int) -> Tensor:
    """Logits (N, C) of features (N, D) against ``heads`` (d, C, D).

    One head: ``100 * f T^T``. Several heads with CMAttn: ``sum_i w_i * 100 * f T_i^T`` with the weights of
    CMAttn computed over consecutive batches of ``batch_size`` rows.
    """
    heads = heads.to(features.device)
    if cmattn is None:
        if heads.shape[0] != 1:
            raise ValueError("several heads need CMAttn to weigh them")
        return check_finite_outputs(LOGIT_SCALE * features @ heads[0].T, "logits")
    cmattn = cmattn.to(features.device).eval()
    chunks = []
    for start in range(0, len(features), batch_size):
        batch = features[start : start + batch_size]
        chunks.append(ensemble_logits(batch, heads, cmattn(batch, heads)))
    return check_finite_outputs(torch.cat(chunks) if chunks else features.new_zeros(0, heads.shape[1]), "logits")


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent (0 for no images)."""
    if len(labels) == 0:
        return 0.0
    return 100.0 * float((logits.argmax(dim=-1).cpu() == labels.cpu()).float().mean())


def domain_accuracies(logits: Tensor, images: LabeledImages) -> Mapping[str, float]:
    """Top-1 accuracy in percent of each domain present in ``images``."""
    labels = torch.tensor(images.labels)
    domains = list(images.domains)
    result = {}
    for domain in sorted(set(domains)):
        rows = torch.tensor([d == domain for d in domains])
        result[domain] = accuracy(logits[rows.to(logits.device)], labels[rows])
    return result
