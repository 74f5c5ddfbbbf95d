"""Low-rank adapters on q, k, v: the update is W + s B A on each third of in_proj_weight, B = 0 changes nothing,
merging gives the unmerged forward on both towers, the count is CLIP-LoRA's."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidg.backbone import TINY_SPEC, load_backbone
from guidg.lora import (
    LoRAAttention, LoRAError, apply_lora, attention_blocks, lora_parameter_count, lora_parameters, lora_scaling,
    merge_lora, remove_lora, set_dropout_generator,
)


@pytest.fixture
def inputs(tiny_backbone):
    size = tiny_backbone.image_size
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = tiny_backbone.tokenizer(["a photo of a dog.", "a photo of a tabby cat.", "x"])
    return images, tokens


def _features(backbone, inputs):
    images, tokens = inputs
    with torch.no_grad():
        return backbone.model.encode_image(images), backbone.model.encode_text(tokens)


def _randomise_b(layers, seed=1):
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=rng))


def _hand_attention(x, weight, bias, heads, out_weight, out_bias, mask=None):
    """softmax(q k^T / sqrt(d_h) + mask) v, then the output projection; x (B, L, d) batch first."""
    batch, length, width = x.shape
    q, k, v = (x @ w.T + b for w, b in zip(weight.chunk(3), bias.chunk(3)))
    split = lambda t: t.reshape(batch, length, heads, width // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
    return out @ out_weight.T + out_bias


def test_with_b_zero_both_towers_compute_what_they_computed_before(tiny_backbone, inputs):
    before_image, before_text = _features(tiny_backbone, inputs)
    apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.25)
    after_image, after_text = _features(tiny_backbone, inputs)

    torch.testing.assert_close(after_image, before_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(after_text, before_text, rtol=0, atol=1e-5)


def test_every_block_of_both_towers_is_adapted_and_the_model_keeps_its_own_parameters(tiny_backbone):
    tiny_backbone.model.requires_grad_(False)
    before = {name: p for name, p in tiny_backbone.model.named_parameters()}
    layers = apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.25)
    text_layers = len(tiny_backbone.model.transformer.resblocks)
    vision_layers = len(tiny_backbone.model.visual.transformer.resblocks)

    assert list(layers) == [f"text.{i}" for i in range(text_layers)] + [f"visual.{i}" for i in range(vision_layers)]
    trainable = {id(p) for p in tiny_backbone.model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in lora_parameters(layers).values()}
    wrapped = {id(p) for p in tiny_backbone.model.parameters()}
    assert all(id(p) in wrapped for p in before.values())  # the same tensors, inside the wrappers


def test_merged_weights_give_the_unmerged_forward_on_both_towers(tiny_backbone, inputs):
    original_keys = list(tiny_backbone.model.state_dict())
    layers = apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.25)
    _randomise_b(layers)
    unmerged_image, unmerged_text = _features(tiny_backbone, inputs)
    merge_lora(tiny_backbone.model)
    merged_image, merged_text = _features(tiny_backbone, inputs)

    assert all(isinstance(b.attn, nn.MultiheadAttention) for b in attention_blocks(tiny_backbone.model).values())
    assert list(tiny_backbone.model.state_dict()) == original_keys  # a plain open_clip model again
    torch.testing.assert_close(merged_image, unmerged_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged_text, unmerged_text, rtol=1e-5, atol=1e-5)
    assert (merged_image - _features_of_fresh(inputs)[0]).abs().max() > 1e-2  # the adapters did change something


def _features_of_fresh(inputs):
    return _features(load_backbone(TINY_SPEC), inputs)


def test_merge_writes_w_plus_scaled_b_a_into_each_third(tiny_backbone):
    layers = apply_lora(tiny_backbone.model, rank=3, alpha=2.0, dropout=0.0, scaling_rule="alpha/r")
    _randomise_b(layers)
    layer = layers["visual.1"]
    weight = layer.base.in_proj_weight.detach().clone()
    d = layer.width
    expected = torch.cat([weight[i * d:(i + 1) * d] + (2.0 / 3) * layer.lora_B[i] @ layer.lora_A[i] for i in range(3)])
    merge_lora(tiny_backbone.model)

    torch.testing.assert_close(tiny_backbone.model.visual.transformer.resblocks[1].attn.in_proj_weight,
                               expected.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("tower", ["text", "visual"])
def test_the_adapted_attention_is_the_hand_computed_attention_with_w_plus_scaled_b_a(tiny_backbone, tower):
    layers = apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.25)
    _randomise_b(layers)
    layer = layers[f"{tower}.0"]
    layer.eval()
    base, d = layer.base, layer.width
    scale = 1.0 / math.sqrt(2)  # alpha / sqrt(r), the reference's scaling
    adapted = torch.cat([base.in_proj_weight[i * d:(i + 1) * d] + scale * layer.lora_B[i] @ layer.lora_A[i]
                         for i in range(3)])
    x = torch.randn(2, 7, d, generator=torch.Generator().manual_seed(3))
    mask = torch.full((7, 7), float("-inf")).triu(1) if tower == "text" else None
    with torch.no_grad():
        expected = _hand_attention(x, adapted, base.in_proj_bias, base.num_heads, base.out_proj.weight,
                                   base.out_proj.bias, mask)
        found = layer(x, x, x, need_weights=False, attn_mask=mask)[0]

    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)


def test_the_scaling_is_alpha_over_sqrt_r_by_default_and_alpha_over_r_on_request():
    base = nn.MultiheadAttention(8, 2, batch_first=True)
    default, paper = LoRAAttention(base, 4, 2.0, 0.0), LoRAAttention(base, 4, 2.0, 0.0, "alpha/r")

    assert default.scaling == pytest.approx(1.0) and paper.scaling == pytest.approx(0.5)
    assert lora_scaling(1.0, 2, "alpha/sqrt(r)") == pytest.approx(2 ** -0.5)
    with torch.no_grad():
        paper.lora_B.normal_()
    torch.testing.assert_close(paper.delta_weight(),
                               0.5 * torch.cat([paper.lora_B[i] @ paper.lora_A[i] for i in range(3)]))


def test_a_starts_as_nn_linear_draws_its_weight_and_b_at_zero():
    layer = LoRAAttention(nn.MultiheadAttention(64, 4), 2, 1.0, 0.0, generator=torch.Generator().manual_seed(0))

    assert torch.equal(layer.lora_B, torch.zeros(3, 64, 2))
    assert layer.lora_A.abs().max() <= 1 / 8 and layer.lora_A.abs().max() > 0.9 / 8  # U(-1/sqrt(d), 1/sqrt(d))


def test_dropout_acts_on_the_adapter_input_only_and_only_in_training():
    base = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    layer = LoRAAttention(base, 2, 1.0, 0.5)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.train()
        with_b_zero = layer(x, x, x)[0]
        layer.lora_B.normal_()
        set_dropout_generator({"l": layer}, torch.Generator().manual_seed(7))
        first = layer(x, x, x)[0]
        set_dropout_generator({"l": layer}, torch.Generator().manual_seed(7))
        again = layer(x, x, x)[0]
        layer.eval()
        evaluated = layer(x, x, x)[0]

    torch.testing.assert_close(with_b_zero, base(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(first, again)  # masks drawn from the given generator
    assert (first - evaluated).abs().max() > 1e-3


def test_the_count_is_three_times_two_r_d_per_layer_of_both_towers(tiny_backbone):
    layers = apply_lora(tiny_backbone.model, rank=3, alpha=1.0, dropout=0.0)
    text = tiny_backbone.model.transformer
    visual = tiny_backbone.model.visual.transformer
    formula = 3 * 2 * 3 * (text.layers * text.width + visual.layers * visual.width)

    assert lora_parameter_count(layers) == formula == sum(p.numel() for p in lora_parameters(layers).values())


def test_remove_puts_the_original_layers_back_and_adapting_twice_is_refused(tiny_backbone, inputs):
    before = _features(tiny_backbone, inputs)
    originals = [b.attn for b in attention_blocks(tiny_backbone.model).values()]
    layers = apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.0)
    with pytest.raises(LoRAError, match="already carries"):
        apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.0)
    _randomise_b(layers)
    remove_lora(tiny_backbone.model)

    assert [b.attn for b in attention_blocks(tiny_backbone.model).values()] == originals
    assert all(torch.equal(a, b) for a, b in zip(before, _features(tiny_backbone, inputs)))


def test_the_adapted_attention_is_differentiable_in_a_and_b(tiny_backbone, inputs):
    layers = apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.25)
    _randomise_b(layers)
    images, tokens = inputs
    loss = tiny_backbone.model.encode_image(images).sum() + tiny_backbone.model.encode_text(tokens).sum()
    loss.backward()

    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(layers).values())


def test_bool_and_float_masks_mean_the_same(tiny_backbone):
    layer = apply_lora(tiny_backbone.model, rank=2, alpha=1.0, dropout=0.0)["text.0"]
    x = torch.randn(1, 4, layer.width)
    blocked = torch.ones(4, 4, dtype=torch.bool).triu(1)
    with torch.no_grad():
        from_bool = layer(x, x, x, attn_mask=blocked)[0]
        from_float = layer(x, x, x, attn_mask=torch.zeros(4, 4).masked_fill(blocked, float("-inf")))[0]

    assert torch.equal(from_bool, from_float)
    assert F.mse_loss(from_bool, layer(x, x, x)[0].detach()) > 0  # the mask matters


def test_vit_b_16_gets_the_184320_adapter_parameters_of_the_formula():
    model = open_clip.create_model("ViT-B-16", pretrained=None)
    layers = apply_lora(model, rank=2, alpha=1.0, dropout=0.25)

    assert len(layers) == 24
    assert lora_parameter_count(layers) == 3 * 2 * 2 * (12 * 512 + 12 * 768) == 184_320
