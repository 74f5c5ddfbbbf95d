"""CoCoOp: CoOp's context shifted for each image by a small Meta-Net of its feature, both CLIP encoders frozen
(``docs/methods.md``, "CoCoOp"); the training is in :mod:`guidg.cocoop`.

The image encoder is never changed, so the predictor is scored from the pretrained encoder's features (which
may come from the cache shared with other methods). Every image has its own class prompts: the predictor
scores ``eval.batch_size`` images at a time, and within them the text tower runs at most
``cocoop.eval_max_sequences`` prompts a pass, so memory stays bounded whatever the number of images or classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from guidg.citations import Citation
from guidg.cocoop import CoCoOpConfig, CoCoOpResult, load_cocoop, train_cocoop
from guidg.evaluation import EvalConfig
from guidg.methods.interface import FitContext, Method, Predictor

COCOOP_PAPER = Citation(
    "Zhou et al., Conditional Prompt Learning for Vision-Language Models, CVPR 2022",
    "https://arxiv.org/abs/2203.05557", "https://github.com/KaiyangZhou/CoOp",
)


class CoCoOpPredictor(Predictor):
    """A trained CoCoOp as the runner scores it: per-image prompts for the pretrained encoder's features."""

    def __init__(self, trained: CoCoOpResult, batch_size: int) -> None:
        self.trained = trained
        self.batch_size = batch_size
        """Images whose prompts are made together (the run's ``eval.batch_size``)."""
        self.n_trainable = trained.n_trainable
        record: dict[str, Any] = trained.record()
        record.pop("n_trainable")
        self.details = {**record, "phase_seconds": dict(trained.seconds)}

    def logits(self, features: Tensor) -> Tensor:
        parts = [self.trained.logits(features[start : start + self.batch_size]).cpu()
                 for start in range(0, len(features), self.batch_size)]
        if not parts:
            return torch.zeros(0, self.trained.learner.num_classes)
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Tensor]:
        return self.trained.state_dict()


def fit_cocoop(context: FitContext) -> Predictor:
    """The context and Meta-Net trained on the sources' training images pooled, the epoch selected on their
    validation images."""
    trained = train_cocoop(context.backbone, context.task, context.settings(CoCoOpConfig), seed=context.seed,
                           num_workers=context.num_workers)
    return CoCoOpPredictor(trained, context.settings(EvalConfig).batch_size)


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    trained = load_cocoop(context.backbone, context.task.class_names, context.settings(CoCoOpConfig), state)
    return CoCoOpPredictor(trained, context.settings(EvalConfig).batch_size)


COCOOP = Method(
    name="cocoop",
    description="CoCoOp: one prompt on the pooled sources, its context shifted per image by a Meta-Net",
    citations=(COCOOP_PAPER,),
    sections=(CoCoOpConfig,),
    trains="the M context vectors and the Meta-Net (two linear layers)",
    trainable_parameters="M x W + D x D/16 + D/16 + D/16 x W + W (context, Meta-Net weights and biases)",
    selection="source-validation-epoch",
    fit=fit_cocoop,
    load=_load,
)
