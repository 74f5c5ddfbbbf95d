"""How well a classifier's confidence matches its accuracy: expected calibration error and negative log-likelihood.

Pure functions of logits (N x C) and true labels (N), computed in float64 whatever the logits' precision, so that a
bf16 run and an fp32 run are measured alike. Both are scored on the target's test images, like the accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from imagenet_dg.errors import ImageNetDGError

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (the usual choice since Guo et al., ICML 2017)."""


class CalibrationError(ImageNetDGError):
    """Logits and labels that cannot be measured (wrong shapes, no images, labels out of range, non-finite logits)."""


def _checked(logits: Tensor, labels: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
    labels = torch.as_tensor(labels, dtype=torch.long).to(logits.device).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise CalibrationError(f"expected logits of shape (images >= 1, classes >= 2), found {tuple(logits.shape)}")
    if labels.shape[0] != logits.shape[0]:
        raise CalibrationError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels")
    if bool(((labels < 0) | (labels >= logits.shape[1])).any()):
        raise CalibrationError(f"labels must be class indices in [0, {logits.shape[1]}), found {labels.tolist()}")
    logits = logits.detach().to(torch.float64)
    if not bool(torch.isfinite(logits).all()):
        raise CalibrationError("the logits hold non-finite values; nothing can be measured from them")
    return logits, labels


def binned_calibration_error(confidence: Tensor, correct: Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error, in percent, of predictions with these confidences (in (0, 1]) and correctness.

    ECE = 100 * sum over bins b of |b| / N * |accuracy(b) - mean confidence(b)|, over ``bins`` equal-width bins.
    Bin edges: bin k (k = 0 .. bins - 1) holds the confidences in (k / bins, (k + 1) / bins], closed on the right
    (a confidence exactly on an edge belongs to the lower bin; 1.0 to the last). Empty bins contribute nothing.
    """
    if bins < 1:
        raise CalibrationError(f"expected at least one bin, found {bins}")
    confidence = confidence.detach().to(torch.float64).reshape(-1)
    correct = correct.detach().to(torch.float64).reshape(-1)
    if confidence.shape != correct.shape or confidence.numel() == 0:
        raise CalibrationError(f"expected as many confidences as correctness flags (at least one), found "
                               f"{confidence.numel()} and {correct.numel()}")
    inner_edges = torch.arange(1, bins, dtype=torch.float64, device=confidence.device) / bins
    # right=False: index i with edge[i - 1] < confidence <= edge[i], i.e. bins closed on the right
    bin_of = torch.bucketize(confidence, inner_edges, right=False)
    hits = torch.zeros(bins, dtype=torch.float64, device=confidence.device).index_add_(0, bin_of, correct)
    confidences = torch.zeros_like(hits).index_add_(0, bin_of, confidence)
    # |b| / N * |hits(b) / |b| - confidences(b) / |b|| = |hits(b) - confidences(b)| / N
    return 100.0 * float((hits - confidences).abs().sum() / confidence.numel())


def expected_calibration_error(logits: Tensor, labels: Tensor | Sequence[int], bins: int = ECE_BINS) -> float:
    """Expected calibration error in percent: confidence = the maximum softmax probability, a prediction is
    correct when the arg-max class (the first on a tie, as the accuracy counts it) is the label; binned as
    :func:`binned_calibration_error` says (15 equal-width bins closed on the right)."""
    logits, labels = _checked(logits, labels)
    confidence = torch.softmax(logits, dim=-1).max(dim=-1).values
    correct = logits.argmax(dim=-1) == labels
    return binned_calibration_error(confidence, correct, bins)


def negative_log_likelihood(logits: Tensor, labels: Tensor | Sequence[int]) -> float:
    """Mean over images of -log softmax(logits)[label], in nats (natural logarithm)."""
    logits, labels = _checked(logits, labels)
    log_probabilities = torch.log_softmax(logits, dim=-1)
    return float(-log_probabilities.gather(1, labels[:, None]).mean())
