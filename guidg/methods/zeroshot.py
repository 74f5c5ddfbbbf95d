"""Zero-shot CLIP: the text classifier of the class names, nothing trained (``docs/methods.md``, "Zero-shot CLIP").

``zeroshot`` uses the template set of its section (``zeroshot.templates``, "a photo of a {name}." by default);
``zeroshot-ensemble`` always the 80 ImageNet templates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from guidg.citations import Citation
from guidg.evaluation import EvalConfig
from guidg.methods.interface import FitContext, Method, Predictor
from guidg.methods.text_heads import TextHeadPredictor
from guidg.settings import OneOf, Section, setting
from guidg.zeroshot import TEMPLATE_SETS, zeroshot_classifier

CLIP = Citation(
    "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021",
    "https://arxiv.org/abs/2103.00020", "https://github.com/openai/CLIP",
)


@dataclass(frozen=True)
class ZeroShotConfig(Section):
    """Zero-shot CLIP's prompts."""

    NAME: ClassVar[str] = "zeroshot"

    templates: str = setting(
        "single", OneOf(tuple(TEMPLATE_SETS)),
        'single: "a photo of a {name}."; ensemble: the 80 ImageNet templates, averaged')


def _fit(templates: str | None) -> Callable[[FitContext], Predictor]:
    def fit(context: FitContext) -> Predictor:
        chosen = templates or context.settings(ZeroShotConfig).templates
        with torch.no_grad():
            classifier = zeroshot_classifier(context.backbone, context.task.class_names, chosen)
        return TextHeadPredictor(classifier.float().cpu()[None], context.settings(EvalConfig).batch_size,
                                 details={"templates": chosen})

    return fit


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    return TextHeadPredictor.from_state(state, context.settings(EvalConfig).batch_size)


ZEROSHOT = Method(
    name="zeroshot",
    description="CLIP zero-shot, templates from zeroshot.templates",
    citations=(CLIP,),
    sections=(ZeroShotConfig,),
    trains="nothing",
    trainable_parameters="0",
    selection="none",
    fit=_fit(None),
    load=_load,
)

ZEROSHOT_ENSEMBLE = Method(
    name="zeroshot-ensemble",
    description="CLIP zero-shot, 80 ImageNet templates",
    citations=(CLIP,),
    sections=(),
    trains="nothing",
    trainable_parameters="0",
    selection="none",
    fit=_fit("ensemble"),
    load=_load,
)
