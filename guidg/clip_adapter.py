"""CLIP-Adapter: a residual bottleneck MLP on frozen CLIP image features, classified by the zero-shot text head.

Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters", IJCV 2023 (arXiv 2110.04544);
reference code https://github.com/gaopengcuhk/CLIP-Adapter (``clip_adapter.py``, a Dassl trainer run with
CoOp's configurations). With f the normalised image feature and W the zero-shot text classifier (C x D,
"a photo of a {name}."):

    A(f) = ReLU(ReLU(f W1) W2)          W1: D x D/4, W2: D/4 x D, no biases
    f'   = r A(f) + (1 - r) f,  normalised
    logits = 100 f' W^T                 r = 0.2

The reference applies the adapter to the unnormalised feature g = |g| f and normalises afterwards; A has no
bias and ReLU is positively homogeneous, so r A(g) + (1 - r) g = |g| (r A(f) + (1 - r) f) and both give the
same f'. Trained: W1 and W2 (2 D^2 / 4 parameters), by cross-entropy, the encoders frozen.

Optimisation as the reference runs it (CoOp's ``configs/trainers/CoOp/vit_b16.yaml`` on Dassl's defaults): SGD,
lr 0.002, momentum 0.9, weight decay 5e-4, batch 32 with the last incomplete batch dropped, 200 epochs, one
warm-up epoch at a constant 1e-5, then cosine per epoch; RandomResizedCrop (scale 0.08 to 1, Dassl's
default) and horizontal flip; the last epoch's adapter is kept (Dassl's ``TEST.FINAL_MODEL = last_step``).
CoOp trains ImageNet with its ``*_ep50.yaml`` configurations instead (50 epochs); ``epochs = 50`` reproduces
that. The augmented views are encoded once (``cached_views``, see :mod:`guidg.feature_training`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from guidg.backbone import Backbone
from guidg.divergence import EpochSteps, check_finite_outputs
from guidg.evaluation import accuracy
from guidg.feature_training import (
    CHECKPOINTS,
    FeatureMethodError,
    FeaturePredictor,
    PhaseClock,
    TrainingViews,
    epoch_batches,
    evaluation_features,
    labels_of,
    require_tensors,
    seeded_module,
    source_data,
    to_cpu_state,
)
from guidg.losses import LOGIT_SCALE
from guidg.settings import OneOf, Ordered, Range, Section, at_least, positive, setting
from guidg.transforms import eval_transform, prompt_train_transform
from guidg.zeroshot import zeroshot_classifier
from imagenet_dg.loading import TaskData

logger = logging.getLogger(__name__)

NAME = "clip-adapter"

@dataclass(frozen=True)
class ClipAdapterConfig(Section):
    """CLIP-Adapter's settings, with the defaults of the reference code and CoOp's configuration it runs with."""

    NAME: ClassVar[str] = "clip_adapter"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"epochs": 2, "cached_views": 1, "lr": 0.05},
        "mini": {"epochs": 6, "cached_views": 2, "lr": 0.05},
    }

    ratio: float = setting(0.2, Range(0.0, 1.0), "residual ratio r: the weight of the adapted feature")
    reduction: int = setting(4, at_least(1), "bottleneck reduction: the hidden width is D // reduction (at most D)")
    lr: float = setting(2e-3, positive(), "SGD learning rate after warm-up")
    momentum: float = setting(0.9, Range(0.0, 1.0, open_high=True), "SGD momentum")
    weight_decay: float = setting(5e-4, at_least(0.0), "SGD weight decay")
    batch_size: int = setting(32, at_least(1), "images per step")
    epochs: int = setting(200, at_least(1), "passes over the training shots (CoOp's configuration; 50 on ImageNet)")
    warmup_epochs: int = setting(1, at_least(0), "epochs at the constant warmup_lr before the cosine schedule")
    warmup_lr: float = setting(1e-5, positive(), "learning rate of the warm-up epochs")
    crop_scale: tuple[float, float] = setting(
        (0.08, 1.0), Ordered(Range(0.0, 1.0, open_low=True)), "RandomResizedCrop's area range")
    flip: bool = setting(True, None, "random horizontal flips")
    cached_views: int = setting(
        8, at_least(0), "augmented views per training image encoded once (0: every batch afresh, as the reference)")
    checkpoint: str = setting(
        "last", OneOf(CHECKPOINTS), "the adapter kept: the last epoch's (the reference) or the best on source "
        "validation (ties: the earliest)")

    def relations(self) -> Iterator[str]:
        if self.warmup_epochs > self.epochs:
            yield f"warmup_epochs ({self.warmup_epochs}) must be at most epochs ({self.epochs})"


def epoch_lr(config: ClipAdapterConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (from 0): ``warmup_lr`` during warm-up, then
    ``lr * (1 + cos(pi * (epoch - warmup_epochs) / epochs)) / 2``, Dassl's constant warm-up before a cosine
    stepped once per epoch over ``epochs``."""
    if epoch < config.warmup_epochs:
        return config.warmup_lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - config.warmup_epochs) / config.epochs))


class Adapter(nn.Module):
    """A(f) = ReLU(ReLU(f W1) W2): D -> D // reduction -> D, no biases."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        if not 1 <= reduction <= dim:
            raise FeatureMethodError(f"an adapter of width {dim} needs 1 <= reduction <= {dim}, got {reduction}")
        self.down = nn.Linear(dim, dim // reduction, bias=False)
        self.up = nn.Linear(dim // reduction, dim, bias=False)

    def forward(self, features: Tensor) -> Tensor:
        return F.relu(self.up(F.relu(self.down(features))))


def adapted_features(features: Tensor, adapter: nn.Module, ratio: float) -> Tensor:
    """``normalise(ratio * A(f) + (1 - ratio) * f)`` for image features f (N, D)."""
    return F.normalize(ratio * adapter(features) + (1.0 - ratio) * features, dim=-1)


class ClipAdapter(nn.Module):
    """The adapter and the frozen text classifier: ``forward(f) = 100 * adapted(f) W^T``."""

    def __init__(self, classifier: Tensor, ratio: float, reduction: int) -> None:
        super().__init__()
        if classifier.ndim != 2:
            raise FeatureMethodError(f"a text classifier must be (C, D); got {tuple(classifier.shape)}")
        self.adapter = Adapter(classifier.shape[1], reduction)
        self.register_buffer("classifier", F.normalize(classifier.float(), dim=-1))
        self.ratio = float(ratio)

    def forward(self, features: Tensor) -> Tensor:
        return LOGIT_SCALE * adapted_features(features.float(), self.adapter, self.ratio) @ self.classifier.T


@dataclass
class TrainedClipAdapter(FeaturePredictor):
    """A trained CLIP-Adapter: logits of image features, its state and how it was trained."""

    model: ClipAdapter
    """On CPU, in eval mode."""
    record: dict[str, Any] = field(default_factory=dict)

    name = NAME

    @property
    def n_trainable(self) -> int:
        """W1 and W2: 2 D^2 / reduction."""
        return sum(p.numel() for p in self.model.adapter.parameters())

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of normalised image features (N, D)."""
        model = self.model.to(features.device).eval()
        return check_finite_outputs(model(features), "logits")

    def state_dict(self) -> dict[str, Tensor]:
        """``adapter.down.weight``, ``adapter.up.weight``, ``classifier`` and ``ratio`` (a float64 scalar)."""
        state = {f"adapter.{k}": v for k, v in self.model.adapter.state_dict().items()}
        state["classifier"] = self.model.classifier
        state["ratio"] = torch.tensor(self.model.ratio, dtype=torch.float64)
        return to_cpu_state(state)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], record: dict[str, Any] | None = None) -> TrainedClipAdapter:
        """The adapter saved by :meth:`state_dict`."""
        names = ("adapter.down.weight", "adapter.up.weight", "classifier", "ratio")
        require_tensors(state, names, NAME)
        classifier, down = state["classifier"], state["adapter.down.weight"]
        if classifier.ndim != 2 or down.ndim != 2 or down.shape[1] != classifier.shape[1] or down.shape[0] < 1:
            raise FeatureMethodError(
                f"a {NAME} state needs classifier (C, D) and adapter.down.weight (D // reduction, D); got "
                f"{tuple(classifier.shape)} and {tuple(down.shape)}"
            )
        model = ClipAdapter(classifier, float(state["ratio"]), classifier.shape[1] // down.shape[0])
        # The saved classifier is already normalised: it is put back as it was, not normalised again.
        model.load_state_dict({"adapter.down.weight": down, "adapter.up.weight": state["adapter.up.weight"],
                               "classifier": classifier.float()})
        return cls(model.eval(), dict(record or {}))


def train_clip_adapter(
    backbone: Backbone,
    task: TaskData,
    config: ClipAdapterConfig,
    *,
    seed: int,
    num_workers: int = 0,
    augment: bool = True,
) -> TrainedClipAdapter:
    """Train the adapter on the sources' training shots; evaluate it on their validation images every epoch.

    ``augment=False`` trains on evaluation-transformed images (cached and uncached training then see the same
    features). ``task.test`` is never read.
    """
    device = backbone.device
    data = source_data(task)
    if len(data.train) == 0:
        raise FeatureMethodError(f"task {task.name}: no training images in the sources' expert pools")
    if config.checkpoint == "best" and len(data.validation) == 0:
        raise FeatureMethodError(
            f"task {task.name}: clip_adapter.checkpoint = best chooses on the sources' validation images, and "
            "there are none; use checkpoint = last"
        )
    transform = (
        prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
        if augment
        else eval_transform(backbone.image_size)
    )
    clock = PhaseClock(device)
    with clock.phase("classifier"):
        classifier = zeroshot_classifier(backbone, task.class_names, "single").float()
    with clock.phase("features"):
        views = TrainingViews.encode(
            backbone, data.train, transform, views=config.cached_views, seed=seed, num_workers=num_workers
        )
        validation = evaluation_features(backbone, data.validation, num_workers) if len(data.validation) else None
    model = seeded_module(
        lambda: ClipAdapter(classifier.cpu(), config.ratio, config.reduction), seed, "clip-adapter-init"
    ).to(device)
    optimizer = torch.optim.SGD(
        model.adapter.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    labels = labels_of(data.train, device)
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_accuracy = None, config.epochs, None
    step = 0
    with clock.phase("training"):
        for epoch in tqdm(range(config.epochs), desc=NAME, unit="epoch", disable=None, leave=False):
            lr = epoch_lr(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            steps = EpochSteps(NAME, step)
            batches = epoch_batches(len(data.train), config.batch_size, seed=seed, epoch=epoch, drop_last=True)
            for start, batch in batches:
                features = views.batch(epoch, batch, start)
                steps.take(F.cross_entropy(model(features), labels[batch.to(device)]), optimizer)
            step = steps.step
            record: dict[str, float] = {"epoch": epoch + 1, "lr": lr, "loss": steps.finish()}
            if validation is not None:
                model.eval()
                with torch.no_grad():
                    record["select_accuracy"] = accuracy(model(validation.features), validation.labels)
                if config.checkpoint == "best" and (best_accuracy is None or record["select_accuracy"] > best_accuracy):
                    best_accuracy, best_epoch = record["select_accuracy"], epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.adapter.state_dict().items()}
            history.append(record)
            logger.debug("%s: epoch %d loss %.4f", NAME, epoch + 1, record["loss"])
    if config.checkpoint == "best" and best_state is not None:
        model.adapter.load_state_dict(best_state)
    else:
        best_accuracy = history[-1].get("select_accuracy")
    summary = {
        "checkpoint": config.checkpoint,
        "kept_epoch": best_epoch,
        "select_accuracy": best_accuracy,
        "steps": step,
        "cached_views": config.cached_views,
        "seed": seed,
        "history": history,
        "seconds": dict(clock.seconds),
    }
    return TrainedClipAdapter(model.cpu().eval(), summary)
