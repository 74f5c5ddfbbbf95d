"""CoCoOp as a registered method: where it stands in the registry, its parameter count as the paper counts it,
and its predictions the same however many images are scored together (its run: ``test_baselines_registered.py``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from guidg.backbone import TINY_SPEC, load_backbone
from guidg.cocoop import CoCoOpConfig, CoCoOpResult, build_learner
from guidg.methods import METHODS, REGISTERED
from guidg.methods.cocoop import COCOOP, CoCoOpPredictor


def test_cocoop_is_registered_after_coop() -> None:
    names = [method.name for method in REGISTERED]
    assert METHODS["cocoop"] is COCOOP
    assert names.index("cocoop") == names.index("coop") + 1
    assert COCOOP.sections == (CoCoOpConfig,) and COCOOP.selection == "source-validation-epoch"


def test_n_trainable_counts_the_context_and_the_meta_net() -> None:
    backbone = load_backbone(TINY_SPEC)
    learner = build_learner(backbone, ["dog", "cat", "tree frog"], CoCoOpConfig(), seed=1)
    m, w, d = learner.prompts.n_ctx, backbone.text.width, backbone.embed_dim
    hidden = d // CoCoOpConfig().meta_reduction
    assert CoCoOpPredictor(CoCoOpResult(learner, backbone), 4).n_trainable == m * w + d * hidden + hidden + hidden * w + w


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_scoring_in_batches_gives_the_logits_of_all_images_at_once(batch_size: int) -> None:
    backbone = load_backbone(TINY_SPEC)
    names = ["goldfish", "great white shark", "tree frog", "dog", "ant"]
    learner = build_learner(backbone, names, CoCoOpConfig(eval_max_sequences=7), seed=2)
    features = F.normalize(torch.randn(10, backbone.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    trained = CoCoOpResult(learner, backbone)
    whole = trained.logits(features)
    batched = CoCoOpPredictor(trained, batch_size).logits(features)
    assert batched.shape == (10, len(names))
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-4)
    assert CoCoOpPredictor(trained, batch_size).logits(features[:0]).shape == (0, len(names))
