"""What the frozen-encoder baselines share: source data, training views encoded once, batches, settings checks.

The linear probe, CLIP-Adapter, Tip-Adapter and Tip-Adapter-F never change the image encoder, so they train on
image features. The training images are every source's expert-pool sample, pooled in source order (as CoOp
trains); selection uses only the sources' validation images; the target's test split is never read.

Augmented training views are encoded once (:class:`TrainingViews` over :func:`guidg.features.encode_views`,
through the run's decoded-image cache when one is active): ``views`` augmented views of every image, and at
each epoch one of them per image, drawn from the run seed. With no cached views each batch is encoded afresh
at every step from freshly augmented images, as the reference implementations train.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from guidg.backbone import Backbone
from guidg.evaluation import image_features
from guidg.features import encode_views
from guidg.image_pipeline import eval_batch_size
from guidg.model_selection import pooled_validation_images
from guidg.seeding import derive_seed, generator
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData

M = TypeVar("M", bound=nn.Module)


CHECKPOINTS = ("last", "best")
"""Which epoch's weights a trained frozen-encoder method keeps: the last one, or the best on source validation
(ties: the earliest)."""


class FeatureMethodError(ImageNetDGError, ValueError):
    """A frozen-encoder method was given a setting outside its allowed values, or inputs it cannot use."""


@dataclass(frozen=True)
class SourceData:
    """A task's source images: the training shots and the selection images, each pooled in source order."""

    train: LabeledImages
    """Every source's expert-pool sample (fewshot) or training part (full)."""
    validation: LabeledImages
    """Every source's validation images: the only data any selection here scores on."""


def source_data(task: TaskData) -> SourceData:
    """The training and validation images of ``task``'s sources, pooled in source order; ``task.test`` is not read."""
    return SourceData(
        train=LabeledImages.concat([task.expert[d] for d in task.sources]),
        validation=pooled_validation_images(task),
    )


def labels_of(images: LabeledImages, device: torch.device) -> Tensor:
    """The class indices of ``images`` as an int64 tensor on ``device``."""
    return torch.tensor(images.labels, dtype=torch.long, device=device)


@dataclass(frozen=True)
class LabeledFeatures:
    """Normalised image features (N, D) and their class indices (N,), on one device."""

    features: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def evaluation_features(backbone: Backbone, images: LabeledImages, num_workers: int = 0) -> LabeledFeatures:
    """Features of ``images`` under the evaluation transform (one view each, in list order) with their labels."""
    features = image_features(backbone, images, num_workers=num_workers)
    return LabeledFeatures(features, labels_of(images, backbone.device))


class TrainingViews:
    """The features a training step sees for a batch of training images.

    With ``cache`` (N, V, D), computed once by :meth:`encode`, epoch e gives image n the cached view drawn for
    (seed, e) and nothing is encoded during training. Without, each batch is encoded from freshly augmented
    images under a seed derived from (seed, epoch, first position of the batch).
    """

    def __init__(
        self,
        backbone: Backbone,
        images: LabeledImages,
        transform: Callable,
        *,
        seed: int,
        cache: Tensor | None,
        num_workers: int = 0,
    ) -> None:
        if cache is not None and (cache.ndim != 3 or cache.shape[0] != len(images) or cache.shape[1] < 1):
            raise FeatureMethodError(
                f"a view cache must have shape (N={len(images)}, views >= 1, D); got {tuple(cache.shape)}"
            )
        self.backbone = backbone
        self.images = images
        self.transform = transform
        self.seed = seed
        self.cache = cache
        self.num_workers = num_workers
        self._views: tuple[int, Tensor] | None = None

    @classmethod
    def encode(
        cls,
        backbone: Backbone,
        images: LabeledImages,
        transform: Callable,
        *,
        views: int,
        seed: int,
        num_workers: int = 0,
    ) -> TrainingViews:
        """Encode ``views`` augmented views of every image once (``views = 0``: none; batches are encoded afresh)."""
        cache = None
        if views > 0:
            # Large batches: the views are encoded once, through the same pipeline as evaluation.
            cache = encode_views(
                backbone, images, transform, views=views, seed=seed, batch_size=eval_batch_size(backbone.device),
                num_workers=num_workers,
            )
        return cls(backbone, images, transform, seed=seed, cache=cache, num_workers=num_workers)

    def _view_of(self, epoch: int) -> Tensor:
        assert self.cache is not None
        if self._views is None or self._views[0] != epoch:
            drawn = torch.randint(
                self.cache.shape[1], (len(self.images),), generator=generator(self.seed, "views", epoch)
            )
            self._views = (epoch, drawn.to(self.cache.device))
        return self._views[1]

    def batch(self, epoch: int, indices: Tensor, start: int) -> Tensor:
        """Features (B, D) of the training images at ``indices`` in epoch ``epoch``; ``start`` is the batch's
        position in the epoch's order (it seeds the augmentation of an uncached batch)."""
        if self.cache is not None:
            indices = indices.to(self.cache.device)
            return self.cache[indices, self._view_of(epoch)[indices]]
        return encode_views(
            self.backbone,
            self.images.select(indices.tolist()),
            self.transform,
            seed=derive_seed(self.seed, "augment", epoch, start),
            batch_size=len(indices),
            num_workers=self.num_workers,
        )[:, 0]


class FeaturePredictor:
    """What every trained frozen-encoder method predicts with: :meth:`logits` of image features, and the same
    for image files or preprocessed image batches through the backbone's (unchanged) image encoder."""

    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of normalised image features (N, D)."""
        raise NotImplementedError

    def predict(self, backbone: Backbone, images: LabeledImages, num_workers: int = 0) -> Tensor:
        """Logits (N, C) of ``images`` under the evaluation transform, in list order."""
        return self.logits(image_features(backbone, images, num_workers=num_workers))

    @torch.no_grad()
    def batch_logits(self, backbone: Backbone, pixels: Tensor) -> Tensor:
        """Logits (B, C) of preprocessed images (B, 3, H, W)."""
        return self.logits(backbone.encode_images(pixels))


def epoch_batches(
    count: int, batch_size: int, *, seed: int, epoch: int, drop_last: bool
) -> Iterator[tuple[int, Tensor]]:
    """(start, indices) of each batch of epoch ``epoch``: a permutation of ``count`` drawn from (seed, epoch),
    cut into batches of ``batch_size``; with ``drop_last`` an incomplete last batch is left out when there is at
    least one complete batch (as Dassl's training loader does)."""
    order = torch.randperm(count, generator=generator(seed, "epoch", epoch))
    end = count - count % batch_size if drop_last and count >= batch_size else count
    for start in range(0, end, batch_size):
        yield start, order[start : start + batch_size]


def seeded_module(build: Callable[[], M], *seed_parts: object) -> M:
    """``build()`` with torch's CPU generator seeded from ``seed_parts`` (its initial weights are then a pure
    function of them), leaving the caller's random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        return build()


class PhaseClock:
    """Wall-clock seconds of the named phases of a training run (for its record and the benchmarks)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the time of the block to ``name``, waiting for a GPU to finish at both ends."""
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def to_cpu_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies of ``state``'s tensors (what safetensors saves)."""
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}


def require_tensors(state: Mapping[str, Any], names: tuple[str, ...], what: str) -> None:
    """Raise :class:`FeatureMethodError` unless ``state`` holds a tensor under each of ``names``."""
    missing = [n for n in names if not isinstance(state.get(n), Tensor)]
    if missing:
        raise FeatureMethodError(
            f"a {what} state needs the tensors {', '.join(names)}; missing {', '.join(missing)} "
            f"(found {', '.join(sorted(state)) or 'none'})"
        )
