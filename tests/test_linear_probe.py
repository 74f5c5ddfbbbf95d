"""The linear probe's L-BFGS fit against closed-form checks and an independent solver, and its saved state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from guidg.feature_training import FeatureMethodError
from guidg.linear_probe import (
    C_GRID,
    LinearProbe,
    LinearProbeConfig,
    fit_logistic_regression,
)
from guidg.settings import SettingError


def problem(n: int = 40, d: int = 5, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g)
    features = F.normalize(centres[labels] + 0.8 * torch.randn(n, d, generator=g), dim=-1)
    return features, labels


def hand_gradient(weight, bias, features, labels, c):
    """Gradient of mean CE + |W|^2 / (2 C N), written out: (P - Y)^T X / N + W / (C N), and mean(P - Y)."""
    n = len(labels)
    probs = torch.softmax(features @ weight.T + bias, dim=-1)
    residual = probs - F.one_hot(labels, weight.shape[0]).to(probs.dtype)
    return residual.T @ features / n + weight / (c * n), residual.mean(dim=0)


def test_the_fit_is_a_stationary_point_of_the_penalised_objective() -> None:
    features, labels = problem()
    fit = fit_logistic_regression(features, labels, 3, 0.5, tolerance=1e-4)
    grad_w, grad_b = hand_gradient(fit.weight.double(), fit.bias.double(), features.double(), labels, 0.5)
    largest = max(float(grad_w.abs().max()), float(grad_b.abs().max()))
    assert largest <= 1e-4
    assert fit.max_gradient == pytest.approx(largest, abs=1e-6)
    assert fit.iterations > 1  # from zero weights, where the gradient is large


def test_the_fit_matches_plain_gradient_descent_on_a_strongly_convex_problem() -> None:
    features, labels = problem(n=30, d=4)
    c = 0.5
    weight, bias = torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for _ in range(4000):  # step 1 / L with L <= 1/2 + 1/(C N) for unit-norm features
        grad_w, grad_b = hand_gradient(weight, bias, features.double(), labels, c)
        weight, bias = weight - 1.5 * grad_w, bias - 1.5 * grad_b
    fit = fit_logistic_regression(features, labels, 3, c, tolerance=1e-7)
    torch.testing.assert_close(fit.weight.double(), weight, atol=2e-4, rtol=0)
    torch.testing.assert_close(fit.bias.double(), bias, atol=2e-4, rtol=0)


def test_the_penalty_spares_the_bias_which_then_matches_the_class_frequencies() -> None:
    # With uninformative (zero) features the weights get no signal; an unpenalised bias fits the priors exactly.
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    fit = fit_logistic_regression(torch.zeros(10, 4), labels, 3, 1e-3, tolerance=1e-7)
    torch.testing.assert_close(torch.softmax(fit.bias, dim=0), torch.tensor([0.5, 0.3, 0.2]), atol=1e-4, rtol=0)
    assert float(fit.weight.abs().max()) == 0.0


def test_a_stronger_penalty_gives_smaller_weights() -> None:
    features, labels = problem()
    norms = [float(fit_logistic_regression(features, labels, 3, c).weight.norm()) for c in (100.0, 1.0, 0.01)]
    assert norms[0] > norms[1] > norms[2]


def test_the_fit_is_deterministic() -> None:
    features, labels = problem()
    first, second = (fit_logistic_regression(features, labels, 3, 10.0) for _ in range(2))
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


def test_probe_logits_are_features_times_weights_plus_bias() -> None:
    weight, bias = torch.randn(3, 4), torch.randn(3)
    features = F.normalize(torch.randn(6, 4), dim=-1)
    expected = torch.tensor([
        [sum(float(features[n, d] * weight[c, d]) for d in range(4)) + float(bias[c]) for c in range(3)]
        for n in range(6)
    ])
    torch.testing.assert_close(LinearProbe(weight, bias).logits(features), expected)


def test_a_saved_probe_loads_back_to_identical_logits(tmp_path) -> None:
    probe = LinearProbe(torch.randn(3, 4), torch.randn(3), {"c": 1.0})
    save_file(probe.state_dict(), str(tmp_path / "probe.safetensors"))
    loaded = LinearProbe.from_state_dict(load_file(str(tmp_path / "probe.safetensors")))
    features = F.normalize(torch.randn(6, 4), dim=-1)
    assert torch.equal(loaded.logits(features), probe.logits(features))
    assert loaded.n_trainable == 3 * 4 + 3


def test_a_state_without_its_tensors_is_refused_by_name() -> None:
    with pytest.raises(FeatureMethodError, match="bias"):
        LinearProbe.from_state_dict({"weight": torch.zeros(3, 4)})


def test_the_defaults_are_coop_s_sweep_and_refinement() -> None:
    config = LinearProbeConfig()
    assert config.c_grid == C_GRID == (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
    assert (config.refine_steps, config.max_iter) == (8, 1000)


@pytest.mark.parametrize("change, name", [
    ({"c_grid": ()}, "c_grid"), ({"c_grid": (1.0, -1.0)}, "c_grid"), ({"refine_steps": -1}, "refine_steps"),
    ({"max_iter": 0}, "max_iter"), ({"tolerance": 0.0}, "tolerance"), ({"history_size": 0}, "history_size"),
])
def test_settings_out_of_range_are_refused_by_name(change, name) -> None:
    with pytest.raises(SettingError, match=f"linear_probe.{name}"):
        LinearProbeConfig(**change)
