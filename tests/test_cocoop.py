"""CoCoOp's model pieces against formulas written out by hand: the Meta-Net's shift of the context, the per-image
prompts, chunked text encoding, the reduction to CoOp, the parameter count and the configuration's checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from guidg.backbone import TINY_SPEC, Backbone, load_backbone
from guidg.cocoop import (
    CoCoOpConfig,
    CoCoOpError,
    ConditionalPrompts,
    MetaNet,
    chunk_plan,
)
from guidg.losses import LOGIT_SCALE
from guidg.prompts import PromptLearner
from guidg.settings import SettingError, section_settings
from guidg.shared_prefix import encode_shared_prefix

# Names of different token lengths (so the length groups of the shared prefix differ), none holding "x".
NAMES = ["goldfish", "great white shark", "tree frog", "hammerhead shark with long fins", "dog", "ant", "car"]
ENCODINGS = ("shared-prefix", "shared-prefix-padded", "cut")


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return load_backbone(TINY_SPEC)


def image_features(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def learner(tiny: Backbone, **options: object) -> ConditionalPrompts:
    options = {"seed": 1, **options}
    return ConditionalPrompts(tiny.text, tiny.tokenizer, NAMES, tiny.embed_dim, **options)


def scramble_context(prompts: ConditionalPrompts, seed: int = 5) -> None:
    """Give the context values unlike any word's embedding, so no test passes by the initialisation alone."""
    with torch.no_grad():
        prompts.prompts.ctx.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(seed))


def meta_net_by_hand(net: MetaNet, features: torch.Tensor) -> torch.Tensor:
    hidden = torch.clamp(features @ net.linear1.weight.T + net.linear1.bias, min=0.0)
    return hidden @ net.linear2.weight.T + net.linear2.bias


def hand_built_features(tiny: Backbone, texts: list[str], contexts: torch.Tensor, slots: list[int]) -> torch.Tensor:
    """Normalised features of 77-token prompts, the rows ``slots`` of prompt p replaced by ``contexts[p]``,
    computed with the open_clip model's own modules."""
    model = tiny.model
    tokens = tiny.tokenizer(texts)
    x = model.token_embedding(tokens).clone()
    for row in range(len(texts)):
        x[row, slots] = contexts[row]
    x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = x[torch.arange(len(texts)), tokens.argmax(dim=-1)] @ model.text_projection
    return F.normalize(x, dim=-1)


def test_every_context_vector_is_shifted_by_the_meta_net_of_its_image(tiny: Backbone) -> None:
    prompts = learner(tiny)
    scramble_context(prompts)
    features = image_features(3, tiny.embed_dim)
    with torch.no_grad():
        contexts = prompts.contexts(features)
        shift = meta_net_by_hand(prompts.meta_net, features)
    assert contexts.shape == (3, 4, tiny.text.width)
    for image in range(3):
        for m in range(4):
            torch.testing.assert_close(contexts[image, m], prompts.prompts.ctx[m] + shift[image], rtol=0, atol=1e-6)


def test_meta_net_is_linear_relu_linear_with_a_sixteenth_of_the_image_width(tiny: Backbone) -> None:
    net = learner(tiny).meta_net
    assert tuple(net.linear1.weight.shape) == (tiny.embed_dim // 16, tiny.embed_dim)
    assert tuple(net.linear2.weight.shape) == (tiny.text.width, tiny.embed_dim // 16)
    features = image_features(4, tiny.embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(net(features), meta_net_by_hand(net, features), rtol=0, atol=1e-6)


def test_meta_net_initialisation_follows_torch_linear_bounds_and_the_seed() -> None:
    net = MetaNet(256, 64, 16, torch.Generator().manual_seed(0)).requires_grad_(False)
    assert float(net.linear1.weight.abs().max()) <= 1 / math.sqrt(256)
    assert float(net.linear2.bias.abs().max()) <= 1 / math.sqrt(16)
    assert float(net.linear1.weight.std()) > 0.5 / math.sqrt(3 * 256)  # spread over the bounds, not constant
    again = MetaNet(256, 64, 16, torch.Generator().manual_seed(0))
    other = MetaNet(256, 64, 16, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(net.linear2.weight, other.linear2.weight)


def test_a_meta_net_narrower_than_one_unit_is_refused() -> None:
    with pytest.raises(CoCoOpError, match="meta_reduction 128"):
        MetaNet(64, 64, 128)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_image_gets_coop_prompts_with_its_shifted_context(tiny: Backbone, encoding: str) -> None:
    prompts = learner(tiny, text_encoding=encoding)
    scramble_context(prompts)
    assert prompts.text_encoding == encoding
    features = image_features(3, tiny.embed_dim)
    with torch.no_grad():
        text = prompts.text_features(features)
        shifted = prompts.prompts.ctx + meta_net_by_hand(prompts.meta_net, features)[:, None]  # (3, M, W)
        texts = [f"a photo of a {name}." for name in NAMES]
        for image in range(3):
            contexts = shifted[image].expand(len(NAMES), -1, -1)
            expected = hand_built_features(tiny, texts, contexts, [1, 2, 3, 4])
            torch.testing.assert_close(text[image], expected, rtol=0, atol=2e-6)


def test_the_name_in_the_middle_gets_the_shifted_context_around_it(tiny: Backbone) -> None:
    prompts = learner(tiny, init=None, n_ctx=4, class_position="middle")
    assert prompts.text_encoding == "cut"
    features = image_features(2, tiny.embed_dim)
    with torch.no_grad():
        text = prompts.text_features(features)
        shifted = prompts.prompts.ctx + meta_net_by_hand(prompts.meta_net, features)[:, None]
        for image in range(2):
            for row, name in enumerate(NAMES):
                slots = prompts.prompts.ctx_positions[row].tolist()
                expected = hand_built_features(tiny, [f"X X {name} X X."], shifted[image][None], slots)
                torch.testing.assert_close(text[image, row], expected[0], rtol=0, atol=2e-6)


def test_per_image_prompt_embeddings_are_the_learners_prompts_with_each_context(tiny: Backbone) -> None:
    coop = PromptLearner(tiny.text, tiny.tokenizer, NAMES, n_ctx=3, generator=torch.Generator().manual_seed(0))
    contexts = torch.randn(2, 3, tiny.text.width, generator=torch.Generator().manual_seed(1))
    batched = coop.prompt_embeddings(contexts)
    assert batched.shape == (2, len(NAMES), coop.cut_length, tiny.text.width)
    for image in range(2):
        assert torch.equal(batched[image], coop.prompt_embeddings(contexts[image]))
    assert torch.equal(coop.prompt_embeddings(coop.ctx), coop.prompt_embeddings())


def test_a_batch_of_shared_prefixes_gives_each_prefix_its_own_features(tiny: Backbone) -> None:
    coop = PromptLearner(tiny.text, tiny.tokenizer, NAMES, n_ctx=3, generator=torch.Generator().manual_seed(0))
    prefixes = torch.randn(3, 4, tiny.text.width, generator=torch.Generator().manual_seed(2)) * 0.05
    suffix = coop.token_embeddings[:, 4:]
    with torch.no_grad():
        batched = encode_shared_prefix(tiny.text, prefixes, suffix, coop.eos_positions)
        for g in range(3):
            alone = encode_shared_prefix(tiny.text, prefixes[g], suffix, coop.eos_positions)
            plain = tiny.text(torch.cat([prefixes[g].expand(len(NAMES), -1, -1), suffix], dim=1), coop.eos_positions)
            torch.testing.assert_close(batched[g], alone, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batched[g], plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("images", "classes", "bound"),
    [(5, 7, 1000), (5, 7, 14), (5, 7, 13), (5, 7, 7), (3, 7, 4), (2, 7, 1), (1, 345, 100)],
)
def test_chunk_plan_covers_every_prompt_once_within_the_bound(images: int, classes: int, bound: int) -> None:
    plan = chunk_plan(images, classes, bound)
    covered = []
    for first, end, ranges in plan:
        for start, stop in ranges:
            assert (end - first) * (stop - start) <= bound
            covered += [(i, c) for i in range(first, end) for c in range(start, stop)]
    assert sorted(covered) == [(i, c) for i in range(images) for c in range(classes)]
    assert len(covered) == len(set(covered))


def test_chunk_plan_uses_the_fewest_passes() -> None:
    assert len(chunk_plan(10, 7, 14)) == 5  # two images of all seven classes per pass
    assert [len(ranges) for _, _, ranges in chunk_plan(2, 345, 100)] == [4, 4]
    assert [stop - start for start, stop in chunk_plan(1, 345, 100)[0][2]] == [87, 87, 87, 84]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_chunked_encoding_equals_one_pass_of_all_prompts(tiny: Backbone, encoding: str) -> None:
    prompts = learner(tiny, text_encoding=encoding, eval_max_sequences=10_000)
    scramble_context(prompts)
    features = image_features(5, tiny.embed_dim)
    with torch.no_grad():
        whole = prompts.text_features(features)
    for bound in (14, 9, 4, 3, 1):  # several images per pass, one image, then slices of the classes
        prompts.eval_max_sequences = bound
        with torch.no_grad():
            chunked = prompts.text_features(features)
        # Equal up to float32 rounding (products of very few rows take other BLAS kernels), far below any
        # difference a misplaced image or class would make.
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_recomputed_passes_give_the_gradients_of_one_pass(tiny: Backbone, encoding: str) -> None:
    prompts = learner(tiny, text_encoding=encoding, max_sequences=10_000)
    scramble_context(prompts)
    features = image_features(2, tiny.embed_dim)
    labels = torch.tensor([1, 4])
    grads = []
    for bound in (10_000, 3):
        prompts.max_sequences = bound
        prompts.zero_grad(set_to_none=True)
        F.cross_entropy(prompts(features), labels).backward()
        grads.append([p.grad.clone() for p in prompts.parameters()])
    for one_pass, chunked in zip(*grads):
        torch.testing.assert_close(chunked, one_pass, rtol=1e-4, atol=1e-6)


def test_the_bound_of_a_pass_depends_on_whether_gradients_are_kept(tiny: Backbone) -> None:
    prompts = learner(tiny, max_sequences=3, eval_max_sequences=10_000)
    features = image_features(2, tiny.embed_dim)
    calls = []
    encode = prompts._encode

    def counted(contexts: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        calls.append((len(contexts), start, stop))
        return encode(contexts, start, stop)

    prompts._encode = counted
    with torch.no_grad():
        prompts(features)
    assert calls == [(2, 0, len(NAMES))]
    calls.clear()
    prompts(features)
    assert calls == [(1, 0, 3), (1, 3, 6), (1, 6, 7)] * 2


def test_logits_are_100_times_the_cosine_of_each_images_own_text_features(tiny: Backbone) -> None:
    prompts = learner(tiny)
    features = image_features(4, tiny.embed_dim)
    with torch.no_grad():
        logits = prompts(features)
        text = prompts.text_features(features)
    expected = torch.stack([LOGIT_SCALE * text[b] @ features[b] for b in range(4)])
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_with_a_zero_output_layer_cocoop_is_coop_with_the_same_context(tiny: Backbone, encoding: str) -> None:
    prompts = learner(tiny, text_encoding=encoding)
    scramble_context(prompts)
    with torch.no_grad():
        prompts.meta_net.linear2.weight.zero_()
        prompts.meta_net.linear2.bias.zero_()
        features = image_features(6, tiny.embed_dim)
        coop_text = prompts.prompts()  # CoOp's features of the same context
        torch.testing.assert_close(prompts(features), LOGIT_SCALE * features @ coop_text.T, rtol=0, atol=1e-4)


def test_trainable_parameters_are_the_context_and_the_meta_nets_weights_and_biases(tiny: Backbone) -> None:
    prompts = learner(tiny)
    m, width, dim, hidden = 4, tiny.text.width, tiny.embed_dim, tiny.embed_dim // 16
    assert prompts.n_trainable == m * width + (dim * hidden + hidden) + (hidden * width + width)
    assert sorted(name for name, _ in prompts.named_parameters()) == [
        "meta_net.linear1.bias", "meta_net.linear1.weight", "meta_net.linear2.bias", "meta_net.linear2.weight",
        "prompts.ctx",
    ]
    F.cross_entropy(prompts(image_features(1, dim)), torch.tensor([2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompts.parameters())
    assert all(p.grad is None for p in tiny.model.parameters())


def test_the_same_seed_draws_the_same_learner_and_another_seed_another(tiny: Backbone) -> None:
    first, again, other = (learner(tiny, init=None, seed=s).trained_state() for s in (3, 3, 4))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["ctx"], other["ctx"])
    assert not torch.equal(first["meta_net.linear1.weight"], other["meta_net.linear1.weight"])


def test_a_state_of_other_shapes_is_refused_naming_both(tiny: Backbone) -> None:
    state = learner(tiny).trained_state()
    state["ctx"] = torch.zeros(16, tiny.text.width)
    with pytest.raises(CoCoOpError, match=r"'ctx': \(4, 64\).*'ctx': \(16, 64\)"):
        learner(tiny).load_trained_state(state)


def test_every_default_is_one_of_its_allowed_values() -> None:
    config = CoCoOpConfig()
    for name, (_, default, declared) in section_settings(CoCoOpConfig).items():
        assert getattr(config, name) == default
        if declared.allowed is not None and default is not None:
            assert declared.allowed.problem(default) is None, name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "cocoop.lr = 0.0: expected a number > 0"),
        ({"momentum": 1.0}, r"cocoop.momentum = 1.0: expected a number in \[0, 1\)"),
        ({"batch_size": 0}, "cocoop.batch_size = 0: expected an integer >= 1"),
        ({"epochs": 2.5}, "cocoop.epochs = 2.5: expected an integer >= 1"),
        ({"max_sequences": True}, "cocoop.max_sequences = True"),
        ({"class_position": "start"}, "cocoop.class_position = start: expected one of end, middle, front"),
        ({"flip": 1}, "cocoop.flip = 1: expected true or false"),
        ({"crop_scale": (0.9, 0.5)}, r"cocoop.crop_scale = 0.9,0.5: expected .*low <= high"),
        ({"ctx_init": " "}, "cocoop.ctx_init = "),
        ({"warmup_epochs": 11}, r"cocoop: warmup_epochs \(11\) must be at most epochs \(10\)"),
    ],
)
def test_a_setting_outside_its_allowed_values_is_refused_naming_it(changes: dict, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        CoCoOpConfig(**changes)
