"""Expected calibration error and negative log-likelihood, against computations by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from imagenet_dg.calibration import (
    ECE_BINS, CalibrationError, binned_calibration_error, expected_calibration_error, negative_log_likelihood,
)


def two_class_logits(confidences: list[float]) -> torch.Tensor:
    """Logits whose softmax puts ``p`` on class 0 and ``1 - p`` on class 1."""
    return torch.tensor([[math.log(p), math.log(1.0 - p)] for p in confidences], dtype=torch.float64)


def test_ece_is_the_count_weighted_gap_between_accuracy_and_confidence_per_bin() -> None:
    # confidences 0.9, 0.9, 0.7, 0.55 on class 0; labels 0, 1, 1, 0 -> correct, wrong, wrong, correct.
    # bins of width 1/15: 0.9 in (13/15, 14/15], 0.7 in (10/15, 11/15], 0.55 in (8/15, 9/15]:
    # 2/4 * |1/2 - 0.9| + 1/4 * |0 - 0.7| + 1/4 * |1 - 0.55| = 0.2 + 0.175 + 0.1125 = 0.4875
    logits = two_class_logits([0.9, 0.9, 0.7, 0.55])
    assert expected_calibration_error(logits, [0, 1, 1, 0]) == pytest.approx(48.75)


def test_ece_uses_the_maximum_softmax_probability_over_several_classes() -> None:
    # softmax of (2, 1, 0): e^2 / (e^2 + e + 1) = 0.66524... on class 0, correct; alone in its bin
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    confidence = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
    assert expected_calibration_error(logits, [0]) == pytest.approx(100 * (1 - confidence))
    assert expected_calibration_error(logits, [2]) == pytest.approx(100 * confidence)


def test_a_perfectly_calibrated_classifier_has_zero_ece() -> None:
    # ten images at confidence 0.8, eight of them right: accuracy 0.8 = confidence in the one bin used
    logits = two_class_logits([0.8] * 10)
    assert expected_calibration_error(logits, [0] * 8 + [1] * 2) == pytest.approx(0.0, abs=1e-9)
    # certain and always right
    assert expected_calibration_error(torch.tensor([[50.0, -50.0], [-50.0, 50.0]]), [0, 1]) == pytest.approx(0.0)


def test_ece_bins_are_closed_on_the_right() -> None:
    # 0.6 = 9/15 is an edge: it belongs to (8/15, 9/15], 0.64 to (9/15, 10/15], so the two are binned apart:
    # 1/2 * |1 - 0.6| + 1/2 * |0 - 0.64| = 0.52 (together, as bins closed on the left would put them: 0.12)
    confidence, correct = torch.tensor([0.6, 0.64], dtype=torch.float64), torch.tensor([True, False])
    assert binned_calibration_error(confidence, correct) == pytest.approx(52.0)
    # a confidence of 1.0 is in the last bin, with 14/15 < 0.95: 1/2 * |1/2 - 0.975|
    assert binned_calibration_error(torch.tensor([1.0, 0.95]), torch.tensor([True, False])) == pytest.approx(47.5)


def test_ece_has_fifteen_bins_by_default() -> None:
    # 0.5 and 0.52 share a bin of width 1/15 (7/15 < both <= 8/15) but not a bin of width 1/30
    confidence, correct = torch.tensor([0.5, 0.52]), torch.tensor([True, False])
    assert ECE_BINS == 15
    assert binned_calibration_error(confidence, correct) == pytest.approx(100 * abs(0.5 - 0.51))
    assert binned_calibration_error(confidence, correct, bins=30) == pytest.approx(100 * (0.5 * 0.5 + 0.5 * 0.52))


def test_nll_is_the_mean_negative_log_softmax_at_the_label_in_nats() -> None:
    # (0, 0) with label 0: -log(1/2); (log 3, 0) with label 1: -log(1/4); mean = (log 2 + log 4) / 2
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert negative_log_likelihood(logits, [0, 1]) == pytest.approx(1.5 * math.log(2.0))


def test_nll_of_a_confident_mistake_is_large_and_of_a_confident_hit_near_zero() -> None:
    logits = torch.tensor([[20.0, 0.0]])
    assert negative_log_likelihood(logits, [1]) == pytest.approx(20.0, rel=1e-6)
    assert negative_log_likelihood(logits, [0]) == pytest.approx(math.exp(-20.0), rel=1e-6)


def test_low_precision_logits_are_measured_in_double_precision() -> None:
    logits = two_class_logits([0.9, 0.7, 0.55, 0.8])
    labels = [0, 1, 1, 0]
    half = logits.to(torch.bfloat16)
    assert negative_log_likelihood(half, labels) == pytest.approx(negative_log_likelihood(half.double(), labels))
    assert expected_calibration_error(half, labels) == pytest.approx(expected_calibration_error(half.double(), labels))


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(3, 2), [0, 1], "3 rows of logits but 2 labels"),
    (torch.zeros(2, 2), [0, 2], "class indices in"),
    (torch.zeros(0, 2), [], "shape"),
    (torch.tensor([[float("nan"), 0.0]]), [0], "non-finite"),
])
def test_logits_and_labels_that_do_not_fit_are_refused(logits, labels, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        expected_calibration_error(logits, labels)
    with pytest.raises(CalibrationError, match=message):
        negative_log_likelihood(logits, labels)
