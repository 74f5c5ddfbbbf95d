"""CoOp prompt learner (docs/methods.md, "CoOp"): prompt layout, cut-sequence exactness, initialisation, what is trained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from guidg.backbone import TINY_SPEC, Backbone, load_backbone
from guidg.prompts import PromptError, PromptLearner

# Names of different token lengths, none containing the placeholder word "x".
CLASS_NAMES = ["goldfish", "great white shark", "tree frog", "hammerhead shark with long fins"]


@pytest.fixture()
def tiny() -> Backbone:
    return load_backbone(TINY_SPEC)


def learner(tiny: Backbone, seed: int = 0, **options: object) -> PromptLearner:
    return PromptLearner(
        tiny.text, tiny.tokenizer, CLASS_NAMES, generator=torch.Generator().manual_seed(seed), **options
    )


def full_length_features(tiny: Backbone, prompt_texts: list[str], ctx: torch.Tensor, slots: list[list[int]]):
    """Text features of 77-token prompts computed directly with the open_clip model's modules."""
    model = tiny.model
    tokens = tiny.tokenizer(prompt_texts)
    assert tokens.shape[1] == 77
    x = model.token_embedding(tokens)
    for row, positions in enumerate(slots):
        x[row, positions] = ctx
    x = x + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = x[torch.arange(len(prompt_texts)), tokens.argmax(dim=-1)] @ model.text_projection
    return F.normalize(x, dim=-1)


def name_length(tiny: Backbone, name: str) -> int:
    return int(tiny.tokenizer([name]).argmax(dim=-1)) - 1


def test_features_of_cut_prompts_equal_the_full_77_token_computation(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=4)
    texts = [f"X X X X {name}." for name in CLASS_NAMES]
    with torch.no_grad():
        features = prompts()
        expected = full_length_features(tiny, texts, prompts.ctx, [[1, 2, 3, 4]] * len(CLASS_NAMES))
    assert prompts.cut_length == int(tiny.tokenizer(texts).argmax(dim=-1).max()) + 1 < 77
    assert features.shape == (len(CLASS_NAMES), 64)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(len(CLASS_NAMES)))
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_middle_position_features_equal_the_full_77_token_computation(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=4, class_position="middle")
    texts = [f"X X {name} X X." for name in CLASS_NAMES]
    slots = [[1, 2, 3 + name_length(tiny, name), 4 + name_length(tiny, name)] for name in CLASS_NAMES]
    with torch.no_grad():
        torch.testing.assert_close(prompts(), full_length_features(tiny, texts, prompts.ctx, slots), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("position", "text_of"),
    [
        ("end", lambda name: f"X X X X X {name}."),
        ("middle", lambda name: f"X X {name} X X X."),
        ("front", lambda name: f"{name} X X X X X."),
    ],
)
def test_class_position_orders_the_tokens(tiny: Backbone, position: str, text_of) -> None:
    prompts = learner(tiny, n_ctx=5, class_position=position)
    expected = tiny.tokenizer([text_of(name) for name in CLASS_NAMES])[:, : prompts.cut_length]
    assert torch.equal(prompts.token_ids, expected)
    placeholder = int(tiny.tokenizer(["X"])[0, 1])
    for row in range(len(CLASS_NAMES)):
        assert prompts.ctx_positions[row].tolist() == torch.nonzero(expected[row] == placeholder).flatten().tolist()


def test_middle_position_splits_the_context_around_the_name(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=5, class_position="middle")
    length = name_length(tiny, "great white shark")
    assert prompts.ctx_positions[1].tolist() == [1, 2, 3 + length, 4 + length, 5 + length]


def test_front_position_puts_the_name_right_after_sos(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=3, class_position="front")
    length = name_length(tiny, "tree frog")
    assert prompts.ctx_positions[2].tolist() == [1 + length, 2 + length, 3 + length]
    assert torch.equal(prompts.token_ids[2, 1 : 1 + length], tiny.tokenizer(["tree frog"])[0, 1 : 1 + length])


def test_eos_positions_point_at_the_end_token(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=16)
    eot = tiny.tokenizer.eot_token_id
    assert all(prompts.token_ids[row, pos] == eot for row, pos in enumerate(prompts.eos_positions.tolist()))
    assert prompts.token_ids.shape[1] == prompts.cut_length == int(prompts.eos_positions.max()) + 1


def test_init_from_words_reproduces_the_plain_text_prompt(tiny: Backbone) -> None:
    prompts = learner(tiny, init="a photo of a")
    plain = tiny.tokenizer([f"a photo of a {name}." for name in CLASS_NAMES])
    assert prompts.n_ctx == 4
    assert torch.equal(prompts.token_ids, plain[:, : prompts.cut_length])
    with torch.no_grad():
        expected = F.normalize(tiny.model.encode_text(plain), dim=-1)
        torch.testing.assert_close(prompts(), expected, atol=1e-5, rtol=0)


def test_gradients_reach_only_the_context(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=4)
    assert [name for name, _ in prompts.named_parameters()] == ["ctx"]
    assert prompts.n_trainable == 4 * 64
    (prompts() ** 3).sum().backward()
    assert prompts.ctx.grad is not None and prompts.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())


def test_freezing_the_text_tower_leaves_the_image_tower_trainable(tiny: Backbone) -> None:
    learner(tiny)
    assert not any(p.requires_grad for p in tiny.text.parameters())
    assert all(p.requires_grad for p in tiny.model.visual.parameters())


def test_context_is_fp32_and_initialised_with_std_0_02(tiny: Backbone) -> None:
    prompts = learner(tiny, n_ctx=16)
    assert prompts.ctx.dtype == torch.float32 and prompts.ctx.shape == (16, 64)
    ctx = prompts.ctx.detach()
    assert abs(float(ctx.std()) - 0.02) < 0.002
    assert abs(float(ctx.mean())) < 0.002


def test_same_generator_seed_gives_the_same_context(tiny: Backbone) -> None:
    assert torch.equal(learner(tiny, seed=3).ctx, learner(tiny, seed=3).ctx)
    assert not torch.equal(learner(tiny, seed=3).ctx, learner(tiny, seed=4).ctx)


def test_context_state_round_trips(tiny: Backbone) -> None:
    source, target = learner(tiny, seed=1), learner(tiny, seed=2)
    state = source.context_state()
    assert set(state) == {"ctx"} and state["ctx"].device.type == "cpu"
    target.load_context_state(state)
    with torch.no_grad():
        assert torch.equal(target(), source())


def test_context_state_of_another_size_is_refused(tiny: Backbone) -> None:
    with pytest.raises(PromptError, match=r"\(16, 64\)"):
        learner(tiny).load_context_state({"ctx": torch.zeros(4, 64)})


def test_unknown_class_position_is_refused(tiny: Backbone) -> None:
    with pytest.raises(PromptError, match="class_position"):
        learner(tiny, class_position="back")


def test_prompt_longer_than_the_context_length_is_refused(tiny: Backbone) -> None:
    with pytest.raises(PromptError, match="at most 77"):
        PromptLearner(tiny.text, tiny.tokenizer, ["dog " * 70], n_ctx=16)


@pytest.mark.parametrize("encoding", ["full", "cut", "shared-prefix", "shared-prefix-padded"])
def test_every_text_encoding_computes_the_same_features(tiny: Backbone, encoding: str) -> None:
    names = ["dog", "guitar player", "house", "person of interest", "elephant"]

    def build(name: str) -> PromptLearner:
        return PromptLearner(
            tiny.text, tiny.tokenizer, names, generator=torch.Generator().manual_seed(0), text_encoding=name
        )

    reference = build("full")()
    chosen = build(encoding)
    assert chosen.text_encoding == encoding
    torch.testing.assert_close(chosen(), reference, rtol=1e-5, atol=1e-5)


def test_a_shared_encoding_on_prompts_without_a_common_prefix_runs_cut(tiny: Backbone) -> None:
    assert learner(tiny, class_position="front", text_encoding="shared-prefix-padded").text_encoding == "cut"


def test_the_cpu_rule_chooses_the_grouped_shared_prefix_and_says_so(tiny: Backbone) -> None:
    from guidg.prompts import choose_text_encoding

    chosen = learner(tiny, text_encoding="full")
    assert choose_text_encoding(chosen) == {"text_encoding": "shared-prefix", "chosen_by": "rule (cpu)"}
    assert chosen.text_encoding == "shared-prefix"
    assert choose_text_encoding(chosen, share_prefix=False)["text_encoding"] == "cut"


def test_without_a_rule_the_fastest_measured_encoding_is_kept_and_recorded(tiny: Backbone, monkeypatch) -> None:
    import guidg.prompts as prompts

    monkeypatch.setattr(prompts, "DEVICE_RULES", {})
    chosen = learner(tiny)
    before = chosen.ctx.detach().clone()
    record = prompts.choose_text_encoding(chosen)
    assert record["chosen_by"] == "measured (cpu)"
    assert set(record["seconds"]) == set(prompts.MEASURED_CANDIDATES)
    assert record["text_encoding"] == min(record["seconds"], key=record["seconds"].__getitem__)
    assert chosen.text_encoding == record["text_encoding"]
    assert torch.equal(chosen.ctx, before) and chosen.ctx.grad is None  # timing leaves the learner as it was
