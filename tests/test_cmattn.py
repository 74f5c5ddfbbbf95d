"""CMAttn (docs/methods.md, "CMAttn"): expert weights from image features and the experts' text features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from guidg.cmattn import ROUTING_MODES, CMAttn, CMAttnInputError

DIM, CLASSES, EXPERTS, HEADS, BATCH = 8, 5, 3, 4, 6


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(BATCH, DIM, generator=generator), dim=-1)
    experts = F.normalize(torch.randn(EXPERTS, CLASSES, DIM, generator=generator), dim=-1)
    return features, experts


def _attn(routing: str = "batch", seed: int = 0) -> CMAttn:
    torch.manual_seed(seed)
    return CMAttn(DIM, CLASSES, EXPERTS, heads=HEADS, routing=routing)


@pytest.mark.parametrize("routing", ROUTING_MODES)
def test_weights_have_one_row_per_image_and_one_column_per_expert(routing: str) -> None:
    features, experts = _inputs()
    assert _attn(routing)(features, experts).shape == (BATCH, EXPERTS)


@pytest.mark.parametrize("routing", ROUTING_MODES)
def test_every_row_of_weights_sums_to_one(routing: str) -> None:
    features, experts = _inputs()
    weights = _attn(routing)(features, experts)
    assert torch.all(weights > 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(BATCH))


def test_batch_routing_gives_every_row_the_mean_of_the_per_sample_rows() -> None:
    features, experts = _inputs()
    attn = _attn("batch")
    per_sample = attn.per_sample_weights(features, experts)
    weights = attn(features, experts)
    expected_row = per_sample.sum(dim=0) / BATCH
    for row in weights:
        torch.testing.assert_close(row, expected_row)


def test_sample_routing_gives_different_images_different_weights() -> None:
    features, experts = _inputs()
    attn = _attn("sample")
    weights = attn(features, experts)
    torch.testing.assert_close(weights, attn.per_sample_weights(features, experts))
    assert not torch.allclose(weights[0], weights[1], atol=1e-6)


def test_sample_routing_makes_an_image_weights_independent_of_its_batch_mates() -> None:
    features, experts = _inputs()
    attn = _attn("sample")
    alone = attn(features[:1], experts)
    with_others = attn(features, experts)[:1]
    torch.testing.assert_close(alone, with_others)


def test_no_gradient_reaches_the_features_or_the_experts_but_cmattn_learns() -> None:
    features, experts = _inputs()
    features.requires_grad_(True)
    experts.requires_grad_(True)
    attn = _attn("sample")
    weights = attn(features, experts)
    target = torch.tensor([1.0, 0.0, 0.0])
    (weights * target).sum().backward()
    assert features.grad is None
    assert experts.grad is None
    for name, parameter in attn.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_weights_match_a_hand_computation_for_a_tiny_case() -> None:
    dim, classes, experts_count, heads = 2, 3, 2, 2
    attn = CMAttn(dim, classes, experts_count, heads=heads, routing="sample")
    W = [[[1.0, 0.5], [-0.3, 2.0]], [[0.0, 1.0], [1.0, 0.0]]]
    b = [[0.1, -0.2], [0.0, 0.3]]
    a = [[0.2, 0.5, 0.3], [1.0, -1.0, 0.5]]
    c = [[0.0, 0.0], [0.4, -0.1]]
    with torch.no_grad():
        attn.query_weight.copy_(torch.tensor(W))
        attn.query_bias.copy_(torch.tensor(b))
        attn.class_pooling.copy_(torch.tensor(a))
        attn.key_bias.copy_(torch.tensor(c))
    f = [[0.6, 0.8], [-1.0, 0.0]]
    T = [
        [[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]],
        [[0.8, 0.6], [-0.6, 0.8], [0.0, -1.0]],
    ]

    def cosine(u: list[float], v: list[float]) -> float:
        dot = sum(x * y for x, y in zip(u, v, strict=True))
        return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))

    expected = []
    for image in f:
        row = [0.0] * experts_count
        for h in range(heads):
            query = [sum(W[h][o][i] * image[i] for i in range(dim)) + b[h][o] for o in range(dim)]
            scores = []
            for e in range(experts_count):
                key = [sum(a[h][k] * T[e][k][j] for k in range(classes)) + c[h][j] for j in range(dim)]
                scores.append(math.exp(cosine(query, key)))
            for e in range(experts_count):
                row[e] += scores[e] / sum(scores) / heads
        expected.append(row)

    weights = attn(torch.tensor(f), torch.tensor(T))
    torch.testing.assert_close(weights, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_a_zero_query_gives_finite_weights() -> None:
    attn = _attn("sample")
    features, experts = _inputs()
    with torch.no_grad():
        attn.query_weight.zero_()
        attn.query_bias.zero_()
    weights = attn(features, experts)
    torch.testing.assert_close(weights, torch.full((BATCH, EXPERTS), 1.0 / EXPERTS))


def test_initial_class_pooling_is_close_to_uniform_and_key_offset_is_zero() -> None:
    attn = _attn()
    torch.testing.assert_close(
        attn.class_pooling, torch.full((HEADS, CLASSES), 1.0 / CLASSES), atol=0.1 / CLASSES, rtol=0
    )
    assert torch.all(attn.key_bias == 0)
    assert not torch.equal(attn.class_pooling[0], attn.class_pooling[1])


def test_same_seed_builds_the_same_module() -> None:
    first, second = _attn(seed=3), _attn(seed=3)
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "experts_shape",
    [(EXPERTS + 1, CLASSES, DIM), (EXPERTS, CLASSES + 1, DIM), (EXPERTS, CLASSES, DIM + 1), (CLASSES, DIM)],
)
def test_the_number_of_experts_classes_and_dim_is_fixed(experts_shape: tuple[int, ...]) -> None:
    features, _ = _inputs()
    with pytest.raises(CMAttnInputError, match="shape"):
        _attn()(features, torch.randn(*experts_shape))


def test_features_of_the_wrong_width_are_refused() -> None:
    _, experts = _inputs()
    with pytest.raises(CMAttnInputError, match="image features"):
        _attn()(torch.randn(BATCH, DIM + 1), experts)


def test_unknown_routing_is_refused() -> None:
    with pytest.raises(CMAttnInputError, match="routing"):
        CMAttn(DIM, CLASSES, EXPERTS, routing="token")
