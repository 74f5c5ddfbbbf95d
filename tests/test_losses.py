"""Training losses (docs/methods.md, "Step 2: the guided loss") and inference logits ("Inference"), checked against NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from guidg.losses import (
    BASES,
    LossInputError,
    ensemble_logits,
    expert_logits,
    guided_loss,
    single_head_loss,
    ueo_entropy_term,
)

BATCH, DIM, CLASSES, EXPERTS = 7, 6, 4, 3


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64), dim=-1)
    experts = F.normalize(
        torch.randn(EXPERTS, CLASSES, DIM, generator=generator, dtype=torch.float64), dim=-1
    )
    labels = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    return features, experts, labels


def _weights(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, EXPERTS, generator=generator, dtype=torch.float64).softmax(dim=1)


def _np_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy of (B, C) logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def _np_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_entropy_gap(probs: np.ndarray) -> float:
    mean_entropy = np.mean([-np.sum(p * np.log(p)) for p in probs])
    mean_prediction = probs.mean(axis=0)
    return mean_entropy - (-np.sum(mean_prediction * np.log(mean_prediction)))


def test_clipood_logits_are_scaled_cosine_minus_lambda_times_text_similarity_to_the_true_class() -> None:
    features, experts, labels = _inputs()
    f, T, y = features.numpy(), experts.numpy(), labels.numpy()
    lam = 0.3
    expected = np.empty((EXPERTS, BATCH, CLASSES))
    for i in range(EXPERTS):
        for b in range(BATCH):
            for c in range(CLASSES):
                expected[i, b, c] = 100.0 * (f[b] @ T[i, c] - lam * T[i, y[b]] @ T[i, c])
    np.testing.assert_allclose(
        expert_logits(features, experts, labels, margin=lam).numpy(), expected, rtol=1e-12
    )


def test_clipood_margin_lowers_the_true_class_by_100_lambda_for_normalised_text() -> None:
    features, experts, labels = _inputs()
    plain = expert_logits(features, experts)
    margin = expert_logits(features, experts, labels, margin=0.3)
    drop = (plain - margin)[:, torch.arange(BATCH), labels]
    torch.testing.assert_close(drop, torch.full((EXPERTS, BATCH), 30.0, dtype=torch.float64))


def test_zero_margin_logits_are_100_times_the_cosine_and_need_no_labels() -> None:
    features, experts, _ = _inputs()
    expected = 100.0 * np.einsum("bd,icd->ibc", features.numpy(), experts.numpy())
    np.testing.assert_allclose(expert_logits(features, experts).numpy(), expected, rtol=1e-12)


def test_a_margin_without_labels_is_refused() -> None:
    features, experts, _ = _inputs()
    with pytest.raises(LossInputError, match="labels"):
        expert_logits(features, experts, margin=0.3)


@pytest.mark.parametrize("base", ["erm", "clipood"])
def test_guided_cross_entropy_matches_numpy_per_sample_weighting(base: str) -> None:
    features, experts, labels = _inputs()
    weights = _weights()
    lam = 0.3 if base == "clipood" else 0.0
    f, T, y, w = features.numpy(), experts.numpy(), labels.numpy(), weights.numpy()
    per_expert = np.stack(
        [_np_cross_entropy(100.0 * (f - lam * T[i, y]) @ T[i].T, y) for i in range(EXPERTS)]
    )
    expected = np.mean([sum(w[b, i] * per_expert[i, b] for i in range(EXPERTS)) for b in range(BATCH)])
    loss = guided_loss(features, experts, weights, labels, base=base, clipood_lambda=0.3)
    np.testing.assert_allclose(loss.total.item(), expected, rtol=1e-6)
    np.testing.assert_allclose(loss.ce.item(), expected, rtol=1e-6)
    assert loss.entropy_term is None


def test_identical_weight_rows_give_the_weighted_sum_of_mean_expert_losses() -> None:
    features, experts, labels = _inputs()
    shared = np.array([0.5, 0.2, 0.3])
    weights = torch.tensor(shared).expand(BATCH, EXPERTS)
    f, T, y = features.numpy(), experts.numpy(), labels.numpy()
    expected = sum(shared[i] * _np_cross_entropy(100.0 * f @ T[i].T, y).mean() for i in range(EXPERTS))
    np.testing.assert_allclose(
        guided_loss(features, experts, weights, labels).total.item(), expected, rtol=1e-6
    )


@pytest.mark.parametrize("base", BASES)
def test_one_hot_weights_give_that_expert_single_head_loss(base: str) -> None:
    features, experts, labels = _inputs()
    weights = torch.zeros(BATCH, EXPERTS, dtype=torch.float64)
    weights[:, 1] = 1.0
    guided = guided_loss(features, experts[1:2], weights[:, 1:2], labels, base=base)
    single = single_head_loss(features, experts[1], labels, base=base)
    torch.testing.assert_close(guided.total, single.total)
    guided_all = guided_loss(features, experts, weights, labels, base=base)
    torch.testing.assert_close(guided_all.ce, single.ce)


def test_entropy_term_matches_numpy_and_is_never_positive() -> None:
    generator = torch.Generator().manual_seed(5)
    for scale in (0.1, 1.0, 10.0):
        probs = (scale * torch.randn(BATCH, CLASSES, generator=generator, dtype=torch.float64)).softmax(dim=1)
        term = ueo_entropy_term(probs).item()
        np.testing.assert_allclose(term, _np_entropy_gap(probs.numpy()), rtol=1e-10, atol=1e-12)
        assert term <= 0.0


def test_entropy_term_is_zero_when_every_image_gets_the_same_prediction() -> None:
    probs = torch.tensor([[0.2, 0.3, 0.5]] * 4, dtype=torch.float64)
    assert abs(ueo_entropy_term(probs).item()) < 1e-12


def test_entropy_term_is_minus_log_c_for_confident_predictions_spread_over_all_classes() -> None:
    probs = torch.eye(CLASSES, dtype=torch.float64)
    np.testing.assert_allclose(ueo_entropy_term(probs).item(), -np.log(CLASSES), rtol=1e-12)


def test_ueo_adds_the_unweighted_sum_of_each_expert_entropy_term() -> None:
    features, experts, labels = _inputs()
    weights = _weights()
    f, T, y, w = features.numpy(), experts.numpy(), labels.numpy(), weights.numpy()
    gaps = [_np_entropy_gap(_np_softmax(100.0 * f @ T[i].T)) for i in range(EXPERTS)]
    ce = np.mean(
        [
            sum(w[b, i] * _np_cross_entropy(100.0 * f @ T[i].T, y)[b] for i in range(EXPERTS))
            for b in range(BATCH)
        ]
    )
    loss = guided_loss(features, experts, weights, labels, base="ueo", ueo_coef=0.01)
    np.testing.assert_allclose(loss.entropy_term.item(), sum(gaps), rtol=1e-6)
    np.testing.assert_allclose(loss.total.item(), ce + 0.01 * sum(gaps), rtol=1e-6)


def test_ueo_term_does_not_change_with_the_weights() -> None:
    features, experts, labels = _inputs()
    first = guided_loss(features, experts, _weights(1), labels, base="ueo")
    second = guided_loss(features, experts, _weights(2), labels, base="ueo")
    torch.testing.assert_close(first.entropy_term, second.entropy_term)
    torch.testing.assert_close(first.total - first.ce, second.total - second.ce)


def test_gradients_reach_weights_and_features_but_not_experts() -> None:
    features, experts, labels = _inputs()
    features.requires_grad_(True)
    experts.requires_grad_(True)
    weights = _weights().requires_grad_(True)
    guided_loss(features, experts, weights, labels, base="clipood").total.backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert experts.grad is None


def test_weight_gradient_is_each_expert_cross_entropy_over_the_batch() -> None:
    features, experts, labels = _inputs()
    weights = _weights().requires_grad_(True)
    guided_loss(features, experts, weights, labels).total.backward()
    f, T, y = features.numpy(), experts.numpy(), labels.numpy()
    expected = np.stack([_np_cross_entropy(100.0 * f @ T[i].T, y) for i in range(EXPERTS)], axis=1) / BATCH
    np.testing.assert_allclose(weights.grad.numpy(), expected, rtol=1e-6)


def test_ensemble_logits_match_a_loop_over_images_and_experts() -> None:
    features, experts, _ = _inputs()
    weights = _weights()
    f, T, w = features.numpy(), experts.numpy(), weights.numpy()
    expected = np.zeros((BATCH, CLASSES))
    for b in range(BATCH):
        for i in range(EXPERTS):
            expected[b] += w[b, i] * 100.0 * (T[i] @ f[b])
    np.testing.assert_allclose(ensemble_logits(features, experts, weights).numpy(), expected, rtol=1e-12)


def test_weights_of_the_wrong_shape_are_refused() -> None:
    features, experts, labels = _inputs()
    with pytest.raises(LossInputError, match=r"\(B, d\)"):
        guided_loss(features, experts, torch.ones(EXPERTS, dtype=torch.float64), labels)


def test_unknown_base_is_refused() -> None:
    features, experts, labels = _inputs()
    with pytest.raises(LossInputError, match="base"):
        guided_loss(features, experts, _weights(), labels, base="sgd")
