"""Tip-Adapter and Tip-Adapter-F: a key-value cache of the training shots' features beside the zero-shot head.

Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification", ECCV 2022; reference
code https://github.com/gaopengcuhk/Tip-Adapter (``main.py``, ``utils.py``, ``configs/*.yaml``). With f the
normalised image feature, W the zero-shot text classifier (C x D, "a photo of a {name}."), the keys F (NK x D)
the normalised features of the NK training shots and the values L (NK x C) their one-hot labels:

    logits = 100 f W^T + alpha * exp(-beta * (1 - f F^T)) L

Tip-Adapter trains nothing. Tip-Adapter-F trains F, initialised from the cache, with the cross-entropy of these
logits at the initial (alpha, beta). Both then choose (alpha, beta) on validation data over the reference's
grid (:func:`search_candidates`), here the sources' validation images.

Defaults and where they come from:

- keys: the mean over ``augment_views = 10`` augmented views (RandomResizedCrop, scale 0.5 to 1, and
  horizontal flip) of each shot's feature, normalised (``augment_epoch: 10``; the reference averages the
  unnormalised features, here the views' normalised features are averaged);
- initial (alpha, beta) = (1, 5.5), the paper's; the reference configurations start the search and the
  fine-tuning from beta = 1 and a per-dataset alpha (1.17 for ImageNet);
- search grid: ImageNet's ``search_scale: [7, 3]``, ``search_step: [200, 20]``: beta_i = 0.1 + i (7 - 0.1) / 200
  for i < 200, alpha_j = 0.1 + j (3 - 0.1) / 20 for j < 20, tried beta-major, the first best kept (the
  reference's strict ``acc > best_acc``);
- Tip-Adapter-F: AdamW (lr 0.001, eps 1e-4, torch's default weight decay 0.01), batch 256, 20 epochs
  (``train_epoch: 20`` for ImageNet and every other dataset but EuroSAT's 100), cosine over all steps; the
  epoch kept is the best on validation at the initial (alpha, beta) (the reference picks it on the test set);
  then (alpha, beta) are searched again with the trained keys.

The augmented views are encoded once: the key views, and the training views of Tip-Adapter-F (one of the same
``augment_views`` views per image each epoch; ``cached_training = False`` encodes freshly augmented batches
at every step, as the reference does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from guidg.backbone import Backbone
from guidg.divergence import EpochSteps, check_finite_outputs
from guidg.evaluation import accuracy
from guidg.feature_training import (
    CHECKPOINTS,
    FeatureMethodError,
    FeaturePredictor,
    LabeledFeatures,
    PhaseClock,
    TrainingViews,
    epoch_batches,
    evaluation_features,
    labels_of,
    require_tensors,
    source_data,
    to_cpu_state,
)
from guidg.losses import LOGIT_SCALE
from guidg.model_selection import SearchResult, grid_search
from guidg.schedule import cosine_lambda
from guidg.settings import OneOf, Ordered, Range, Section, at_least, positive, setting
from guidg.transforms import eval_transform, prompt_train_transform
from guidg.zeroshot import zeroshot_classifier
from imagenet_dg.loading import TaskData

logger = logging.getLogger(__name__)

NAME = "tip-adapter"
FINE_TUNED_NAME = "tip-adapter-f"

AFFINITY_ELEMENTS = 1 << 24
"""Most entries of an image-key affinity block computed at once (64 MiB of float32), bounding memory."""


@dataclass(frozen=True)
class TipAdapterConfig(Section):
    """Tip-Adapter's settings, with the paper's initial (alpha, beta) and the reference's ImageNet grid."""

    NAME: ClassVar[str] = "tip_adapter"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"augment_views": 1, "beta_steps": 5, "alpha_steps": 2},
        "mini": {"augment_views": 2, "beta_steps": 20, "alpha_steps": 5},
    }

    augment_views: int = setting(
        10, at_least(1), "augmented views of each training shot averaged into its key (augment_epoch)")
    crop_scale: tuple[float, float] = setting(
        (0.5, 1.0), Ordered(Range(0.0, 1.0, open_low=True)), "RandomResizedCrop's area range of those views")
    flip: bool = setting(True, None, "random horizontal flips of those views")
    init_alpha: float = setting(1.0, at_least(0.0), "alpha before the search (and during Tip-Adapter-F's training)")
    init_beta: float = setting(5.5, positive(), "beta before the search (and during Tip-Adapter-F's training)")
    search: bool = setting(True, None, "choose (alpha, beta) on source validation (search_hp)")
    beta_scale: float = setting(7.0, Range(0.1, open_low=True), "upper end of beta's grid (search_scale[0])")
    beta_steps: int = setting(200, at_least(1), "values of beta's grid (search_step[0])")
    alpha_scale: float = setting(3.0, Range(0.1, open_low=True), "upper end of alpha's grid (search_scale[1])")
    alpha_steps: int = setting(20, at_least(1), "values of alpha's grid (search_step[1])")


@dataclass(frozen=True)
class TipAdapterFConfig(TipAdapterConfig):
    """Tip-Adapter-F's settings: Tip-Adapter's, and the training of the keys as the reference runs it."""

    NAME: ClassVar[str] = "tip_adapter_f"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {**TipAdapterConfig.PRESETS["smoke"], "epochs": 2, "batch_size": 64, "lr": 1e-2},
        "mini": {**TipAdapterConfig.PRESETS["mini"], "epochs": 6, "batch_size": 64, "lr": 1e-2},
    }

    lr: float = setting(1e-3, positive(), "AdamW learning rate at the start of the cosine schedule")
    eps: float = setting(1e-4, positive(), "AdamW's epsilon")
    weight_decay: float = setting(0.01, at_least(0.0), "AdamW's decoupled weight decay (torch's default)")
    batch_size: int = setting(256, at_least(1), "images per step")
    epochs: int = setting(20, at_least(1), "passes over the training shots")
    cached_training: bool = setting(
        True, None, "train on the cached key views (one per image and epoch); false: freshly augmented batches at "
        "every step, as the reference")
    checkpoint: str = setting(
        "best", OneOf(CHECKPOINTS), "the keys kept: the best epoch's on source validation at the initial "
        "(alpha, beta) (ties: the earliest), or the last")


def cache_logits(features: Tensor, keys: Tensor, values: Tensor, beta: float) -> Tensor:
    """``exp(-beta * (1 - f F^T)) L`` (N, C) for features f (N, D), keys F (NK, D), values L (NK, C), computed
    over blocks of images so the (N, NK) affinities are never all held at once."""
    rows = max(1, AFFINITY_ELEMENTS // max(1, keys.shape[0]))
    blocks = [
        torch.exp(-beta * (1.0 - features[start : start + rows] @ keys.T)) @ values
        for start in range(0, features.shape[0], rows)
    ]
    return torch.cat(blocks) if blocks else features.new_zeros(0, values.shape[1])


def tip_logits(features: Tensor, classifier: Tensor, keys: Tensor, values: Tensor, alpha: float, beta: float) -> Tensor:
    """``100 f W^T + alpha * exp(-beta * (1 - f F^T)) L``: Tip-Adapter's logits (N, C)."""
    return LOGIT_SCALE * features @ classifier.T + alpha * cache_logits(features, keys, values, beta)


def grid_values(scale: float, steps: int) -> list[float]:
    """The reference's grid of one hyperparameter: ``0.1 + i * (scale - 0.1) / steps`` for i < ``steps``."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def search_candidates(config: TipAdapterConfig) -> list[tuple[float, float]]:
    """Every (alpha, beta) of the grid in the reference's order: beta-major, each ascending."""
    alphas = grid_values(config.alpha_scale, config.alpha_steps)
    return [(alpha, beta) for beta in grid_values(config.beta_scale, config.beta_steps) for alpha in alphas]


def search_alpha_beta(
    validation: LabeledFeatures,
    classifier: Tensor,
    keys: Tensor,
    values: Tensor,
    candidates: list[tuple[float, float]],
) -> SearchResult[tuple[float, float]]:
    """:func:`guidg.model_selection.grid_search` of (alpha, beta) by the accuracy of :func:`tip_logits` on
    ``validation``. The cache logits of a beta are computed once for all the alphas that follow it."""
    with torch.no_grad():
        zero_shot = LOGIT_SCALE * validation.features @ classifier.T
        memo: dict[float, Tensor] = {}

        def score(candidate: tuple[float, float]) -> float:
            alpha, beta = candidate
            if beta not in memo:
                memo.clear()  # candidates come beta-major: one beta's cache logits at a time
                memo[beta] = cache_logits(validation.features, keys, values, beta)
            return accuracy(zero_shot + alpha * memo[beta], validation.labels)

        return grid_search(candidates, score)


@dataclass
class TipAdapter(FeaturePredictor):
    """A Tip-Adapter (``fine_tuned`` False) or Tip-Adapter-F: the classifier, the cache and (alpha, beta)."""

    classifier: Tensor
    """(C, D) rows normalised, float32, CPU."""
    keys: Tensor
    """(NK, D) float32, CPU: the cache's keys (trained ones for Tip-Adapter-F)."""
    labels: Tensor
    """(NK,) int64, CPU: the class of each key; the values are their one-hot rows."""
    alpha: float
    beta: float
    fine_tuned: bool
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return FINE_TUNED_NAME if self.fine_tuned else NAME

    @property
    def n_trainable(self) -> int:
        """NK x D for Tip-Adapter-F (the keys), 0 for the training-free Tip-Adapter."""
        return self.keys.numel() if self.fine_tuned else 0

    def values(self, device: torch.device | None = None) -> Tensor:
        """The one-hot values L (NK, C), float32."""
        return F.one_hot(self.labels.to(device), self.classifier.shape[0]).float()

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of normalised image features (N, D)."""
        device = features.device
        logits = tip_logits(
            features.float(), self.classifier.to(device), self.keys.to(device), self.values(device), self.alpha,
            self.beta,
        )
        return check_finite_outputs(logits, "logits")

    def state_dict(self) -> dict[str, Tensor]:
        """``classifier``, ``keys``, ``labels``, and ``alpha``, ``beta`` (float64 scalars), ``fine_tuned`` (0/1)."""
        return to_cpu_state({
            "classifier": self.classifier,
            "keys": self.keys,
            "labels": self.labels,
            "alpha": torch.tensor(self.alpha, dtype=torch.float64),
            "beta": torch.tensor(self.beta, dtype=torch.float64),
            "fine_tuned": torch.tensor(int(self.fine_tuned), dtype=torch.int64),
        })

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], record: dict[str, Any] | None = None) -> TipAdapter:
        """The adapter saved by :meth:`state_dict`."""
        require_tensors(state, ("classifier", "keys", "labels", "alpha", "beta", "fine_tuned"), NAME)
        classifier, keys, labels = state["classifier"].float(), state["keys"].float(), state["labels"].long()
        shapes_fit = classifier.ndim == keys.ndim == 2 and keys.shape[1] == classifier.shape[1]
        if not shapes_fit or labels.shape != keys.shape[:1]:
            raise FeatureMethodError(
                f"a {NAME} state needs classifier (C, D), keys (NK, D) and labels (NK,); got "
                f"{tuple(classifier.shape)}, {tuple(keys.shape)} and {tuple(labels.shape)}"
            )
        fine_tuned = bool(int(state["fine_tuned"]))
        alpha, beta = float(state["alpha"]), float(state["beta"])
        return cls(classifier, keys, labels, alpha, beta, fine_tuned, dict(record or {}))


@dataclass
class _Cache:
    """What both variants build first: classifier, keys and their views, labels, validation features."""

    classifier: Tensor
    views: TrainingViews
    keys: Tensor
    labels: Tensor
    values: Tensor
    validation: LabeledFeatures | None


def _build_cache(
    backbone: Backbone, task: TaskData, config: TipAdapterConfig, clock: PhaseClock, *, seed: int, num_workers: int,
    augment: bool, need_validation: bool,
) -> _Cache:
    data = source_data(task)
    if len(data.train) == 0:
        raise FeatureMethodError(f"task {task.name}: no training images in the sources' expert pools")
    if need_validation and len(data.validation) == 0:
        raise FeatureMethodError(
            f"task {task.name}: {config.NAME} chooses on the sources' validation images, and there are none; "
            "set search = false (and checkpoint = last for Tip-Adapter-F)"
        )
    transform = (
        prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
        if augment
        else eval_transform(backbone.image_size)
    )
    with clock.phase("classifier"):
        classifier = zeroshot_classifier(backbone, task.class_names, "single").float()
    with clock.phase("features"):
        views = TrainingViews.encode(
            backbone, data.train, transform, views=config.augment_views, seed=seed, num_workers=num_workers
        )
        validation = evaluation_features(backbone, data.validation, num_workers) if len(data.validation) else None
    assert views.cache is not None
    keys = F.normalize(views.cache.mean(dim=1), dim=-1)
    labels = labels_of(data.train, backbone.device)
    values = F.one_hot(labels, len(task.class_names)).float()
    return _Cache(classifier, views, keys, labels, values, validation)


def _choose_alpha_beta(
    cache: _Cache, keys: Tensor, config: TipAdapterConfig, clock: PhaseClock
) -> tuple[float, float, dict[str, Any]]:
    initial = {"alpha": config.init_alpha, "beta": config.init_beta}
    if cache.validation is not None:
        with torch.no_grad():
            initial["select_accuracy"] = accuracy(
                tip_logits(cache.validation.features, cache.classifier, keys, cache.values, config.init_alpha,
                           config.init_beta),
                cache.validation.labels,
            )
            zero_shot = accuracy(LOGIT_SCALE * cache.validation.features @ cache.classifier.T, cache.validation.labels)
    if not config.search or cache.validation is None:
        return config.init_alpha, config.init_beta, {"searched": False, "initial": initial}
    with clock.phase("search"):
        found = search_alpha_beta(cache.validation, cache.classifier, keys, cache.values, search_candidates(config))
    alpha, beta = found.chosen
    summary = {
        "searched": True,
        "initial": initial,
        "zeroshot_select_accuracy": zero_shot,
        "select_accuracy": found.score,
        "candidates": len(found.scores),
        "grid": {
            "beta": [0.1, config.beta_scale, config.beta_steps], "alpha": [0.1, config.alpha_scale, config.alpha_steps]
        },
    }
    return alpha, beta, summary


def train_tip_adapter(
    backbone: Backbone,
    task: TaskData,
    config: TipAdapterConfig,
    *,
    seed: int,
    num_workers: int = 0,
    augment: bool = True,
) -> TipAdapter:
    """The training-free Tip-Adapter of the sources' training shots, (alpha, beta) chosen on their validation
    images. ``augment=False`` builds the keys from evaluation-transformed images. ``task.test`` is never read."""
    clock = PhaseClock(backbone.device)
    cache = _build_cache(backbone, task, config, clock, seed=seed, num_workers=num_workers, augment=augment,
                         need_validation=config.search)
    alpha, beta, search = _choose_alpha_beta(cache, cache.keys, config, clock)
    record = {"alpha": alpha, "beta": beta, "search": search, "keys": int(cache.keys.shape[0]),
              "augment_views": config.augment_views, "seed": seed, "seconds": dict(clock.seconds)}
    return TipAdapter(cache.classifier.cpu(), cache.keys.cpu(), cache.labels.cpu(), alpha, beta, False, record)


def train_tip_adapter_f(
    backbone: Backbone,
    task: TaskData,
    config: TipAdapterFConfig,
    *,
    seed: int,
    num_workers: int = 0,
    augment: bool = True,
) -> TipAdapter:
    """Tip-Adapter-F: the keys trained on the sources' training shots, the epoch kept and (alpha, beta) chosen
    on their validation images. ``augment=False`` uses evaluation-transformed images throughout (cached and
    uncached training then see the same features). ``task.test`` is never read."""
    device = backbone.device
    clock = PhaseClock(device)
    cache = _build_cache(backbone, task, config, clock, seed=seed, num_workers=num_workers, augment=augment,
                         need_validation=config.search or config.checkpoint == "best")
    views = cache.views if config.cached_training else TrainingViews(
        backbone, cache.views.images, cache.views.transform, seed=seed, cache=None, num_workers=num_workers
    )
    keys = torch.nn.Parameter(cache.keys.clone())
    optimizer = torch.optim.AdamW([keys], lr=config.lr, eps=config.eps, weight_decay=config.weight_decay)
    count = len(cache.labels)
    total_steps = config.epochs * math.ceil(count / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total_steps))
    alpha, beta = config.init_alpha, config.init_beta
    history: list[dict[str, float]] = []
    best_keys, best_epoch, best_accuracy = None, config.epochs, None
    step = 0
    with clock.phase("training"):
        for epoch in tqdm(range(config.epochs), desc=FINE_TUNED_NAME, unit="epoch", disable=None, leave=False):
            steps = EpochSteps(FINE_TUNED_NAME, step)
            for start, batch in epoch_batches(count, config.batch_size, seed=seed, epoch=epoch, drop_last=False):
                features = views.batch(epoch, batch, start)
                logits = tip_logits(features, cache.classifier, keys, cache.values, alpha, beta)
                steps.take(F.cross_entropy(logits, cache.labels[batch.to(device)]), optimizer, scheduler)
            step = steps.step
            record: dict[str, float] = {"epoch": epoch + 1, "loss": steps.finish()}
            if cache.validation is not None:
                with torch.no_grad():
                    record["select_accuracy"] = accuracy(
                        tip_logits(cache.validation.features, cache.classifier, keys, cache.values, alpha, beta),
                        cache.validation.labels,
                    )
                if config.checkpoint == "best" and (best_accuracy is None or record["select_accuracy"] > best_accuracy):
                    best_accuracy, best_epoch, best_keys = record["select_accuracy"], epoch + 1, keys.detach().clone()
            history.append(record)
            logger.debug("%s: epoch %d loss %.4f", FINE_TUNED_NAME, epoch + 1, record["loss"])
    trained = best_keys if config.checkpoint == "best" and best_keys is not None else keys.detach().clone()
    alpha, beta, search = _choose_alpha_beta(cache, trained, config, clock)
    record = {
        "alpha": alpha, "beta": beta, "search": search, "keys": count, "augment_views": config.augment_views,
        "checkpoint": config.checkpoint, "kept_epoch": best_epoch,
        "kept_select_accuracy": best_accuracy if config.checkpoint == "best" else history[-1].get("select_accuracy"),
        "steps": step, "cached_training": config.cached_training, "seed": seed, "history": history,
        "seconds": dict(clock.seconds),
    }
    return TipAdapter(cache.classifier.cpu(), trained.cpu(), cache.labels.cpu(), alpha, beta, True, record)
