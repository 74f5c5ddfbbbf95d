"""Evaluation throughput on a miniature suite: the library's image pipeline against a plain ImageFolder loop.

Both sides encode the same image files with the same model and batch size, epoch after epoch:

- ``plain``: ``torchvision.datasets.ImageFolder`` with Pillow decoding and the evaluation transform (bicubic
  resize of the shorter side, centre crop, ToTensor, CLIP normalisation), a ``DataLoader``, ``encode_image``;
- ``library``: ``guidg.evaluation.image_features`` with a decoded-image cache active: the first epoch decodes
  every image once into the cache (and is charged for it), later epochs take centre crops from the cache and
  normalise them on the device.

The two alternate epoch by epoch (plain 1, library 1, plain 2, ...), so a change in the machine's speed hits
both alike; the ratio is taken per epoch. The features of both are compared: they must be identical.

The images are the miniature ImageNet-R of :mod:`imagenet_dg.mini` (drawn pictures in the official class-folder
layout), written once into ``--data`` (or a temporary folder). Target: the library at least 3x the plain loop
from the second epoch on, with the tiny model on a 2-core CPU.

    python benchmarks/eval_throughput.py --json eval_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from guidg.backbone import TINY_SPEC, BackboneSpec, load_backbone
from guidg.evaluation import image_features
from guidg.image_cache import CacheSettings, using_image_cache
from guidg.transforms import CLIP_MEAN, CLIP_STD
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.loading import LabeledImages
from imagenet_dg.mini import make_mini_releases

MODELS = {"tiny": TINY_SPEC, "vit-b-16": BackboneSpec("ViT-B-16", None)}
TARGET = 3.0


def plain_features(model: torch.nn.Module, folder: Path, size: int, batch: int, workers: int) -> torch.Tensor:
    """One epoch of the plain loop: ImageFolder + Pillow + DataLoader + encode_image; normalised features."""
    transform = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    loader = DataLoader(datasets.ImageFolder(str(folder), transform=transform), batch_size=batch, num_workers=workers)
    chunks = []
    with torch.no_grad():
        for images, _ in loader:
            chunks.append(torch.nn.functional.normalize(model.encode_image(images).float(), dim=-1))
    return torch.cat(chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images-per-class", type=int, default=60, help="miniature ImageNet-R images per class")
    parser.add_argument("--image-size", type=int, default=160, help="side of the drawn pictures, in pixels")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="loader processes, the same for both sides")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", type=Path, default=None, help="folder for the miniature set (reused)")
    parser.add_argument("--side", choices=("both", "plain", "library"), default="both",
                        help="run one side only (for timing whole processes against each other)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the decoded-image cache (reused)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    temporary = tempfile.TemporaryDirectory(prefix="eval-throughput-")
    data = args.data or Path(temporary.name) / "mini"
    counts = {d: 1 for d in ("imagenet", "imagenet-val", "imagenet-a", "imagenet-sketch", "imagenetv2")}
    counts["imagenet-r"] = args.images_per_class
    releases = make_mini_releases(data, image_size=args.image_size, images_per_class=counts)
    folder = releases.paths["imagenet-r"]
    samples = datasets.ImageFolder(str(folder)).samples
    images = LabeledImages(tuple(Path(p) for p, _ in samples), tuple(c for _, c in samples), ("imagenet-r",) * len(samples))
    backbone = load_backbone(MODELS[args.model], "cpu")
    size = backbone.image_size
    cache_root = args.cache or Path(temporary.name) / "cache"
    load_before = os.getloadavg()[0]
    print(f"{len(images)} images of {args.image_size} px, model {args.model} ({size} px), batch {args.batch_size}, "
          f"{args.workers} workers, {torch.get_num_threads()} threads, load average {load_before:.1f}", flush=True)
    epochs = []
    identical = True
    for epoch in range(1, args.epochs + 1):
        if args.side == "library":
            plain, plain_seconds = None, float("nan")
        else:
            start = time.perf_counter()
            plain = plain_features(backbone.model, folder, size, args.batch_size, args.workers)
            plain_seconds = time.perf_counter() - start
        if args.side == "plain":
            library, library_seconds = None, float("nan")
        else:
            start = time.perf_counter()
            with using_image_cache(CacheSettings(cache_root, place="benchmark", workers=args.workers)):
                library = image_features(backbone, images, batch_size=args.batch_size, num_workers=args.workers)
            library_seconds = time.perf_counter() - start
        if plain is not None and library is not None:
            identical = identical and torch.equal(plain, library)
        row = {
            "epoch": epoch,
            "plain_images_per_second": len(images) / plain_seconds,
            "library_images_per_second": len(images) / library_seconds,
            "ratio": plain_seconds / library_seconds,
            "library_builds_cache": epoch == 1,
        }
        epochs.append(row)
        print(f"epoch {epoch}: plain {row['plain_images_per_second']:.0f} img/s, library "
              f"{row['library_images_per_second']:.0f} img/s{' (builds the cache)' if epoch == 1 else ''}: "
              f"{row['ratio']:.2f}x", flush=True)
    later = [r["ratio"] for r in epochs[1:]]
    median = sorted(later)[len(later) // 2] if later else None
    met = median is not None and median >= TARGET and identical
    if args.side != "both":
        met = True  # one side alone has no ratio; its process is timed from outside
    print(f"features identical: {identical}; median ratio from epoch 2 on: "
          f"{'-' if median is None else f'{median:.2f}x'} (target {TARGET:.0f}x: {'met' if met else 'missed'}); "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        record = {
            "benchmark": "eval_throughput",
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "images": len(images),
            "epochs": epochs,
            "median_ratio_from_epoch_2": median,
            "features_identical": identical,
            "target": TARGET,
            "target_met": met,
            "environment": {
                "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                "load_average_start": load_before,
            },
        }
        write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
    temporary.cleanup()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
