"""From image lists to normalised batches on the device: through the decoded-image cache when a run has one.

Every place that turns images into model inputs (evaluation features, step-1 feature caching, step-2
training batches) goes through here, so all of them get the same fast path: images decoded once into a
:mod:`guidg.image_cache`, crops and per-image seeded augmentation on uint8 tensors in loader workers, uint8
batches copied to the device (pinned, non-blocking: a quarter of the bytes of float32) and normalised there.
Without an active cache (:func:`guidg.image_cache.using_image_cache`) images are decoded from their files each
time, with the Pillow transforms, as before. Step 2's RandAugment can instead run on the device, after the
crops are copied there (``pipeline.augment_on=device``), each image under its own seed.

Settings that matter on a GPU are chosen here too: :func:`machine_workers` sizes the loader to the machine's
cores, :func:`eval_batch_size` makes evaluation batches large.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from guidg.image_cache import (
    DECODERS, CacheSettings, DecodedImageCache, ImageCacheError, active_cache_settings, cache_for,
)
from guidg.settings import OneOf, Section, setting
from guidg.transforms import SeededTransform, normalise_pixels
from imagenet_dg.loading import LabeledImages

CPU_EVAL_BATCH = 128
CUDA_EVAL_BATCH = 512

AUGMENT_PLACES = ("workers", "device")
"""Where step 2's RandAugment runs: in the loader processes, or on the run's device."""


@dataclass(frozen=True)
class PipelineConfig(Section):
    """How images reach the model and how the image encoder runs: settings for speed, not of the method.

    The defaults are the exact path (Pillow decoding, augmentation in the loader processes, the encoder run as
    written). The others are faster on some machines and change results in the last bits, so they are part of a
    run's identity and recorded; a run with the defaults keeps the folder it had before these settings existed.
    Every run has this section, whatever its method.
    """

    NAME: ClassVar[str] = "pipeline"

    decoder: str = setting(
        "pil", OneOf(DECODERS),
        "decoding of the decoded-image cache: pil (as the files are read otherwise) or nvjpeg (on the GPU; CUDA "
        "only; not bit-identical to Pillow)")
    augment_on: str = setting(
        "workers", OneOf(AUGMENT_PLACES),
        "where step 2's RandAugment runs: the loader processes, or the run's device (each image under its own "
        "seed, the same operations)")
    compile: bool = setting(False, None, "run the image encoder through torch.compile (step 2 and evaluation)")

    def is_default(self) -> bool:
        """Whether every setting is the exact default path."""
        return self == PipelineConfig()


class PixelTransform(Protocol):
    """A transform of :mod:`guidg.transforms` that also works on cached uint8 pixels."""

    def __call__(self, image: Any) -> Tensor: ...

    def decode_spec(self) -> Any: ...

    def from_pixels(self, pixels: Tensor, source_size: tuple[int, int]) -> Tensor: ...


def machine_workers(device: torch.device | str) -> int:
    """Loader processes for ``device``: none on CPU (they would take the model's cores), on a GPU every core
    this process may use but one, which feeds the device."""
    if torch.device(device).type == "cpu":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def eval_batch_size(device: torch.device | str) -> int:
    """Images per evaluation forward pass: large on a GPU, where small batches leave it idle."""
    return CUDA_EVAL_BATCH if torch.device(device).type == "cuda" else CPU_EVAL_BATCH


def uses_cache(transform: object) -> CacheSettings | None:
    """The active cache settings when ``transform`` can read cached pixels, else None."""
    settings = active_cache_settings()
    if settings is None or not hasattr(transform, "from_pixels"):
        return None
    return settings


class CachedViews(Dataset):
    """Item (n, v): view v of cached image n under ``transform``; seeded with ``seed_of(n, v)`` when given."""

    def __init__(
        self, cache: DecodedImageCache, transform: PixelTransform, views: int, seed_of: Callable[[int, int], int] | None
    ) -> None:
        self.cache = cache
        self.transform = transform
        self.seeded = SeededTransform(transform)
        self.views = views
        self.seed_of = seed_of

    def __len__(self) -> int:
        return len(self.cache) * self.views

    def __getitem__(self, item: int) -> Tensor:
        index, view = divmod(item, self.views)
        pixels, size = self.cache.pixels(index), self.cache.source_size(index)
        if self.seed_of is None:
            return self.transform.from_pixels(pixels, size)
        return self.seeded.from_pixels(pixels, size, self.seed_of(index, view))


def to_device(batch: Tensor, device: torch.device) -> Tensor:
    """A loader batch on ``device``, normalised: uint8 pixel batches are normalised there, float ones are moved."""
    batch = batch.to(device, non_blocking=True)
    return normalise_pixels(batch) if batch.dtype == torch.uint8 else batch


def loader(
    dataset: Dataset, *, device: torch.device, num_workers: int, batch_size: int | None = None,
    batch_sampler: Any = None, persistent: bool = False,
) -> DataLoader:
    """A DataLoader with the GPU settings: pinned memory on CUDA, deep prefetch, persistent workers when asked."""
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        options.update(prefetch_factor=4, persistent_workers=persistent)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **options)


def cached_view_batches(
    images: LabeledImages,
    transform: PixelTransform,
    settings: CacheSettings,
    *,
    device: torch.device,
    views: int,
    seed_of: Callable[[int, int], int] | None,
    batch_size: int,
    num_workers: int,
) -> Iterator[Tensor]:
    """Normalised batches on ``device`` of ``views`` views of each image, in (image, view) order, from its cache."""
    cache = cache_for(images, transform.decode_spec(), settings, device)
    for batch in loader(CachedViews(cache, transform, views, seed_of), device=device, num_workers=num_workers,
                        batch_size=batch_size):
        yield to_device(batch, device)


class CachedPoolImages(Dataset):
    """Step-2 items (anything with ``domain``, ``index`` and ``augment_seed``) from the pools' caches, as uint8.

    Augmented here (in the loader processes), or, with ``augment=False``, only cropped, with the item's seed
    returned beside the crop so that :func:`augment_on_device` applies the same random operations later.
    """

    def __init__(
        self, caches: Sequence[DecodedImageCache], labels: Sequence[Sequence[int]], transform: PixelTransform,
        augment: bool = True,
    ) -> None:
        self.caches = list(caches)
        self.labels = [list(pool) for pool in labels]
        self.transform = transform
        self.seeded = SeededTransform(transform)
        self.augment = augment

    def __len__(self) -> int:
        return sum(len(c) for c in self.caches)

    def __getitem__(self, item: Any) -> tuple[Tensor, ...]:
        cache = self.caches[item.domain]
        pixels, size = cache.pixels(item.index), cache.source_size(item.index)
        label = self.labels[item.domain][item.index]
        if not self.augment:
            return self.transform.crop_pixels(pixels, size), label, item.domain, item.augment_seed
        return self.seeded.from_pixels(pixels, size, item.augment_seed), label, item.domain


def augments_on_device(transform: object) -> bool:
    """Whether ``transform`` splits into a fixed crop and a random part that can run on a device."""
    return hasattr(transform, "crop_pixels") and hasattr(transform, "augment_pixels")


def augment_on_device(transform: PixelTransform, crops: Tensor, seeds: Tensor) -> Tensor:
    """``transform.augment_pixels`` of each uint8 crop (B, 3, S, S), wherever ``crops`` are, under its own seed.

    One image at a time: each image's operations are its own draws, exactly those a loader process makes for
    it, so the batch equals the one augmented in the workers (bit for bit on the CPU).
    """
    seeded = SeededTransform(transform)
    return torch.stack([seeded.augment_pixels(crop, int(seed)) for crop, seed in zip(crops, seeds.tolist())])


def cached_step_batches(
    pools: Sequence[LabeledImages],
    transform: PixelTransform,
    settings: CacheSettings,
    batch_sampler: Any,
    *,
    device: torch.device,
    num_workers: int,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(images on ``device``, normalised; labels; domains) for each batch of ``batch_sampler``, from the caches
    of ``pools``. One loader for the whole run, so its workers persist across epochs.

    With ``settings.augment_on == "device"`` the loader processes only crop, and the random augmentation runs on
    ``device`` (:func:`augment_on_device`), for machines with few CPU cores per GPU. A transform that cannot be
    split so is refused rather than augmented elsewhere than asked.
    """
    caches = [cache_for(pool, transform.decode_spec(), settings, device) for pool in pools]
    labels_of = [pool.labels for pool in pools]
    if settings.augment_on == "device":
        if not augments_on_device(transform):
            raise ImageCacheError(
                f"augmentation on the device: {type(transform).__name__} has no separate random part; "
                "use pipeline.augment_on=workers"
            )
        dataset = CachedPoolImages(caches, labels_of, transform, augment=False)
        for crops, labels, domains, seeds in loader(dataset, device=device, num_workers=num_workers,
                                                    batch_sampler=batch_sampler, persistent=True):
            crops = crops.to(device, non_blocking=True)
            yield normalise_pixels(augment_on_device(transform, crops, seeds)), labels, domains
        return
    dataset = CachedPoolImages(caches, labels_of, transform)
    for images, labels, domains in loader(dataset, device=device, num_workers=num_workers, batch_sampler=batch_sampler,
                                          persistent=True):
        yield to_device(images, device), labels, domains


def describe_pipeline(device: torch.device | str) -> dict[str, Any]:
    """How images reach the model in this context, for result records."""
    settings = active_cache_settings()
    if settings is None:
        return {"decoded_image_cache": None, "decoder": "pil", "augmentation": "pil"}
    return {
        "decoded_image_cache": {"place": settings.place},
        "decoder": settings.decoder,
        "augmentation": "uint8 tensors (same seeded draws as pil)",
        "augment_on": settings.augment_on,
    }
