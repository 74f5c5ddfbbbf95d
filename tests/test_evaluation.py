"""Predictions: logits of single heads and of the CMAttn-weighted expert ensemble, and accuracies."""

from __future__ import annotations

import torch

from guidg.cmattn import CMAttn
from guidg.evaluation import accuracy, domain_accuracies, head_logits
from imagenet_dg.loading import LabeledImages
from pathlib import Path


def features_and_heads(n: int = 10, classes: int = 4, dim: int = 8, experts: int = 3):
    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    heads = torch.nn.functional.normalize(torch.randn(experts, classes, dim, generator=generator), dim=-1)
    return features, heads


def test_single_head_logits_are_a_hundred_times_the_cosine() -> None:
    features, heads = features_and_heads(experts=1)
    torch.testing.assert_close(head_logits(features, heads, None, 3), 100 * features @ heads[0].T)


def test_batch_routing_makes_predictions_depend_on_the_evaluation_batch() -> None:
    features, heads = features_and_heads()
    torch.manual_seed(1)
    cmattn = CMAttn(8, 4, 3, routing="batch")
    whole = head_logits(features, heads, cmattn, batch_size=10)
    pieces = head_logits(features, heads, cmattn, batch_size=3)
    assert not torch.allclose(whole, pieces)
    weights = cmattn.per_sample_weights(features, heads).mean(0)
    expected = sum(weights[i] * 100 * features @ heads[i].T for i in range(3))
    torch.testing.assert_close(whole, expected)


def test_sample_routing_predictions_do_not_depend_on_the_batch() -> None:
    features, heads = features_and_heads()
    torch.manual_seed(1)
    cmattn = CMAttn(8, 4, 3, routing="sample")
    torch.testing.assert_close(head_logits(features, heads, cmattn, 10), head_logits(features, heads, cmattn, 3))


def test_accuracy_per_domain() -> None:
    images = LabeledImages(
        paths=tuple(Path(f"/x/{i}.jpg") for i in range(4)), labels=(0, 1, 1, 0), domains=("a", "a", "b", "b")
    )
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor(images.labels)) == 75.0
    assert domain_accuracies(logits, images) == {"a": 100.0, "b": 50.0}
