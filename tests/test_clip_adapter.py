"""CLIP-Adapter's residual feature blend by hand, its parameter count, schedule and saved state."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from guidg.clip_adapter import (
    Adapter,
    ClipAdapter,
    ClipAdapterConfig,
    TrainedClipAdapter,
    adapted_features,
    epoch_lr,
)
from guidg.feature_training import FeatureMethodError, seeded_module
from guidg.settings import SettingError


def small_model(seed: int = 0, ratio: float = 0.2) -> ClipAdapter:
    g = torch.Generator().manual_seed(seed)
    classifier = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    model = ClipAdapter(classifier, ratio, 4)
    with torch.no_grad():
        model.adapter.down.weight.copy_(torch.randn(2, 8, generator=g))
        model.adapter.up.weight.copy_(torch.randn(8, 2, generator=g))
    return model


def test_logits_are_the_residual_blend_computed_by_hand() -> None:
    model = small_model()
    features = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    w1, w2, text = model.adapter.down.weight.detach(), model.adapter.up.weight.detach(), model.classifier
    expected = torch.zeros(4, 3)
    for n in range(4):
        hidden = [max(0.0, sum(float(features[n, d]) * float(w1[h, d]) for d in range(8))) for h in range(2)]
        adapted = [max(0.0, sum(hidden[h] * float(w2[d, h]) for h in range(2))) for d in range(8)]
        blend = [0.2 * adapted[d] + 0.8 * float(features[n, d]) for d in range(8)]
        norm = math.sqrt(sum(v * v for v in blend))
        for c in range(3):
            expected[n, c] = 100.0 * sum(blend[d] / norm * float(text[c, d]) for d in range(8))
    torch.testing.assert_close(model(features), expected, rtol=1e-5, atol=1e-4)


def test_the_blend_is_the_same_for_a_feature_and_any_positive_multiple_of_it() -> None:
    # Why normalising before the adapter changes nothing: the reference adapts unnormalised features.
    model = small_model()
    features = F.normalize(torch.randn(5, 8), dim=-1)
    torch.testing.assert_close(
        adapted_features(7.3 * features, model.adapter, 0.2), adapted_features(features, model.adapter, 0.2)
    )


def test_ratio_zero_gives_the_zero_shot_logits() -> None:
    model = small_model(ratio=0.0)
    features = F.normalize(torch.randn(5, 8), dim=-1)
    torch.testing.assert_close(model(features), 100.0 * features @ model.classifier.T)


def test_the_adapter_has_two_d_squared_over_reduction_weights_and_no_bias() -> None:
    adapter = Adapter(64, 4)
    assert sum(p.numel() for p in adapter.parameters()) == 2 * 64 * 64 // 4
    assert adapter.down.bias is None and adapter.up.bias is None
    assert TrainedClipAdapter(ClipAdapter(torch.randn(5, 64), 0.2, 4)).n_trainable == 2 * 64 * 64 // 4


def test_the_initial_adapter_is_a_function_of_the_seed() -> None:
    def build() -> Adapter:
        return Adapter(16, 4)

    first, again, other = (seeded_module(build, s, "clip-adapter-init") for s in (1, 1, 2))
    assert torch.equal(first.down.weight, again.down.weight)
    assert not torch.equal(first.down.weight, other.down.weight)


def test_the_learning_rate_is_a_constant_warm_up_epoch_then_a_cosine_per_epoch() -> None:
    config = ClipAdapterConfig()
    assert epoch_lr(config, 0) == 1e-5
    assert epoch_lr(config, 1) == pytest.approx(2e-3)
    assert epoch_lr(config, 101) == pytest.approx(1e-3)  # half way through the 200-epoch cosine
    assert epoch_lr(config, 199) == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 198 / 200)))
    after_warmup = [epoch_lr(config, e) for e in range(1, 200)]
    assert all(a > b for a, b in itertools.pairwise(after_warmup))


def test_a_saved_adapter_loads_back_to_identical_logits(tmp_path) -> None:
    trained = TrainedClipAdapter(small_model(ratio=0.3).eval(), {"steps": 1})
    save_file(trained.state_dict(), str(tmp_path / "adapter.safetensors"))
    loaded = TrainedClipAdapter.from_state_dict(load_file(str(tmp_path / "adapter.safetensors")))
    features = F.normalize(torch.randn(6, 8), dim=-1)
    assert loaded.model.ratio == 0.3
    assert torch.equal(loaded.logits(features), trained.logits(features))


def test_a_state_with_mismatched_shapes_is_refused() -> None:
    state = TrainedClipAdapter(small_model()).state_dict()
    state["adapter.down.weight"] = torch.zeros(2, 5)
    with pytest.raises(FeatureMethodError, match="classifier"):
        TrainedClipAdapter.from_state_dict(state)


def test_the_defaults_are_the_reference_s() -> None:
    config = ClipAdapterConfig()
    assert (config.ratio, config.reduction) == (0.2, 4)
    optimisation = (config.lr, config.momentum, config.weight_decay, config.batch_size, config.epochs)
    assert optimisation == (2e-3, 0.9, 5e-4, 32, 200)
    schedule = (config.warmup_epochs, config.warmup_lr, config.crop_scale, config.checkpoint)
    assert schedule == (1, 1e-5, (0.08, 1.0), "last")


@pytest.mark.parametrize("change, name", [
    ({"ratio": 1.5}, "ratio"), ({"reduction": 0}, "reduction"), ({"lr": 0.0}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"epochs": 0}, "epochs"), ({"warmup_epochs": 300}, "warmup_epochs"), ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
    ({"cached_views": -1}, "cached_views"), ({"checkpoint": "middle"}, "checkpoint"),
])
def test_settings_out_of_range_are_refused_by_name(change, name) -> None:
    with pytest.raises(SettingError, match=f"clip_adapter[.:].*{name}"):
        ClipAdapterConfig(**change)
