"""CoOp: one prompt learned on all sources pooled, both CLIP encoders frozen (``docs/methods.md``, "CoOp")."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from guidg.citations import Citation
from guidg.evaluation import EvalConfig
from guidg.methods.interface import FitContext, Method, Predictor
from guidg.methods.text_heads import TextHeadPredictor
from guidg.model_selection import pooled_validation_images
from guidg.prompt_training import PromptConfig, train_prompt
from imagenet_dg.loading import LabeledImages

COOP_PAPER = Citation(
    "Zhou et al., Learning to Prompt for Vision-Language Models, IJCV 2022",
    "https://arxiv.org/abs/2109.01134", "https://github.com/KaiyangZhou/CoOp",
)


def fit_coop(context: FitContext) -> Predictor:
    """One prompt learned on the expert pools of all sources, its epoch selected on their validation images."""
    task = context.task
    result = train_prompt(
        context.backbone,
        task.class_names,
        LabeledImages.concat([task.expert[d] for d in task.sources]),
        pooled_validation_images(task),
        context.settings(PromptConfig),
        seed=context.seed,
        method="coop",
        num_workers=context.num_workers,
    )
    return TextHeadPredictor(
        result.text_features[None], context.settings(EvalConfig).batch_size, n_trainable=result.n_trainable,
        details={"best_epoch": result.best_epoch, "select_accuracy": result.best_accuracy,
                 "history": result.history, "text_encoding": result.text_encoding},
    )


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    return TextHeadPredictor.from_state(state, context.settings(EvalConfig).batch_size)


COOP = Method(
    name="coop",
    description="CoOp: one prompt learned on the pooled sources",
    citations=(COOP_PAPER,),
    sections=(PromptConfig,),
    trains="the M context vectors of one prompt",
    trainable_parameters="M x W (context vectors x text width)",
    selection="source-validation-epoch",
    fit=fit_coop,
    load=_load,
)
