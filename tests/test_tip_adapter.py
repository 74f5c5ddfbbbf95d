"""Tip-Adapter's logits by a hand loop, the reference's (alpha, beta) grid and its search, the saved state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import guidg.tip_adapter as tip
from guidg.evaluation import accuracy
from guidg.feature_training import LabeledFeatures
from guidg.settings import SettingError
from guidg.tip_adapter import (
    TipAdapter,
    TipAdapterConfig,
    TipAdapterFConfig,
    cache_logits,
    search_alpha_beta,
    search_candidates,
    tip_logits,
)


def pieces(seed: int = 0, n: int = 5, keys: int = 6, classes: int = 3, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    classifier = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    cache = F.normalize(torch.randn(keys, dim, generator=g), dim=-1)
    labels = torch.arange(keys) % classes
    return features, classifier, cache, labels


def test_logits_match_a_hand_loop_over_images_classes_and_keys() -> None:
    features, classifier, keys, labels = pieces()
    alpha, beta = 1.7, 5.5
    expected = torch.zeros(5, 3)
    for n in range(5):
        for c in range(3):
            zero_shot = 100.0 * sum(float(features[n, d] * classifier[c, d]) for d in range(4))
            cached = sum(
                math.exp(-beta * (1.0 - sum(float(features[n, d] * keys[k, d]) for d in range(4))))
                for k in range(6) if labels[k] == c
            )
            expected[n, c] = zero_shot + alpha * cached
    values = F.one_hot(labels, 3).float()
    logits = tip_logits(features, classifier, keys, values, alpha, beta)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)


def test_alpha_zero_leaves_the_zero_shot_logits() -> None:
    features, classifier, keys, labels = pieces()
    logits = tip_logits(features, classifier, keys, F.one_hot(labels, 3).float(), 0.0, 5.5)
    torch.testing.assert_close(logits, 100.0 * features @ classifier.T)


def test_cache_logits_in_small_blocks_equal_one_block(monkeypatch) -> None:
    features, _, keys, labels = pieces(n=9)
    values = F.one_hot(labels, 3).float()
    whole = cache_logits(features, keys, values, 3.0)
    monkeypatch.setattr(tip, "AFFINITY_ELEMENTS", 2 * keys.shape[0])  # two images per block
    blocked = cache_logits(features, keys, values, 3.0)
    # The same sums; a GEMM over fewer rows may round its last bit differently.
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-6)


def test_the_candidates_are_the_reference_grid_beta_major() -> None:
    candidates = search_candidates(TipAdapterConfig())
    assert len(candidates) == 200 * 20
    assert candidates[0] == pytest.approx((0.1, 0.1))
    assert candidates[1] == pytest.approx((0.1 + 2.9 / 20, 0.1))  # alpha moves first
    assert candidates[20] == pytest.approx((0.1, 0.1 + 6.9 / 200))
    assert candidates[-1] == pytest.approx((0.1 + 19 * 2.9 / 20, 0.1 + 199 * 6.9 / 200))


def test_the_search_picks_the_first_best_candidate_of_a_brute_force_scoring() -> None:
    features, classifier, keys, labels = pieces(n=40, keys=12, classes=4, dim=6, seed=3)
    g = torch.Generator().manual_seed(4)
    validation = LabeledFeatures(features, torch.randint(0, 4, (40,), generator=g))
    values = F.one_hot(labels, 4).float()
    config = TipAdapterConfig(beta_steps=7, alpha_steps=5, alpha_scale=300.0)
    candidates = search_candidates(config)
    found = search_alpha_beta(validation, classifier, keys, values, candidates)
    brute = [accuracy(tip_logits(features, classifier, keys, values, a, b), validation.labels) for a, b in candidates]
    best = max(brute)
    assert [s for _, s in found.scores] == brute
    assert found.index == brute.index(best) and found.chosen == candidates[brute.index(best)]
    assert len(set(brute)) > 1  # the grid matters on this problem, so the argmax is a real choice


def test_a_training_free_adapter_trains_nothing_and_a_fine_tuned_one_its_keys() -> None:
    _, classifier, keys, labels = pieces()
    assert TipAdapter(classifier, keys, labels, 1.0, 5.5, fine_tuned=False).n_trainable == 0
    fine = TipAdapter(classifier, keys, labels, 1.0, 5.5, fine_tuned=True)
    assert fine.n_trainable == 6 * 4 and fine.name == "tip-adapter-f"


@pytest.mark.parametrize("fine_tuned", [False, True])
def test_a_saved_adapter_loads_back_to_identical_logits(tmp_path, fine_tuned) -> None:
    features, classifier, keys, labels = pieces()
    adapter = TipAdapter(classifier, keys, labels, 2.345, 6.0655, fine_tuned)
    save_file(adapter.state_dict(), str(tmp_path / "tip.safetensors"))
    loaded = TipAdapter.from_state_dict(load_file(str(tmp_path / "tip.safetensors")))
    assert (loaded.alpha, loaded.beta, loaded.fine_tuned) == (2.345, 6.0655, fine_tuned)
    assert torch.equal(loaded.logits(features), adapter.logits(features))


def test_the_defaults_are_the_paper_s_start_and_the_reference_s_imagenet_grid_and_training() -> None:
    config = TipAdapterFConfig()
    assert (config.init_alpha, config.init_beta, config.augment_views, config.crop_scale) == (1.0, 5.5, 10, (0.5, 1.0))
    assert (config.beta_scale, config.beta_steps, config.alpha_scale, config.alpha_steps) == (7.0, 200, 3.0, 20)
    assert (config.lr, config.eps, config.epochs, config.batch_size) == (1e-3, 1e-4, 20, 256)


@pytest.mark.parametrize("config, change, name", [
    (TipAdapterConfig, {"augment_views": 0}, "tip_adapter.augment_views"),
    (TipAdapterConfig, {"init_beta": 0.0}, "tip_adapter.init_beta"),
    (TipAdapterConfig, {"beta_scale": 0.1}, "tip_adapter.beta_scale"),
    (TipAdapterFConfig, {"alpha_steps": 0}, "tip_adapter_f.alpha_steps"),
    (TipAdapterFConfig, {"eps": 0.0}, "tip_adapter_f.eps"),
    (TipAdapterFConfig, {"checkpoint": "first"}, "tip_adapter_f.checkpoint"),
])
def test_settings_out_of_range_are_refused_by_name(config, change, name) -> None:
    with pytest.raises(SettingError, match=name):
        config(**change)
