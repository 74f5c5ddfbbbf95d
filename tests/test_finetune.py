"""Fine-tuning the image encoder (GuiDG step 2 and the baselines): loss, guidance, resumption, safeguards."""

from __future__ import annotations

import pytest
import torch

import guidg.finetune as finetune_module
from guidg.averaging import wise_ft
from guidg.bases import get_base
from guidg.checkpoints import CheckpointError
from guidg.divergence import TrainingDivergedError
from guidg.finetune import FinetuneConfig, StepSampler, finetune_image_encoder
from guidg.methods.guidg import GuidgConfig, new_cmattn
from guidg.presets import get_preset
from guidg.zeroshot import zeroshot_classifier

SHORT = FinetuneConfig(batch_per_domain=4, lr=3e-3, weight_decay=0.0, epochs=2, steps_per_epoch=4, checkpoint_every=3)


def objective(base: str, **wise_ft):
    """The loss and averaging of ``base`` at the paper's settings (WiSE-FT's changed by ``wise_ft``)."""
    return get_base(base).objective(get_preset("paper").replace(wise_ft=wise_ft))


def guided(heads, seed: int, **changes):
    """GuiDG's fine-tuning arguments: the base's objective and a CMAttn for ``heads``."""
    return dict(cmattn=new_cmattn(heads, GuidgConfig(**changes), seed), seed=seed)


def pools(task):
    return [task.guide[d] for d in task.sources]


def random_heads(task, backbone, experts: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    heads = torch.randn(experts, len(task.class_ids), backbone.embed_dim, generator=generator)
    return torch.nn.functional.normalize(heads, dim=-1)


def visual_state(backbone) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.model.visual.state_dict().items()}


def test_guided_finetuning_reduces_the_training_loss(mini_task, tiny_backbone) -> None:
    config = get_preset("smoke").finetune
    heads = random_heads(mini_task, tiny_backbone)
    result = finetune_image_encoder(
        tiny_backbone, pools(mini_task), heads, config, objective("erm"), method="guidg+erm", **guided(heads, 1)
    )
    losses = [h["loss"] for h in result.history]
    assert len(losses) == config.epochs and losses[-1] < losses[0]
    assert result.steps == config.epochs * config.steps_per_epoch
    weights = result.history[-1]["weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-3)


def test_each_step_draws_the_same_images_from_every_domain(mini_task) -> None:
    sampler = StepSampler([10, 20, 5], per_domain=4, seed=1, total=3)
    steps = list(sampler)
    assert len(steps) == 3 and all(len(items) == 12 for items in steps)
    assert [item.domain for item in steps[0]] == [0] * 4 + [1] * 4 + [2] * 4
    assert sampler.items(1) == steps[1]
    resumed = list(StepSampler([10, 20, 5], per_domain=4, seed=1, total=3, start=1))
    assert resumed == steps[1:]


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(mini_task, tmp_path, monkeypatch) -> None:
    from guidg.backbone import TINY_SPEC, load_backbone

    def fresh():
        return load_backbone(TINY_SPEC)

    heads = random_heads(mini_task, fresh())

    def arguments():
        return dict(objective=objective("clipood"), method="guidg+clipood", **guided(heads, 4))

    straight = finetune_image_encoder(fresh(), pools(mini_task), heads, SHORT, **arguments())

    real_loss = finetune_module.guided_loss
    calls = {"n": 0}

    def failing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # after the checkpoint of step 3, before step 6 completes
            raise RuntimeError("power cut")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "guided_loss", failing_loss)
    with pytest.raises(RuntimeError, match="power cut"):
        finetune_image_encoder(fresh(), pools(mini_task), heads, SHORT, run_dir=tmp_path, **arguments())
    monkeypatch.setattr(finetune_module, "guided_loss", real_loss)
    resumed = finetune_image_encoder(fresh(), pools(mini_task), heads, SHORT, run_dir=tmp_path, **arguments())

    assert resumed.resumed_from == 3
    for name, tensor in straight.visual_state.items():
        assert torch.equal(resumed.visual_state[name], tensor), name
    for name, tensor in straight.cmattn_state.items():
        assert torch.equal(resumed.cmattn_state[name], tensor), name


def test_a_checkpoint_of_another_run_is_refused(mini_task, tiny_backbone, tmp_path) -> None:
    heads = random_heads(mini_task, tiny_backbone, 1)
    finetune_image_encoder(
        tiny_backbone, pools(mini_task), heads, SHORT, objective("erm"), seed=1, method="erm",
        run_dir=tmp_path, stop_at_step=2,
    )
    with pytest.raises(CheckpointError, match="another run"):
        finetune_image_encoder(
            tiny_backbone, pools(mini_task), heads, SHORT, objective("erm"), seed=2, method="erm", run_dir=tmp_path,
        )


def test_a_non_finite_loss_stops_the_run_naming_step_and_method(mini_task, tiny_backbone) -> None:
    heads = random_heads(mini_task, tiny_backbone)
    heads[1, 0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"guidg\+ueo.*step 0"):
        finetune_image_encoder(
            tiny_backbone, pools(mini_task), heads, SHORT, objective("ueo"), method="guidg+ueo", **guided(heads, 1)
        )


def test_wise_ft_at_alpha_zero_returns_the_pretrained_encoder(mini_task, tiny_backbone) -> None:
    pretrained = visual_state(tiny_backbone)
    result = finetune_image_encoder(
        tiny_backbone, pools(mini_task), random_heads(mini_task, tiny_backbone, 1), SHORT,
        objective("erm", alpha=0.0), seed=1, method="erm",
    )
    for name, tensor in pretrained.items():
        assert torch.equal(result.visual_state[name], tensor), name
    assert torch.equal(visual_state(tiny_backbone)["conv1.weight"], pretrained["conv1.weight"])


def test_wise_ft_at_the_end_interpolates_the_final_weights(mini_task, tiny_backbone) -> None:
    pretrained = visual_state(tiny_backbone)
    heads = random_heads(mini_task, tiny_backbone, 1)
    full = finetune_image_encoder(
        tiny_backbone, pools(mini_task), heads, SHORT, objective("erm", alpha=1.0), seed=1, method="erm",
    )
    tiny_backbone.model.visual.load_state_dict(pretrained)
    half = finetune_image_encoder(tiny_backbone, pools(mini_task), heads, SHORT, objective("erm"), seed=1, method="erm")
    expected = wise_ft(pretrained, full.visual_state, 0.5)
    for name, tensor in expected.items():
        torch.testing.assert_close(half.visual_state[name], tensor)


def test_per_epoch_wise_ft_differs_from_interpolating_once(mini_task, tiny_backbone) -> None:
    pretrained = visual_state(tiny_backbone)
    heads = random_heads(mini_task, tiny_backbone, 1)
    once = finetune_image_encoder(tiny_backbone, pools(mini_task), heads, SHORT, objective("erm"), seed=1, method="erm")
    tiny_backbone.model.visual.load_state_dict(pretrained)
    per_epoch = finetune_image_encoder(tiny_backbone, pools(mini_task), heads, SHORT, objective("erm", mode="per-epoch"),
                                       seed=1, method="erm")
    assert not torch.allclose(once.visual_state["conv1.weight"], per_epoch.visual_state["conv1.weight"])


def test_unguided_runs_take_exactly_one_head(mini_task, tiny_backbone) -> None:
    from imagenet_dg.errors import ImageNetDGError

    with pytest.raises(ImageNetDGError, match="one classifier head"):
        finetune_image_encoder(
            tiny_backbone, pools(mini_task), random_heads(mini_task, tiny_backbone, 2), SHORT, objective("erm"),
            seed=1, method="erm",
        )


def test_zero_shot_heads_are_the_baselines_starting_point(mini_task, tiny_backbone) -> None:
    classifier = zeroshot_classifier(tiny_backbone, mini_task.class_names)
    result = finetune_image_encoder(
        tiny_backbone, pools(mini_task), classifier[None], SHORT, objective("clipood"), seed=1, method="clipood"
    )
    assert result.cmattn_state is None and result.steps == 8
