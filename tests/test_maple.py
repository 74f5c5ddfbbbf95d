"""MaPLe: prompts at the reference's positions in both towers, coupling maps text -> image width, the plain
towers without prompts, training on the miniature world (deterministic, source-only, saved and resumed)."""

from __future__ import annotations

import json
from dataclasses import replace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from guidg.backbone import (
    MODEL_CONFIG_DIR,
    TINY_MODEL,
    BackboneSpec,
    load_backbone,
    register_model_configs,
)
from guidg.maple import (
    CROSS_DATASET,
    MaPLeConfig,
    MaPLeError,
    MaPLeModel,
    MultiModalPrompts,
    encode_prompted_image,
    encode_prompted_text,
    load_maple,
    train_maple,
)
from guidg.model_selection import validation_images
from guidg.pooled_training import source_pools
from guidg.settings import SettingError
from guidg.transforms import eval_transform
from guidg.zeroshot import zeroshot_classifier
from imagenet_dg.loading import LabeledImages

MINI = BackboneSpec(TINY_MODEL, "mini")
QUICK = MaPLeConfig(depth=2, epochs=3, batch_size=8, lr=0.01, checkpoint_every=20)
"""A short run (27 steps an epoch, the first of warm-up) with a large learning rate, for the miniature world."""
NAMES = ("dog", "tabby cat", "hot air balloon")


class PoisonedImages:
    """Stands in for a split that must not be read: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the target's test split was read (.{name})")

    def __len__(self):
        raise AssertionError("the target's test split was read (len)")

    def __getitem__(self, index):
        raise AssertionError("the target's test split was read (item)")

    def __iter__(self):
        raise AssertionError("the target's test split was read (iter)")


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory):
    """A tiny random CLIP with three layers in each tower, so that J = 2 leaves a layer without prompts."""
    config = json.loads((MODEL_CONFIG_DIR / f"{TINY_MODEL}.json").read_text())
    config["vision_cfg"]["layers"] = config["text_cfg"]["layers"] = 3
    folder = tmp_path_factory.mktemp("configs")
    (folder / "maple-test-tiny3.json").write_text(json.dumps(config))
    register_model_configs()
    open_clip.add_model_config(folder)
    return load_backbone(BackboneSpec("maple-test-tiny3", None))


@pytest.fixture(scope="module")
def trained(mini_task):
    return train_maple(load_backbone(MINI), replace(mini_task, test=PoisonedImages()), QUICK, seed=1)


def _images(backbone, count=2, seed=0):
    size = backbone.image_size
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _record_block_io(transformer):
    inputs, outputs, handles = [], [], []
    for block in transformer.resblocks:
        handles.append(block.register_forward_pre_hook(lambda m, args, kwargs: inputs.append(args[0].detach().clone()),
                                                       with_kwargs=True))
        handles.append(block.register_forward_hook(lambda m, args, out: outputs.append(out.detach().clone())))
    return inputs, outputs, handles


def test_the_defaults_are_the_reference_configuration_s():
    config = MaPLeConfig()

    assert (config.depth, config.n_ctx, config.ctx_init) == (9, 2, "a photo of a")
    assert (config.lr, config.momentum, config.weight_decay) == (0.0035, 0.9, 5e-4)
    assert (config.batch_size, config.epochs) == (4, 5)
    assert (config.warmup_epochs, config.warmup_lr) == (1, 1e-5)
    assert (CROSS_DATASET.depth, CROSS_DATASET.lr, CROSS_DATASET.epochs) == (3, 0.0026, 2)


@pytest.mark.parametrize("change", [{"depth": 0}, {"n_ctx": 0}, {"ctx_init": ""}, {"warmup_epochs": 6}, {"lr": 0.0}])
def test_settings_outside_their_ranges_are_refused(change):
    with pytest.raises(SettingError, match="maple[.:]"):
        MaPLeConfig(**change)


def test_without_prompts_both_towers_are_the_plain_towers(tiny_backbone):
    images = _images(tiny_backbone)
    text = tiny_backbone.text
    tokens = tiny_backbone.tokenizer(["a photo of a dog.", "a bird"])
    positions = text.pool_positions(tokens)
    with torch.no_grad():
        plain_image = tiny_backbone.model.visual(images)
        plain_text = text(text.embed_tokens(tokens), positions)
        torch.testing.assert_close(encode_prompted_image(tiny_backbone.model.visual, images, []), plain_image,
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(encode_prompted_text(text, text.embed_tokens(tokens), positions, []), plain_text,
                                   rtol=0, atol=1e-6)


def test_with_one_layer_of_prompts_at_their_start_the_text_side_is_zero_shot_clip(tiny_backbone):
    model = MaPLeModel(tiny_backbone, NAMES, MaPLeConfig(depth=1), seed=0)
    with torch.no_grad():
        torch.testing.assert_close(model.text_features(), zeroshot_classifier(tiny_backbone, list(NAMES)),
                                   rtol=0, atol=1e-5)


def test_the_first_text_prompt_starts_as_the_embeddings_of_the_first_n_words(tiny_backbone):
    model = MaPLeModel(tiny_backbone, NAMES, MaPLeConfig(depth=1, n_ctx=2), seed=0)
    tokens = tiny_backbone.tokenizer(["a photo"])[0, 1:3]

    assert torch.equal(model.prompts.ctx.detach(), tiny_backbone.text.embed_tokens(tokens).detach())


def test_text_prompts_replace_positions_1_to_n_at_the_input_of_the_first_j_layers_only(three_layers):
    model = MaPLeModel(three_layers, NAMES, MaPLeConfig(depth=2), seed=0)
    transformer = three_layers.text.transformer
    inputs, outputs, handles = _record_block_io(transformer)
    with torch.no_grad():
        model.text_features()
    for handle in handles:
        handle.remove()
    p0, p1 = model.prompts.ctx.detach(), model.prompts.deep_text[0].detach()
    length = model.token_embeddings.shape[1]
    first = torch.cat([model.token_embeddings[:, :1], p0.expand(3, -1, -1), model.token_embeddings[:, 3:]], dim=1)

    torch.testing.assert_close(inputs[0], first + three_layers.text.positional_embedding[:length])
    assert torch.equal(inputs[1][:, 1:3], p1.expand(3, -1, -1))  # P_1 in place of layer 0's outputs there
    assert torch.equal(inputs[1][:, :1], outputs[0][:, :1]) and torch.equal(inputs[1][:, 3:], outputs[0][:, 3:])
    assert torch.equal(inputs[2], outputs[1])  # from layer J on the prompt positions carry on


def test_image_prompts_are_the_coupled_text_prompts_appended_then_replaced(three_layers):
    model = MaPLeModel(three_layers, NAMES, MaPLeConfig(depth=2), seed=0)
    visual = three_layers.model.visual
    inputs, outputs, handles = _record_block_io(visual.transformer)
    images = _images(three_layers)
    with torch.no_grad():
        model.encode_images(images)
        v0 = model.prompts.coupling[0](model.prompts.ctx)
        v1 = model.prompts.coupling[1](model.prompts.deep_text[0])
        plain = visual.ln_pre(_class_and_patches(visual, images))
    for handle in handles:
        handle.remove()
    tokens = plain.shape[1]

    assert inputs[0].shape[1] == tokens + 2
    torch.testing.assert_close(inputs[0][:, :tokens], plain)
    torch.testing.assert_close(inputs[0][:, tokens:], visual.ln_pre(v0).expand(2, -1, -1))  # before ln_pre
    assert torch.equal(inputs[1][:, tokens:], v1.expand(2, -1, -1))
    assert torch.equal(inputs[1][:, :tokens], outputs[0][:, :tokens])
    assert torch.equal(inputs[2], outputs[1])


def _class_and_patches(visual, images):
    """Class token and patch tokens with the positional embedding, as CLIP's ViT makes them."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
    return x + visual.positional_embedding


def test_the_couplings_map_text_width_to_image_width_and_are_counted_as_in_the_paper():
    prompts = MultiModalPrompts(depth=9, n_ctx=2, text_width=512, vision_width=768, context=None, seed=0)

    assert len(prompts.coupling) == 9 and len(prompts.deep_text) == 8
    assert all(c.weight.shape == (768, 512) and c.bias.shape == (768,) for c in prompts.coupling)
    assert [v.shape for v in prompts.vision_prompts()] == [torch.Size([2, 768])] * 9
    assert prompts.n_trainable == 9 * 2 * 512 + 9 * (512 * 768 + 768) == 3_555_072  # MaPLe's 3.55 M for ViT-B/16
    deep = [c.weight for c in prompts.coupling[1:]]
    assert all(torch.equal(w, deep[0]) for w in deep) and not torch.equal(prompts.coupling[0].weight, deep[0])


def test_coupled_tokens_take_part_in_attention_even_when_the_couplings_are_zero(tiny_backbone):
    model = MaPLeModel(tiny_backbone, NAMES, MaPLeConfig(depth=2), seed=0)
    with torch.no_grad():
        for coupling in model.prompts.coupling:
            coupling.weight.zero_()
            coupling.bias.zero_()
        images = _images(tiny_backbone)
        prompted = model.encode_images(images)
        plain = F.normalize(tiny_backbone.model.visual(images), dim=-1)

    assert (prompted - plain).abs().max() > 1e-4  # the reference appends the tokens whatever their values


def test_more_prompted_layers_than_the_towers_have_or_more_tokens_than_words_are_refused(tiny_backbone):
    with pytest.raises(MaPLeError, match="maple.depth 3"):
        MaPLeModel(tiny_backbone, NAMES, MaPLeConfig(depth=3), seed=0)
    with pytest.raises(MaPLeError, match="maple.ctx_init 'a photo' has 2 tokens"):
        MaPLeModel(tiny_backbone, NAMES, MaPLeConfig(depth=1, n_ctx=3, ctx_init="a photo"), seed=0)


def test_it_trains_on_the_pooled_sources_without_reading_the_target(trained, mini_task):
    images = LabeledImages.concat(source_pools(mini_task))
    labels = torch.tensor(images.labels)
    initial = MaPLeModel(load_backbone(MINI), mini_task.class_names, QUICK, seed=1).prompts.state_dict()
    start = load_maple(load_backbone(MINI), mini_task.class_names,
                       {f"prompts.{k}": v for k, v in initial.items()}, QUICK)
    before = F.cross_entropy(start.logits_from_features(start.image_features(images)), labels).item()
    after = F.cross_entropy(trained.logits_from_features(trained.image_features(images)), labels).item()

    assert trained.steps == trained.total_steps == 3 * (len(images) // 8)
    assert after < 0.75 * before and trained.history[-1]["loss"] < 0.75 * trained.history[0]["loss"]
    assert trained.n_trainable == 2 * 2 * 64 + 2 * (64 * 64 + 64)


def test_the_learning_rate_follows_dassl_s_constant_warm_up_then_cosine_per_epoch(trained):
    lrs = [entry["lr"] for entry in trained.history]

    assert lrs == pytest.approx([1e-5, 0.01, 0.01 * 0.5 * (1 + 0.5)])  # cos(pi / 3) = 0.5


def test_it_uses_the_model_s_learned_logit_scale_and_leaves_the_backbone_unchanged(trained):
    plain = load_backbone(MINI)

    assert trained.model.logit_scale == pytest.approx(plain.model.logit_scale.exp().item())
    original = plain.model.state_dict()
    assert all(torch.equal(p, original[n]) for n, p in trained.model.backbone.model.state_dict().items())


def test_two_cpu_runs_are_bit_identical(trained, mini_task):
    again = train_maple(load_backbone(MINI), mini_task, QUICK, seed=1)

    assert all(torch.equal(again.state_dict()[n], t) for n, t in trained.state_dict().items())
    assert again.history == trained.history


def test_the_state_saved_as_safetensors_gives_identical_logits(trained, mini_task, tmp_path):
    images = validation_images(mini_task)[mini_task.sources[1]]
    save_file(trained.state_dict(), tmp_path / "state.safetensors")
    loaded = load_maple(load_backbone(MINI), mini_task.class_names, load_file(tmp_path / "state.safetensors"), QUICK)

    assert torch.equal(loaded.logits_from_features(loaded.image_features(images)),
                       trained.logits_from_features(trained.image_features(images)))
    batch = torch.stack([eval_transform(32)(images[i][0]) for i in range(3)])
    assert torch.equal(loaded.logits(batch), trained.logits(batch))


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(trained, mini_task, tmp_path):
    stopped = train_maple(load_backbone(MINI), mini_task, QUICK, seed=1, run_dir=tmp_path, stop_at_step=40)
    resumed = train_maple(load_backbone(MINI), mini_task, QUICK, seed=1, run_dir=tmp_path)

    assert stopped.steps == 40 and resumed.resumed_from == 40
    assert all(torch.equal(resumed.state_dict()[n], t) for n, t in trained.state_dict().items())
    assert resumed.history == trained.history


def test_on_vit_b_16_nine_layers_of_prompts_are_the_paper_s_3_55_m_parameters():
    backbone = load_backbone(BackboneSpec("ViT-B-16", None))
    model = MaPLeModel(backbone, NAMES, MaPLeConfig(), seed=0)
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 224, 224))

    assert model.prompts.n_trainable == 3_555_072 and logits.shape == (1, 3)
    assert model.prompts.coupling[0].weight.shape == (768, 512)
