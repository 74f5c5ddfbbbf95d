"""Weight averaging (docs/methods.md, "WiSE-FT" and "CLIPood"): Beta moving average and WiSE-FT, checked against closed forms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from guidg.averaging import AveragingError, BetaMovingAverage, beta_weight, wise_ft


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    return model


def _trajectory(total_steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """theta_0 .. theta_T: random parameter values, as state dicts of the model."""
    generator = torch.Generator().manual_seed(seed)
    template = _model(0).state_dict()
    states = []
    for _ in range(total_steps + 1):
        state = {}
        for key, value in template.items():
            if value.is_floating_point():
                state[key] = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            else:
                state[key] = value + len(states)
        states.append(state)
    return states


def _closed_form(states: list[dict[str, torch.Tensor]], beta: float) -> dict[str, np.ndarray]:
    total_steps = len(states) - 1
    x = (np.arange(total_steps + 1) + 0.5) / (total_steps + 1)
    alphas = scipy.stats.beta.pdf(x, beta, beta)
    names = [name for name, _ in _model(0).named_parameters()]
    return {
        name: sum(a * s[name].numpy() for a, s in zip(alphas, states, strict=True)) / alphas.sum()
        for name in names
    }


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.5])
@pytest.mark.parametrize("total_steps", [1, 10, 4000])
def test_beta_weight_is_the_beta_pdf_at_the_step_midpoint(beta: float, total_steps: int) -> None:
    for t in sorted({0, 1, total_steps // 2, total_steps}):
        expected = scipy.stats.beta.pdf((t + 0.5) / (total_steps + 1), beta, beta)
        np.testing.assert_allclose(beta_weight(t, total_steps, beta), expected, rtol=1e-12)


def test_beta_weight_outside_the_schedule_is_refused() -> None:
    with pytest.raises(AveragingError):
        beta_weight(11, 10, 0.5)
    with pytest.raises(AveragingError):
        beta_weight(0, 10, 0.0)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_beta_moving_average_equals_the_alpha_weighted_mean_of_all_steps(beta: float) -> None:
    total_steps = 12
    states = _trajectory(total_steps)
    model = _model(0)
    model.load_state_dict(states[0])
    average = BetaMovingAverage(model, total_steps=total_steps, beta=beta)
    for state in states[1:]:
        model.load_state_dict(state)
        average.update(model)
    expected = _closed_form(states, beta)
    for name, parameter in average.module.named_parameters():
        np.testing.assert_allclose(parameter.detach().numpy(), expected[name], rtol=1e-10, atol=1e-12)


def test_beta_moving_average_starts_at_the_pretrained_weights() -> None:
    model = _model(0)
    average = BetaMovingAverage(model, total_steps=5, beta=0.1)
    for (name, p), q in zip(average.module.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert average.step == 0
    assert average.weight_sum == pytest.approx(scipy.stats.beta.pdf(0.5 / 6, 0.1, 0.1), rel=1e-12)


def test_beta_moving_average_does_not_share_storage_with_the_live_model() -> None:
    model = _model(0)
    average = BetaMovingAverage(model, total_steps=5, beta=0.1)
    before = [p.detach().clone() for p in average.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for p, q in zip(average.module.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_beta_moving_average_copies_the_live_buffers() -> None:
    states = _trajectory(3)
    model = _model(0)
    model.load_state_dict(states[0])
    average = BetaMovingAverage(model, total_steps=3, beta=0.5)
    for state in states[1:]:
        model.load_state_dict(state)
        average.update(model)
    for (name, buffer), (_, live) in zip(average.module.named_buffers(), model.named_buffers(), strict=True):
        assert torch.equal(buffer, live), name


def test_saved_and_reloaded_average_resumes_to_the_identical_result() -> None:
    total_steps = 8
    states = _trajectory(total_steps, seed=3)
    model = _model(0)
    model.load_state_dict(states[0])
    uninterrupted = BetaMovingAverage(model, total_steps=total_steps, beta=0.1)
    for state in states[1:]:
        model.load_state_dict(state)
        uninterrupted.update(model)

    model.load_state_dict(states[0])
    first_half = BetaMovingAverage(model, total_steps=total_steps, beta=0.1)
    for state in states[1:5]:
        model.load_state_dict(state)
        first_half.update(model)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = BetaMovingAverage(_model(7), total_steps=total_steps, beta=0.1)
    resumed.load_state_dict(saved)
    for state in states[5:]:
        model.load_state_dict(state)
        resumed.update(model)
    assert resumed.step == uninterrupted.step == total_steps
    assert resumed.weight_sum == uninterrupted.weight_sum
    for (name, p), q in zip(
        resumed.module.state_dict().items(), uninterrupted.module.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_loading_a_state_with_another_schedule_is_refused() -> None:
    state = BetaMovingAverage(_model(0), total_steps=8, beta=0.1).state_dict()
    with pytest.raises(AveragingError, match="schedule"):
        BetaMovingAverage(_model(0), total_steps=9, beta=0.1).load_state_dict(state)


def test_more_updates_than_planned_are_refused() -> None:
    model = _model(0)
    average = BetaMovingAverage(model, total_steps=2, beta=0.5)
    average.update(model)
    average.update(model)
    with pytest.raises(AveragingError, match="2 steps"):
        average.update(model)


def test_updating_with_another_architecture_is_refused() -> None:
    average = BetaMovingAverage(_model(0), total_steps=2, beta=0.5)
    with pytest.raises(AveragingError, match="differ"):
        average.update(nn.Linear(3, 4).double())


def _state_pair() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    pretrained = {
        "weight": torch.randn(3, 2, generator=generator),
        "half": torch.randn(4, generator=generator).half(),
        "count": torch.tensor(5),
        "mask": torch.tensor([True, False]),
    }
    finetuned = {
        "weight": torch.randn(3, 2, generator=generator),
        "half": torch.randn(4, generator=generator).half(),
        "count": torch.tensor(9),
        "mask": torch.tensor([False, True]),
    }
    return pretrained, finetuned


def test_wise_ft_interpolates_floating_tensors_linearly() -> None:
    pretrained, finetuned = _state_pair()
    mixed = wise_ft(pretrained, finetuned, alpha=0.3)
    expected = 0.7 * pretrained["weight"].numpy().astype(np.float64) + 0.3 * finetuned["weight"].numpy()
    np.testing.assert_allclose(mixed["weight"].numpy(), expected, rtol=1e-6)
    expected_half = 0.7 * pretrained["half"].numpy().astype(np.float64) + 0.3 * finetuned["half"].numpy()
    assert mixed["half"].dtype == torch.float16
    np.testing.assert_allclose(mixed["half"].numpy(), expected_half, rtol=1e-3)


def test_wise_ft_takes_integer_and_boolean_tensors_from_the_finetuned_weights() -> None:
    pretrained, finetuned = _state_pair()
    mixed = wise_ft(pretrained, finetuned, alpha=0.5)
    assert torch.equal(mixed["count"], finetuned["count"])
    assert torch.equal(mixed["mask"], finetuned["mask"])


@pytest.mark.parametrize(("alpha", "source"), [(0.0, 0), (1.0, 1)])
def test_wise_ft_endpoints_are_the_pretrained_and_the_finetuned_weights(alpha: float, source: int) -> None:
    pair = _state_pair()
    mixed = wise_ft(*pair, alpha=alpha)
    for key in ("weight", "half"):
        assert torch.equal(mixed[key], pair[source][key]), key


def test_wise_ft_with_mismatched_keys_names_them() -> None:
    pretrained, finetuned = _state_pair()
    del finetuned["mask"]
    finetuned["extra.bias"] = torch.zeros(1)
    with pytest.raises(AveragingError, match=r"only in the pretrained one: \['mask'\].*\['extra.bias'\]"):
        wise_ft(pretrained, finetuned)


def test_wise_ft_with_mismatched_shapes_is_refused() -> None:
    pretrained, finetuned = _state_pair()
    finetuned["weight"] = torch.zeros(2, 3)
    with pytest.raises(AveragingError, match="'weight'"):
        wise_ft(pretrained, finetuned)
