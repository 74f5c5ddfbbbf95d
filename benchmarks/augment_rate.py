"""How fast step 2's per-image augmentation runs in one loader process, and on a device.

Step 2 crops each cached image and applies RandAugment under the image's own seed. In a loader process that is
``SeededTransform.from_pixels`` on a uint8 tensor; with ``pipeline.augment_on=device`` the crops are copied to
the device first and :func:`guidg.image_pipeline.augment_on_device` augments the batch there, one image at a
time. This script times both on the same images, so the rate of one core says how many loader processes keep
a GPU's training step fed (images/s the step consumes / images/s of one process).

    python benchmarks/augment_rate.py                      # one core, and the device if a GPU is visible
    python benchmarks/augment_rate.py --device cpu --images 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from guidg.image_pipeline import augment_on_device
from guidg.transforms import SeededTransform, finetune_train_transform
from imagenet_dg.atomic import write_text_atomic


def _pixels(count: int, size: int) -> list[torch.Tensor]:
    """Cached images of a 500x375 photo's proportions: shorter side ``size``, drawn from a fixed seed."""
    generator = torch.Generator().manual_seed(0)
    width = size * 4 // 3
    return [torch.randint(0, 256, (3, size, width), dtype=torch.uint8, generator=generator) for _ in range(count)]


def loader_process_rate(images: list[torch.Tensor], image_size: int) -> float:
    """Images/s of crop + RandAugment as one loader process makes them (this process, one thread)."""
    seeded = SeededTransform(finetune_train_transform(image_size, randaugment=True))
    for seed, pixels in enumerate(images[:10]):  # warm-up
        seeded.from_pixels(pixels, (375, 500), seed)
    start = time.perf_counter()
    for seed, pixels in enumerate(images):
        seeded.from_pixels(pixels, (375, 500), seed)
    return len(images) / (time.perf_counter() - start)


def device_rate(images: list[torch.Tensor], image_size: int, device: torch.device, batch: int) -> float:
    """Images/s of :func:`augment_on_device` on batches of crops already on ``device``."""
    transform = finetune_train_transform(image_size, randaugment=True)
    crops = torch.stack([transform.crop_pixels(p, (375, 500)) for p in images[:batch]]).to(device)
    seeds = torch.arange(batch)
    augment_on_device(transform, crops, seeds)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rounds = max(1, len(images) // batch)
    start = time.perf_counter()
    for round_ in range(rounds):
        augment_on_device(transform, crops, seeds + round_ * batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return rounds * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch", type=int, default=48, help="step-2 batch (3 domains x 16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else None,
                        help="also time augmentation on this device (default: the GPU when one is visible)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a loader process is one thread
    images = _pixels(args.images, args.image_size * 8 // 7)
    result = {"image_size": args.image_size, "images": args.images,
              "loader_process_images_per_second": loader_process_rate(images, args.image_size)}
    print(f"one loader process: {result['loader_process_images_per_second']:.0f} images/s")
    if args.device:
        device = torch.device(args.device)
        result["device"] = str(device)
        result["device_images_per_second"] = device_rate(images, args.image_size, device, args.batch)
        print(f"on {device}, batches of {args.batch}: {result['device_images_per_second']:.0f} images/s")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
