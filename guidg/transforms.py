"""Image transforms of the methods, and seeded application so augmentation never depends on worker layout.

Random transforms draw from torch's global generator. :class:`SeededTransform` applies one under a given
seed inside ``torch.random.fork_rng``, so the same (image, seed) gives the same tensor whichever process runs
it and the caller's generator state is untouched. Training loops derive each image's seed from the run seed
and the step, which also makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Transform = Callable[[Image.Image], torch.Tensor]


def _to_normalised_tensor() -> list[Callable]:
    return [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]


def eval_transform(image_size: int) -> Transform:
    """Resize the shorter side to ``image_size`` (bicubic), centre crop, CLIP normalisation (SPEC 4)."""
    return T.Compose(
        [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
        + _to_normalised_tensor()
    )


def prompt_train_transform(image_size: int, crop_scale: tuple[float, float], flip: bool) -> Transform:
    """Augmentation of prompt learning: RandomResizedCrop (bicubic) and horizontal flip (SPEC 6.1)."""
    steps: list[Callable] = [
        T.RandomResizedCrop(image_size, scale=crop_scale, interpolation=T.InterpolationMode.BICUBIC)
    ]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _to_normalised_tensor())


def finetune_train_transform(image_size: int, randaugment: bool) -> Transform:
    """Augmentation of image-encoder fine-tuning: resize, centre crop, RandAugment (SPEC 6.3)."""
    steps: list[Callable] = [
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
    ]
    if randaugment:
        steps.append(T.RandAugment())
    return T.Compose(steps + _to_normalised_tensor())


class SeededTransform:
    """Apply ``transform`` with torch's generator seeded to a given value, leaving the caller's state intact."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image, seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed would also queue a seeding of every accelerator,
            # recording a stack trace each time, which costs more than the transform itself.
            torch.default_generator.manual_seed(seed)
            return self.transform(image)
