"""MaPLe: prompts in the first J layers of both CLIP encoders, the image prompts coupled to the text prompts, trained
on the pooled sources (``docs/methods.md``, "MaPLe"); its training is in :mod:`guidg.maple`.

The image encoder runs with the learned image prompts in place, so its features are the method's own: the
predictor's :meth:`~MaPLePredictor.image_encoder` is the prompted image tower of the backbone it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from guidg.backbone import Backbone
from guidg.citations import Citation
from guidg.maple import (
    MaPLeConfig,
    MaPLeResult,
    load_maple,
    prompted_image_features,
    train_maple,
)
from guidg.methods.interface import FitContext, Method, Predictor, RunShape
from guidg.pooled_training import training_details
from guidg.settings import MethodConfig

MAPLE_PAPER = Citation(
    "Khattak et al., MaPLe: Multi-modal Prompt Learning, CVPR 2023",
    "https://arxiv.org/abs/2210.03117", "https://github.com/muzairkhattak/multimodal-prompt-learning",
)


class MaPLePredictor(Predictor):
    """A trained MaPLe as the runner scores it: the prompted image tower, and ``exp(logit_scale) cos(f, T_c)``
    against the class text features of the prompted text tower."""

    changes_image_encoder = True

    def __init__(self, result: MaPLeResult, details: dict[str, Any] | None = None) -> None:
        self.result = result
        self.n_trainable = int(result.n_trainable)
        self.details = dict(details or {})

    def image_encoder(self, backbone: Backbone) -> Callable[[Tensor], Tensor]:
        """``backbone``'s image tower with the trained image prompts ``V_i = F_i(P_i)`` in place."""
        with torch.no_grad():
            prompts = [v.detach().to(backbone.device) for v in self.result.model.prompts.vision_prompts()]
        return lambda images: prompted_image_features(backbone, images, prompts)

    def logits(self, features: Tensor) -> Tensor:
        return self.result.logits_from_features(features)

    def state_dict(self) -> dict[str, Tensor]:
        """The prompts and couplings (``prompts.*``)."""
        return self.result.state_dict()


def fit_maple(context: FitContext) -> Predictor:
    """MaPLe's prompts trained on the expert pools of all sources; the last epoch is the result."""
    result = train_maple(context.backbone, context.task, context.settings(MaPLeConfig), seed=context.seed,
                         num_workers=context.num_workers, run_dir=context.run_dir)
    return MaPLePredictor(result, training_details(result, logit_scale=result.model.logit_scale))


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    return MaPLePredictor(load_maple(context.backbone, context.task.class_names, state,
                                     context.settings(MaPLeConfig)))


def check_maple(config: MethodConfig, shape: RunShape) -> Iterator[str]:
    """Prompts in ``maple.depth`` layers need a transformer image tower with that many layers, and a text tower
    too (checked again when the model is built)."""
    towers = shape.towers
    if towers is None:
        return
    depth = config.section(MaPLeConfig).depth
    if towers.vision is None:
        yield f"{MaPLeConfig.NAME}: MaPLe prompts a transformer image tower, and this model's is not one (a ResNet)"
    elif towers.text is not None and depth > min(towers.text, towers.vision):
        yield (f"{MaPLeConfig.NAME}.depth = {depth}: this model's towers have {towers.text} (text) and "
               f"{towers.vision} (image) layers; use at most {min(towers.text, towers.vision)}")


MAPLE = Method(
    name="maple",
    description="MaPLe: deep prompts in both encoders, the image prompts coupled to the text prompts",
    citations=(MAPLE_PAPER,),
    sections=(MaPLeConfig,),
    trains="text prompts in the first J layers and the linear maps coupling them to the image prompts",
    trainable_parameters="J x n x d_t + J x (d_t x d_v + d_v) (prompts and couplings)",
    selection="last-step",
    fit=fit_maple,
    load=_load,
    check=check_maple,
)
