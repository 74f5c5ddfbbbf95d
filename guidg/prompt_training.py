"""Learning a CoOp prompt on frozen CLIP encoders (SPEC 6.1): GuiDG's domain experts and the CoOp baseline.

Only the context vectors are trained, by SGD on the cross-entropy of ``100 * cos(image, class text)``. The
checkpoint kept is the one with the best accuracy on a selection set (the guide pool), evaluated every
``eval_every`` epochs. Since the image encoder is frozen, the features of ``cached_views`` augmented views of
every training image are computed once and each epoch picks one view per image; ``cached_views = 0`` encodes
freshly augmented images at every step instead, as the reference code does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from imagenet_dg.loading import LabeledImages
from guidg.backbone import Backbone
from guidg.divergence import check_finite
from guidg.features import encode_views
from guidg.image_pipeline import describe_pipeline, eval_batch_size
from guidg.losses import LOGIT_SCALE
from guidg.presets import PromptConfig
from guidg.prompts import PromptLearner, choose_text_encoding
from guidg.schedule import cosine_lambda
from guidg.seeding import derive_seed, generator
from guidg.transforms import eval_transform, prompt_train_transform

logger = logging.getLogger(__name__)


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
    """Learn a prompt for ``class_names`` on ``train``; keep the context with the best accuracy on ``select``.

    With ``select`` None (or empty) the last context is kept. ``augment=False`` trains on evaluation-transformed
    images (then cached and uncached training see identical features and give identical results).
    """
    device = backbone.device
    learner = PromptLearner(
        backbone.text,
        backbone.tokenizer,
        class_names,
        n_ctx=config.n_ctx,
        init=config.ctx_init,
        class_position=config.class_position,
        generator=generator(seed, "context-init"),
        share_prefix=config.share_prefix,
    )
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

    optimizer = torch.optim.SGD(
        learner.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(config.schedule_steps, 0))
    best_context = learner.context_state()
    best_epoch, best_accuracy = config.epochs, None
    history: list[dict[str, float]] = []
    step = 0
    for epoch in tqdm(range(config.epochs), desc=method, unit="epoch", disable=None, leave=False):
        order = torch.randperm(len(train), generator=generator(seed, "epoch", epoch)).to(device)
        if cached is not None:
            view_of = torch.randint(cached.shape[1], (len(train),), generator=generator(seed, "views", epoch))
            view_of = view_of.to(device)
        losses = []
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
            loss = F.cross_entropy(logits, labels[batch])
            # The previous step's loss is checked, not this one's, so the device never waits for the host.
            if losses:
                check_finite(losses[-1], step - 1, method)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.detach())
        if losses:
            check_finite(losses[-1], step - 1, method)  # before the epoch's record and any selection
        record = {"epoch": epoch + 1, "loss": float(torch.stack(losses).mean()) if losses else float("nan")}
        last = epoch + 1 == config.epochs
        if select_features is not None and ((epoch + 1) % config.eval_every == 0 or last):
            with torch.no_grad(), backbone.autocast():
                text = learner().float()
            accuracy = _accuracy(select_features, select_labels, text)
            record["select_accuracy"] = accuracy
            if best_accuracy is None or accuracy > best_accuracy:
                best_accuracy, best_epoch, best_context = accuracy, epoch + 1, learner.context_state()
        elif select_features is None and last:
            best_context = learner.context_state()
        history.append(record)
        logger.debug("%s: epoch %d loss %.4f", method, epoch + 1, record["loss"])
    learner.load_context_state(best_context)
    with torch.no_grad(), backbone.autocast():
        text_features = learner().float().cpu()
    return PromptTrainingResult(
        best_context, text_features, learner.n_trainable, best_epoch, best_accuracy, history,
        text_encoding=text_encoding, pipeline=describe_pipeline(device),
    )
