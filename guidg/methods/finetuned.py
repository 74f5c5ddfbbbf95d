"""The fine-tuning bases alone: ERM (+WiSE-FT), UEO (+WiSE-FT) and CLIPood, one method per base of
:data:`guidg.bases.BASES` (``docs/methods.md``, "Fine-tuning bases").

The image encoder is fine-tuned on the sources' guide-pool samples against the single zero-shot classifier
("a photo of a {name}."), with the base's loss and weight averaging; the text side is not trained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from guidg.bases import BASES, Base
from guidg.evaluation import EvalConfig
from guidg.finetune import FinetuneConfig, finetune_image_encoder
from guidg.methods.interface import FitContext, Method, Predictor
from guidg.methods.text_heads import TextHeadPredictor
from guidg.zeroshot import zeroshot_classifier

ENCODER_PARAMETERS = "all image-encoder parameters"


def visual_parameters(context: FitContext) -> int:
    """Parameters of the image encoder (all of them are fine-tuned)."""
    return sum(p.numel() for p in context.backbone.model.visual.parameters())


def _fit(base: Base) -> Callable[[FitContext], Predictor]:
    def fit(context: FitContext) -> Predictor:
        task = context.task
        with torch.no_grad():
            classifier = zeroshot_classifier(context.backbone, task.class_names, "single").float()
        objective = base.objective(context.config)
        result = finetune_image_encoder(
            context.backbone,
            [task.guide[d] for d in task.sources],
            classifier[None],
            context.settings(FinetuneConfig),
            objective,
            seed=context.seed,
            method=base.name,
            run_dir=context.run_dir,
            num_workers=context.num_workers,
        )
        return TextHeadPredictor(
            classifier.cpu()[None], context.settings(EvalConfig).batch_size, visual_state=result.visual_state,
            n_trainable=visual_parameters(context),
            details={"history": result.history, "steps": result.steps,
                     "averaging": objective.describe_averaging()},
        )

    return fit


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    return TextHeadPredictor.from_state(state, context.settings(EvalConfig).batch_size)


def finetuned_method(base: Base) -> Method:
    """The method of ``base`` alone."""
    return Method(
        name=base.name,
        description=f"fine-tuned image encoder, {base.description}",
        citations=base.citations,
        sections=(FinetuneConfig, *base.sections),
        trains="the image encoder",
        trainable_parameters=ENCODER_PARAMETERS,
        selection="last-step",
        fit=_fit(base),
        load=_load,
    )


FINETUNED: Mapping[str, Method] = {name: finetuned_method(base) for name, base in BASES.items()}
"""The method of every base, by base name."""
