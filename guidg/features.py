"""Image features of a frozen image encoder, computed once per image and view.

Prompt learning never changes the image encoder, so the features of its augmented training views can be
computed once and reused by every epoch (step 1 trains 31 epochs over the same few-shot sample:
``docs/methods.md``, "GuiDG"). View v of
image n is augmented with a seed derived from (seed, n, v), so the cache is a pure function of its inputs.

Images come through :mod:`guidg.image_pipeline`: from the run's decoded-image cache when one is active (decoded
once, cropped and augmented on uint8 tensors, normalised on the device), else decoded from their files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from imagenet_dg.images import open_image
from imagenet_dg.loading import LabeledImages
from guidg.backbone import Backbone
from guidg.image_pipeline import cached_view_batches, loader, to_device, uses_cache
from guidg.seeding import derive_seed
from guidg.transforms import SeededTransform


def view_seed(seed: int, index: int, view: int) -> int:
    """Augmentation seed of view ``view`` of image ``index``."""
    return derive_seed(seed, "view", index, view)


class ImageViews(Dataset):
    """Item (n, v): view v of image n, transformed under :func:`view_seed`; unseeded when ``seed`` is None."""

    def __init__(self, images: LabeledImages, transform: Callable, views: int, seed: int | None) -> None:
        self.images = images
        self.transform = transform
        self.seeded = SeededTransform(transform)
        self.views = views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images) * self.views

    def __getitem__(self, item: int) -> Tensor:
        index, view = divmod(item, self.views)
        image = open_image(self.images.paths[index])
        if self.seed is None:
            return self.transform(image)
        return self.seeded(image, view_seed(self.seed, index, view))


@torch.no_grad()
def encode_views(
    backbone: Backbone,
    images: LabeledImages,
    transform: Callable,
    *,
    views: int = 1,
    seed: int | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    encode: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Normalised features (N, views, D), float32 on the backbone's device, of ``views`` views of each image.

    With ``seed`` None the transform must be deterministic (evaluation); with a seed, view v of image n is
    the same tensor on every run, whatever ``batch_size`` and ``num_workers``. ``encode`` turns a batch of
    preprocessed images into features (default: the backbone's image encoder as it is).
    """
    encode = backbone.encode_images if encode is None else encode
    settings = uses_cache(transform)
    if settings is not None and len(images) > 0:
        seed_of = None if seed is None else functools.partial(view_seed, seed)
        batches = cached_view_batches(
            images, transform, settings, device=backbone.device, views=views, seed_of=seed_of,
            batch_size=batch_size, num_workers=num_workers,
        )
    else:
        files = loader(ImageViews(images, transform, views, seed), device=backbone.device, num_workers=num_workers,
                       batch_size=batch_size)
        batches = (to_device(batch, backbone.device) for batch in files)
    progress = tqdm(batches, desc=f"encoding {len(images)} images x {views}", unit="batch", disable=None, leave=False)
    chunks = [encode(batch) for batch in progress]
    if not chunks:
        return torch.empty(0, views, backbone.embed_dim, device=backbone.device)
    return torch.cat(chunks).reshape(len(images), views, -1)
