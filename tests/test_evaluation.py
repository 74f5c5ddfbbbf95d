"""Predictions: a predictor's image encoder, then its logits; the logits of single heads and of the CMAttn-weighted
expert ensemble."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from guidg.cmattn import CMAttn
from guidg.evaluation import image_features, predict
from guidg.methods import Predictor
from guidg.methods.text_heads import TextHeadPredictor, head_logits


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


def test_a_predictor_weighs_its_experts_over_batches_of_its_evaluation_batch_size() -> None:
    features, heads = features_and_heads()
    torch.manual_seed(1)
    cmattn = CMAttn(8, 4, 3, routing="batch")
    predictor = TextHeadPredictor(heads, 3, cmattn)
    torch.testing.assert_close(predictor.logits(features), head_logits(features, heads, cmattn, batch_size=3))


@dataclass
class FirstFeature(Predictor):
    """Encodes every image to the same unit vector and scores it by its first coordinate, twice."""

    dim: int
    n_trainable: int = 0
    details: dict = field(default_factory=dict)

    def image_encoder(self, backbone):
        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.zeros(len(pixels), dtype=torch.long), self.dim).float()

        return encode

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([features[:, 0], 2 * features[:, 0]], dim=1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}


def test_predictions_go_through_the_predictors_own_image_encoder(mini_task, tiny_backbone) -> None:
    logits = predict(FirstFeature(tiny_backbone.embed_dim), tiny_backbone, mini_task.test)
    assert torch.equal(logits, torch.tensor([[1.0, 2.0]]).expand(len(mini_task.test), 2))
    # the default encoder is the backbone's: a frozen-encoder predictor is scored on the pretrained features
    heads = torch.nn.functional.normalize(torch.randn(1, 3, tiny_backbone.embed_dim), dim=-1)
    frozen = TextHeadPredictor(heads, 36)
    expected = 100 * image_features(tiny_backbone, mini_task.test) @ heads[0].T
    torch.testing.assert_close(predict(frozen, tiny_backbone, mini_task.test), expected)
