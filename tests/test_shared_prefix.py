"""Running the shared prompt prefix once gives the features and gradients of the full computation."""

from __future__ import annotations

import torch

from guidg.prompts import PromptLearner
from guidg.shared_prefix import supports_shared_prefix

NAMES = ["tench", "great white shark", "a class name of many more words than the others", "x"]


def learners(backbone, **options):
    return [
        PromptLearner(
            backbone.text, backbone.tokenizer, NAMES, n_ctx=6, generator=torch.Generator().manual_seed(2),
            share_prefix=share, **options,
        )
        for share in (True, False)
    ]


def test_the_tiny_text_tower_supports_prefix_sharing(tiny_backbone) -> None:
    assert supports_shared_prefix(tiny_backbone.text)


def test_shared_prefix_features_equal_the_full_computation(tiny_backbone) -> None:
    shared, full = learners(tiny_backbone)
    assert shared.shares_prefix and not full.shares_prefix
    torch.testing.assert_close(shared(), full(), rtol=1e-5, atol=1e-6)


def test_shared_prefix_gradients_equal_the_full_computation(tiny_backbone) -> None:
    shared, full = learners(tiny_backbone)
    target = torch.randn(len(NAMES), tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(3))
    (shared() * target).sum().backward()
    (full() * target).sum().backward()
    torch.testing.assert_close(shared.ctx.grad, full.ctx.grad, rtol=1e-4, atol=1e-5)


def test_prefix_sharing_applies_only_when_the_name_comes_last(tiny_backbone) -> None:
    shared, _ = learners(tiny_backbone, class_position="middle")
    assert not shared.shares_prefix
