"""Learning a CoOp prompt on frozen CLIP encoders: GuiDG's domain experts and the CoOp baseline
(``docs/methods.md``, "CoOp" and "GuiDG").

Only the context vectors are trained, by SGD on the cross-entropy of ``100 * cos(image, class text)``. The
checkpoint kept is chosen by the ``source-validation-epoch`` rule of :mod:`guidg.model_selection`: the best
accuracy on the selection images (source data only), evaluated every ``eval_every`` epochs. Since the image encoder is frozen, the features of ``cached_views`` augmented views of
every training image are computed once and each epoch picks one view per image; ``cached_views = 0`` encodes
freshly augmented images at every step instead, as the reference code does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from imagenet_dg.loading import LabeledImages
from guidg.backbone import Backbone
from guidg.divergence import EpochSteps
from guidg.features import encode_views
from guidg.image_pipeline import describe_pipeline, eval_batch_size
from guidg.losses import LOGIT_SCALE
from guidg.model_selection import EpochSelection
from guidg.prompts import CLASS_POSITIONS, PromptLearner, choose_text_encoding
from guidg.schedule import cosine_lambda
from guidg.seeding import derive_seed, generator
from guidg.settings import OneOf, Ordered, Range, Section, Words, at_least, positive, setting
from guidg.transforms import eval_transform, prompt_train_transform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptConfig(Section):
    """CoOp prompt learning: GuiDG's step-1 experts and the CoOp baseline (``docs/methods.md``, "CoOp")."""

    NAME: ClassVar[str] = "prompt"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper-imagenet-dg-i": {"batch_size": 8},
        "smoke": {"n_ctx": 4, "lr": 2e-2, "batch_size": 16, "epochs": 10, "schedule_steps": 200, "eval_every": 5,
                  "cached_views": 2},
        "mini": {"n_ctx": 4, "ctx_init": "a photo of a", "lr": 2e-2, "batch_size": 32, "epochs": 10,
                 "schedule_steps": 100, "eval_every": 5, "cached_views": 2},
    }

    n_ctx: int = setting(16, at_least(1), "learnable context vectors M (ignored with ctx_init: its token count)")
    ctx_init: str | None = setting(
        None, Words(), 'words the context starts from, e.g. "a photo of a"; null draws N(0, 0.02^2)')
    class_position: str = setting("end", OneOf(CLASS_POSITIONS), "where the class name stands in the prompt")
    lr: float = setting(1e-4, positive(), "SGD learning rate")
    momentum: float = setting(0.0, Range(0.0, 1.0, open_high=True), "SGD momentum")
    weight_decay: float = setting(0.0, at_least(0.0), "SGD weight decay")
    batch_size: int = setting(32, at_least(1), "images per step")
    epochs: int = setting(31, at_least(1), "passes over the k-shot sample")
    schedule_steps: int = setting(
        31 * 400, at_least(1), "length of the cosine schedule in steps (the reference's 31 x 400 barely decays)")
    eval_every: int = setting(5, at_least(1), "epochs between selection evaluations (and after the last)")
    crop_scale: tuple[float, float] = setting(
        (0.7, 1.0), Ordered(Range(0.0, 1.0, open_low=True)), "RandomResizedCrop's area range")
    flip: bool = setting(True, None, "random horizontal flips")
    cached_views: int = setting(
        8, at_least(0), "augmented views per image encoded once (the encoder is frozen); 0 encodes every batch")
    share_prefix: bool = setting(
        True, None, "run the text tower on the class-independent prefix once (exact: attention is causal)")


@dataclass
class PromptTrainingResult:
    """A learned prompt: the selected context, the class text features it gives, and the training record."""

    context: dict[str, Tensor]
    text_features: Tensor
    """(C, D) L2-normalised, float32, on CPU."""
    n_trainable: int
    best_epoch: int
    best_accuracy: float | None
    """Accuracy in percent on the selection images of the kept context; None without selection images."""
    history: list[dict[str, float]] = field(default_factory=list)
    text_encoding: dict[str, Any] = field(default_factory=dict)
    """How the text tower ran the prompts and how that was chosen (:func:`guidg.prompts.choose_text_encoding`)."""
    pipeline: dict[str, Any] = field(default_factory=dict)
    """How images reached the image encoder (:func:`guidg.image_pipeline.describe_pipeline`)."""


def _labels(images: LabeledImages, device: torch.device) -> Tensor:
    return torch.tensor(images.labels, dtype=torch.long, device=device)


def _accuracy(features: Tensor, labels: Tensor, text: Tensor) -> float:
    if len(labels) == 0:
        return 0.0
    predictions = (features @ text.T).argmax(dim=-1)
    return 100.0 * float((predictions == labels).float().mean())  # percent, as every accuracy of the project


def new_prompt_learner(
    backbone: Backbone, class_names: Sequence[str], config: PromptConfig, seed: int, share_prefix: bool | None = None
) -> PromptLearner:
    """The prompt learner ``train_prompt`` starts from: ``config``'s context, initialised from ``seed``
    (``share_prefix`` None: as ``config`` says)."""
    return PromptLearner(
        backbone.text,
        backbone.tokenizer,
        class_names,
        n_ctx=config.n_ctx,
        init=config.ctx_init,
        class_position=config.class_position,
        generator=generator(seed, "context-init"),
        share_prefix=config.share_prefix if share_prefix is None else share_prefix,
    )


def prompt_optimizer(
    learner: PromptLearner, config: PromptConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD over the context and its cosine schedule of ``config.schedule_steps`` steps, stepped once a batch."""
    optimizer = torch.optim.SGD(
        learner.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(config.schedule_steps, 0))


def train_prompt(
    backbone: Backbone,
    class_names: Sequence[str],
    train: LabeledImages,
    select: LabeledImages | None,
    config: PromptConfig,
    *,
    seed: int,
    method: str,
    augment: bool = True,
    num_workers: int = 0,
) -> PromptTrainingResult:
    """Learn a prompt for ``class_names`` on ``train``; keep the context with the best accuracy on ``select``
    (:class:`~guidg.model_selection.EpochSelection`: the first best on ties).

    With ``select`` None (or empty) the last context is kept. ``augment=False`` trains on evaluation-transformed
    images (then cached and uncached training see identical features and give identical results).
    """
    device = backbone.device
    learner = new_prompt_learner(backbone, class_names, config, seed)
    # The fastest way to run the prompts on this device (rule on CPU, quick measurement on a GPU).
    text_encoding = choose_text_encoding(learner, config.share_prefix, backbone.autocast)
    train_transform = (
        prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
        if augment
        else eval_transform(backbone.image_size)
    )
    labels = _labels(train, device)
    cached = None
    if config.cached_views > 0:
        # Large batches: the views are encoded once, with the same pipeline as evaluation.
        cached = encode_views(
            backbone, train, train_transform, views=config.cached_views, seed=seed,
            batch_size=eval_batch_size(device), num_workers=num_workers,
        )
    select_features = select_labels = None
    if select is not None and len(select) > 0:
        select_features = encode_views(
            backbone, select, eval_transform(backbone.image_size), batch_size=eval_batch_size(device),
            num_workers=num_workers,
        )[:, 0]
        select_labels = _labels(select, device)

    optimizer, scheduler = prompt_optimizer(learner, config)
    selection = EpochSelection(config.epochs, config.eval_every)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in tqdm(range(config.epochs), desc=method, unit="epoch", disable=None, leave=False):
        order = torch.randperm(len(train), generator=generator(seed, "epoch", epoch)).to(device)
        if cached is not None:
            view_of = torch.randint(cached.shape[1], (len(train),), generator=generator(seed, "views", epoch))
            view_of = view_of.to(device)
        steps = EpochSteps(method, step)
        for start in range(0, len(train), config.batch_size):
            batch = order[start : start + config.batch_size]
            if cached is not None:
                features = cached[batch, view_of[batch]]
            else:
                features = encode_views(
                    backbone,
                    train.select(batch.tolist()),
                    train_transform,
                    seed=derive_seed(seed, "augment", epoch, start),
                    batch_size=config.batch_size,
                    num_workers=num_workers,
                )[:, 0]
            with backbone.autocast():
                text = learner()
            logits = LOGIT_SCALE * features @ text.float().T
            steps.take(F.cross_entropy(logits, labels[batch]), optimizer, scheduler)
        step = steps.step
        record = {"epoch": epoch + 1, "loss": steps.finish()}  # checked before the record and any selection
        if select_features is not None and selection.evaluates(epoch + 1):
            with torch.no_grad(), backbone.autocast():
                text = learner().float()
            accuracy = _accuracy(select_features, select_labels, text)
            record["select_accuracy"] = accuracy
            selection.offer(epoch + 1, accuracy, learner.context_state)
        elif select_features is None and epoch + 1 == config.epochs:
            selection.keep_last(epoch + 1, learner.context_state())
        history.append(record)
        logger.debug("%s: epoch %d loss %.4f", method, epoch + 1, record["loss"])
    best_context = selection.best_state
    learner.load_context_state(best_context)
    with torch.no_grad(), backbone.autocast():
        text_features = learner().float().cpu()
    return PromptTrainingResult(
        best_context, text_features, learner.n_trainable, selection.best_epoch, selection.best_accuracy, history,
        text_encoding=text_encoding, pipeline=describe_pipeline(device),
    )
