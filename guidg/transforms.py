"""Image transforms of the methods, and seeded application so augmentation never depends on worker layout.

Random transforms draw from torch's global generator. :class:`SeededTransform` applies one under a given
seed inside ``torch.random.fork_rng``, so the same (image, seed) gives the same tensor whichever process runs
it and the caller's generator state is untouched. Training loops derive each image's seed from the run seed
and the step, which also makes a resumed run identical to an uninterrupted one.

Each transform also works on the uint8 pixels of a decoded-image cache (:mod:`guidg.image_cache`): its
``from_pixels`` makes the same random draws and says exactly how its pixels relate to the Pillow pipeline's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from guidg.image_cache import DecodeSpec, eval_spec, random_crop_spec

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Transform = Callable[[Image.Image], torch.Tensor]


def _to_normalised_tensor() -> list[Callable]:
    return [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]


_NORMALISATION: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., 3, H, W) as float32 with CLIP normalisation: the very operations of ``ToTensor``
    then ``Normalize``, so the result equals the Pillow pipeline's bit for bit.

    The mean and standard deviation are kept on each device once (``Normalize`` copies them there and checks
    them on the host at every call, which would make a GPU wait for each batch).
    """
    if pixels.device not in _NORMALISATION:
        mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
        std = torch.as_tensor(CLIP_STD, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
        _NORMALISATION[pixels.device] = (mean, std)
    mean, std = _NORMALISATION[pixels.device]
    return pixels.float().div(255).sub_(mean).div_(std)


class EvalTransform:
    """Resize the shorter side to ``image_size`` (bicubic), centre crop, CLIP normalisation (``docs/methods.md``,
    "What a method returns").

    Called on a Pillow image it gives the normalised tensor; :meth:`from_pixels` gives the same crop, as uint8,
    from a decoded-image cache made with :meth:`decode_spec` (already resized, so only the crop is left).
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.pipeline = T.Compose(
            [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
            + _to_normalised_tensor()
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.pipeline(image)

    def decode_spec(self) -> DecodeSpec:
        """Cached images resized exactly as this transform resizes."""
        return eval_spec(self.image_size)

    def from_pixels(self, pixels: torch.Tensor, source_size: tuple[int, int]) -> torch.Tensor:
        """The uint8 (3, S, S) centre crop of cached ``pixels`` (3, H, W)."""
        return TF.center_crop(pixels, [self.image_size, self.image_size])


class PromptTrainTransform:
    """Augmentation of prompt learning: RandomResizedCrop (bicubic) and horizontal flip (``docs/methods.md``, "CoOp").

    :meth:`from_pixels` draws the crop box and the flip exactly as the Pillow pipeline does, from the same
    generator and for the file's own size, so each seed picks the same region of the picture; it then cuts
    that region from the cached image (shorter side ``image_size * 8/7``), with the box scaled to the cached
    size and rounded to whole pixels, and resizes it with torch's antialiased bicubic. The pixels therefore
    differ slightly from Pillow's (resampling and sub-pixel placement), the random operations do not.
    """

    def __init__(self, image_size: int, crop_scale: tuple[float, float], flip: bool) -> None:
        self.image_size = image_size
        self.crop_scale = tuple(crop_scale)
        self.flip = flip
        crop = T.RandomResizedCrop(image_size, scale=crop_scale, interpolation=T.InterpolationMode.BICUBIC)
        self.ratio = tuple(crop.ratio)
        steps: list[Callable] = [crop]
        if flip:
            steps.append(T.RandomHorizontalFlip())
        self.pipeline = T.Compose(steps + _to_normalised_tensor())

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.pipeline(image)

    def decode_spec(self) -> DecodeSpec:
        return random_crop_spec(self.image_size)

    def crop_box(self, source_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) drawn for an image of ``source_size`` (height, width), as Pillow's is."""
        shape_only = torch.zeros(()).expand(3, *source_size)  # get_params reads only the dimensions
        return T.RandomResizedCrop.get_params(shape_only, list(self.crop_scale), list(self.ratio))

    def from_pixels(self, pixels: torch.Tensor, source_size: tuple[int, int]) -> torch.Tensor:
        top, left, height, width = self.crop_box(source_size)
        flip = self.flip and bool(torch.rand(1) < 0.5)
        scale_y, scale_x = pixels.shape[-2] / source_size[0], pixels.shape[-1] / source_size[1]
        top_c = min(int(round(top * scale_y)), pixels.shape[-2] - 1)
        left_c = min(int(round(left * scale_x)), pixels.shape[-1] - 1)
        height_c = max(1, min(int(round(height * scale_y)), pixels.shape[-2] - top_c))
        width_c = max(1, min(int(round(width * scale_x)), pixels.shape[-1] - left_c))
        out = TF.resized_crop(
            pixels, top_c, left_c, height_c, width_c, [self.image_size, self.image_size],
            T.InterpolationMode.BICUBIC, antialias=True,
        )
        return TF.hflip(out) if flip else out


class FinetuneTrainTransform:
    """Augmentation of image-encoder fine-tuning: resize, centre crop, RandAugment (``docs/methods.md``,
    "Fine-tuning bases").

    :meth:`from_pixels` starts from the evaluation-resized cache, so its crop equals the Pillow pipeline's bit
    for bit; RandAugment then draws the same operations and magnitudes from the same generator, applied by
    torchvision's tensor kernels instead of Pillow's (colour operations may round a value differently by one).
    """

    def __init__(self, image_size: int, randaugment: bool) -> None:
        self.image_size = image_size
        self.randaugment = randaugment
        self.augment = T.RandAugment() if randaugment else None
        steps: list[Callable] = [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
        ]
        if self.augment is not None:
            steps.append(self.augment)
        self.pipeline = T.Compose(steps + _to_normalised_tensor())

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.pipeline(image)

    def decode_spec(self) -> DecodeSpec:
        return eval_spec(self.image_size)

    def crop_pixels(self, pixels: torch.Tensor, source_size: tuple[int, int]) -> torch.Tensor:
        """The deterministic part of :meth:`from_pixels`: the uint8 (3, S, S) centre crop, the same for every
        seed, so it can be taken in a loader process and augmented elsewhere."""
        return TF.center_crop(pixels, [self.image_size, self.image_size])

    def augment_pixels(self, crop: torch.Tensor) -> torch.Tensor:
        """The random part of :meth:`from_pixels` on a crop of :meth:`crop_pixels`, on whatever device the crop
        is: RandAugment draws its operations and magnitudes from torch's CPU generator, so a crop gets the same
        operations on a GPU as in a loader process under the same seed."""
        return self.augment(crop) if self.augment is not None else crop

    def from_pixels(self, pixels: torch.Tensor, source_size: tuple[int, int]) -> torch.Tensor:
        return self.augment_pixels(self.crop_pixels(pixels, source_size))


def eval_transform(image_size: int) -> EvalTransform:
    """Resize the shorter side to ``image_size`` (bicubic), centre crop, CLIP normalisation (``docs/methods.md``,
    "What a method returns")."""
    return EvalTransform(image_size)


def prompt_train_transform(image_size: int, crop_scale: tuple[float, float], flip: bool) -> PromptTrainTransform:
    """Augmentation of prompt learning: RandomResizedCrop (bicubic) and horizontal flip (``docs/methods.md``,
    "CoOp")."""
    return PromptTrainTransform(image_size, crop_scale, flip)


def finetune_train_transform(image_size: int, randaugment: bool) -> FinetuneTrainTransform:
    """Augmentation of image-encoder fine-tuning: resize, centre crop, RandAugment (``docs/methods.md``,
    "Fine-tuning bases")."""
    return FinetuneTrainTransform(image_size, randaugment)


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

    def from_pixels(self, pixels: torch.Tensor, source_size: tuple[int, int], seed: int) -> torch.Tensor:
        """The cached-pixel counterpart of ``transform`` (see its ``from_pixels``) under the same seed."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.transform.from_pixels(pixels, source_size)

    def augment_pixels(self, crop: torch.Tensor, seed: int) -> torch.Tensor:
        """``transform.augment_pixels(crop)`` under ``seed``: with the crop of ``transform.crop_pixels``, the
        same result as :meth:`from_pixels` with that seed, wherever the crop is."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.transform.augment_pixels(crop)
