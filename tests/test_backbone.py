"""The CLIP backbone: loading, feature encoders, and the text tower in pieces."""

from __future__ import annotations

import dataclasses

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip import factory as open_clip_factory
from safetensors.torch import save_file
from torch import nn

from guidg.backbone import (
    MODEL_CONFIG_DIR,
    TINY_MODEL,
    TINY_SPEC,
    Backbone,
    BackboneError,
    BackboneSpec,
    TextEncoder,
    load_backbone,
    register_model_configs,
)

TEXTS = ["a photo of a goldfish.", "a sketch of a great white shark in the deep sea.", "x"]


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return load_backbone(TINY_SPEC)


def tiny_config(**text_overrides: object) -> dict:
    register_model_configs()
    config = open_clip.get_model_config(TINY_MODEL)
    config["text_cfg"].update(text_overrides)
    return config


def test_register_model_configs_is_idempotent() -> None:
    register_model_configs()
    register_model_configs()
    assert TINY_MODEL in open_clip.list_models()
    assert open_clip_factory._MODEL_CONFIG_PATHS.count(MODEL_CONFIG_DIR) == 1


def test_tiny_model_loads_on_cpu_in_fp32_eval_mode(tiny: Backbone) -> None:
    assert isinstance(tiny.model, open_clip.CLIP)
    assert tiny.device == torch.device("cpu")
    assert not tiny.model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in tiny.model.parameters())
    assert tiny.spec == TINY_SPEC


def test_tiny_model_has_the_declared_sizes(tiny: Backbone) -> None:
    visual = tiny.model.visual
    assert tiny.image_size == 32 and tiny.embed_dim == 64
    assert visual.conv1.kernel_size == (8, 8) and visual.transformer.width == 64
    assert len(visual.transformer.resblocks) == 2
    assert visual.transformer.resblocks[0].attn.num_heads == 4
    assert tiny.text.context_length == 77 and tiny.text.width == 64
    assert tiny.model.token_embedding.num_embeddings == 49408
    assert len(tiny.model.transformer.resblocks) == 2
    assert tiny.model.transformer.resblocks[0].attn.num_heads == 4


def test_eval_transform_produces_model_sized_images(tiny: Backbone) -> None:
    from PIL import Image

    image = Image.new("RGB", (80, 50), color=(200, 30, 30))
    assert tuple(tiny.eval_transform(image).shape) == (3, 32, 32)


def test_encode_images_returns_unit_norm_float32_features(tiny: Backbone) -> None:
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = tiny.encode_images(images)
    assert features.shape == (5, 64) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(5))
    with torch.no_grad():
        expected = F.normalize(tiny.model.encode_image(images), dim=-1)
    torch.testing.assert_close(features.detach(), expected)


def test_encode_texts_equals_normalised_open_clip_encode_text(tiny: Backbone) -> None:
    with torch.no_grad():
        features = tiny.encode_texts(TEXTS)
        expected = F.normalize(tiny.model.encode_text(open_clip.tokenize(TEXTS)), dim=-1)
    assert features.shape == (3, 64) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_encode_tokens_uncut_equals_open_clip_encode_text_exactly(tiny: Backbone) -> None:
    tokens = tiny.tokenizer(TEXTS)
    with torch.no_grad():
        assert torch.equal(tiny.text.encode_tokens(tokens, cut=False), tiny.model.encode_text(tokens))


def test_encode_tokens_cut_to_longest_prompt_equals_open_clip_encode_text(tiny: Backbone) -> None:
    tokens = tiny.tokenizer(TEXTS)
    with torch.no_grad():
        cut = tiny.text.encode_tokens(tokens, cut=True)
        expected = tiny.model.encode_text(tokens)
    torch.testing.assert_close(cut, expected, atol=1e-5, rtol=0)


def test_text_forward_on_a_cut_sequence_depends_only_on_the_kept_positions(tiny: Backbone) -> None:
    tokens = tiny.tokenizer(["a photo of a dog."])
    eos = tokens.argmax(dim=-1)
    with torch.no_grad():
        embeddings = tiny.text.embed_tokens(tokens)
        short = tiny.text(embeddings[:, : int(eos) + 1], eos)
        noisy_tail = embeddings.clone()
        noisy_tail[:, int(eos) + 1 :] = torch.randn_like(noisy_tail[:, int(eos) + 1 :])
        full = tiny.text(noisy_tail, eos)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)


def test_text_encoder_shares_the_model_modules(tiny: Backbone) -> None:
    assert tiny.text.token_embedding is tiny.model.token_embedding
    assert tiny.text.transformer is tiny.model.transformer
    assert tiny.text.positional_embedding is tiny.model.positional_embedding
    assert tiny.text.text_projection is tiny.model.text_projection
    assert not any(name.startswith("visual") for name, _ in tiny.text.named_parameters())


def test_autocast_keeps_float32_on_cpu(tiny: Backbone) -> None:
    with tiny.autocast():
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == torch.float32


def test_known_tag_missing_offline_raises_backbone_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneError, match=r"'openai' of 'ViT-B-16'.*cache"):
        load_backbone(BackboneSpec(arch="ViT-B-16", pretrained="openai"))


def test_pretrained_that_is_neither_tag_nor_file_raises_backbone_error(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="neither a pretrained tag"):
        load_backbone(BackboneSpec(arch=TINY_MODEL, pretrained=str(tmp_path / "missing.safetensors")))


def test_unknown_architecture_raises_backbone_error() -> None:
    with pytest.raises(BackboneError, match="unknown architecture"):
        load_backbone(BackboneSpec(arch="no-such-arch", pretrained=None))


def _state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in backbone.model.state_dict().items()}


def _other_weights() -> Backbone:
    """A tiny model whose random weights differ from those of TINY_SPEC."""
    return load_backbone(dataclasses.replace(TINY_SPEC, init_seed=7))


def test_local_safetensors_checkpoint_loads_identical_weights(tmp_path: Path) -> None:
    source = _other_weights()
    path = tmp_path / "tiny.safetensors"
    save_file(_state_dict(source), str(path))
    loaded = load_backbone(BackboneSpec(arch=TINY_MODEL, pretrained=str(path)))
    saved = _state_dict(source)
    assert loaded.model.state_dict().keys() == saved.keys()
    assert all(torch.equal(loaded.model.state_dict()[key], value) for key, value in saved.items())
    assert not torch.equal(loaded.model.token_embedding.weight, load_backbone(TINY_SPEC).model.token_embedding.weight)


def test_local_pt_checkpoint_loads_identical_weights(tmp_path: Path) -> None:
    source = _other_weights()
    path = tmp_path / "tiny.pt"
    torch.save(_state_dict(source), path)
    loaded = load_backbone(BackboneSpec(arch=TINY_MODEL, pretrained=str(path)))
    assert all(torch.equal(loaded.model.state_dict()[key], value) for key, value in _state_dict(source).items())


def test_checkpoint_of_another_architecture_raises_backbone_error(tiny: Backbone, tmp_path: Path) -> None:
    path = tmp_path / "partial.safetensors"
    state = _state_dict(tiny)
    del state["text_projection"]
    save_file(state, str(path))
    with pytest.raises(BackboneError, match="partial.safetensors"):
        load_backbone(BackboneSpec(arch=TINY_MODEL, pretrained=str(path)))


def test_describe_is_json_and_identifies_a_checkpoint_file_by_sha256(tiny: Backbone, tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(_state_dict(tiny), str(path))
    record = BackboneSpec(arch=TINY_MODEL, pretrained=str(path)).describe()
    assert json.loads(json.dumps(record)) == record
    assert record["arch"] == TINY_MODEL and record["pretrained"] == str(path)
    assert record["pretrained_kind"] == "file"
    assert record["pretrained_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_describe_of_a_tag_and_of_random_weights_carries_no_hash() -> None:
    assert BackboneSpec().describe() == {
        "arch": "ViT-B-16",
        "pretrained": "openai",
        "pretrained_kind": "tag",
        "pretrained_sha256": None,
    }
    assert TINY_SPEC.describe()["pretrained_kind"] == "random"


def test_non_causal_text_tower_is_not_promptable() -> None:
    model = open_clip.CLIP(**tiny_config(no_causal_mask=True))
    with pytest.raises(BackboneError, match="non-causal"):
        TextEncoder(model)


def test_text_tower_pooling_the_first_token_is_not_promptable() -> None:
    model = open_clip.CLIP(**tiny_config(pool_type="first"))
    with pytest.raises(BackboneError, match="'first'"):
        TextEncoder(model)


class ForeignTextTower(nn.Module):
    """Stands for a text tower that is not open_clip's TextTransformer (such as a Hugging Face model)."""

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return torch.zeros(text.shape[0], 64)


def test_custom_text_clip_with_a_foreign_text_tower_is_not_promptable() -> None:
    model = open_clip.CustomTextCLIP(**tiny_config())
    model.text = ForeignTextTower()
    with pytest.raises(BackboneError, match="ForeignTextTower"):
        TextEncoder(model)


def test_custom_text_clip_with_open_clip_text_transformer_is_promptable() -> None:
    model = open_clip.CustomTextCLIP(**tiny_config()).eval()
    tokens = open_clip.tokenize(TEXTS)
    encoder = TextEncoder(model)
    with torch.no_grad():
        assert torch.equal(encoder.encode_tokens(tokens, cut=False), model.encode_text(tokens))
        torch.testing.assert_close(encoder.encode_tokens(tokens), model.encode_text(tokens), atol=1e-5, rtol=0)


def test_random_weights_repeat_exactly_and_depend_on_the_init_seed() -> None:
    first, again = load_backbone(TINY_SPEC), load_backbone(TINY_SPEC)
    other = load_backbone(dataclasses.replace(TINY_SPEC, init_seed=1))
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
    assert not torch.equal(first.model.visual.conv1.weight, other.model.visual.conv1.weight)
    assert TINY_SPEC.describe()["init_seed"] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_loading_on_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(BackboneError, match="no CUDA GPU is visible"):
        load_backbone(TINY_SPEC, "cuda")
