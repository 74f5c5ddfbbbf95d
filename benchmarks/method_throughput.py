"""Training images per second of each registered method, side by side with CLIPood, on generated photos.

Every method is trained once through the method interface (``guidg.methods.fit_method``, as a run trains it),
with its paper defaults shortened to a few seconds of work, on one synthetic task: ``--sources`` source domains
with an expert and a guide pool of ``--classes`` x ``--shots`` 500x375 JPEGs each (smooth shapes and grain, a
photo's size), read through the
decoded-image cache as runs read them. The figure is the training images a method goes through per second of
its ``fit``, counted from its settings:

- a section with ``iterations`` (CLIP-LoRA): ``iterations`` x ``batch_size``;
- a section with ``steps_per_epoch`` (the fine-tuning bases): ``epochs`` x ``steps_per_epoch`` x
  ``batch_per_domain`` x sources;
- a section with ``epochs`` (prompt and adapter methods): ``epochs`` x the training images;
- otherwise (Tip-Adapter, the linear probe): the training images, encoded once.

So a frozen-encoder method's figure includes encoding its cached views, and every figure includes its
selection on the sources' validation images (``--classes`` per source), as a user pays them. An untimed run of
CLIPood first builds the image cache and warms the device. The weights are random (``--pretrained`` none):
timing does not depend on them.

    python benchmarks/method_throughput.py --json methods.json                          # ViT-B-16 on a GPU
    python benchmarks/method_throughput.py --device cpu --arch imagenet-dg-tiny --steps 2 --shots 2   # smoke

Prints one line per method (images/s, seconds, images, its ratio to CLIPood, phase seconds where the method
records them) and writes them with the machine's description to ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu import generated_images

from guidg.backbone import BackboneSpec, load_backbone, register_model_configs, tower_depths
from guidg.image_cache import CacheSettings, using_image_cache
from guidg.methods import METHODS, fit_method, get_method
from guidg.presets import method_config
from guidg.settings import MethodConfig
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.loading import LabeledImages, TaskData
from imagenet_dg.taxonomy import load_taxonomy

NEW_METHODS = ("linear-probe", "cocoop", "maple", "clip-adapter", "tip-adapter", "tip-adapter-f", "clip-lora")
"""The baselines measured beside CLIPood by default (those registered)."""

ANCHOR = "clipood"


def synthetic_task(folder: Path, sources: int, classes: int, shots: int, workers: int) -> TaskData:
    """A few-shot task of ``sources`` domains, each with an expert and a guide pool of ``classes`` x ``shots``
    images (prompt and adapter methods train on the expert pools and select on the guide pools; the fine-tuning
    bases train on the guide pools), and no test images."""
    taxonomy = load_taxonomy()
    wnids = taxonomy.wnids[:classes]
    domains = tuple(f"source{i}" for i in range(sources))
    expert = {d: generated_images(folder, f"{d}-expert", classes * shots, classes, workers) for d in domains}
    guide = {d: generated_images(folder, f"{d}-guide", classes * shots, classes, workers) for d in domains}
    empty = LabeledImages((), (), ())
    return TaskData(
        name="benchmark", class_names=tuple(taxonomy.names[w] for w in wnids), class_ids=tuple(wnids),
        target="none", sources=domains, expert=expert, guide=guide, held_out={d: empty for d in domains},
        test=empty,
    )


def shortened(method: str, steps: int, layers: int) -> tuple[MethodConfig, dict[str, dict[str, Any]]]:
    """The paper configuration of ``method`` with its training cut to one epoch or ``steps`` steps, and prompted
    layers (MaPLe's ``depth``) cut to the model's ``layers``; and the changes made."""
    config = method_config(method, "paper")
    changes: dict[str, dict[str, Any]] = {}
    for section in config.sections():
        fields = {f.name for f in dataclasses.fields(section)}
        change: dict[str, Any] = {}
        if "depth" in fields and section.depth > layers:
            change["depth"] = layers
        if "iterations" in fields:
            change["iterations"] = steps
        elif "steps_per_epoch" in fields:
            change.update(epochs=1, steps_per_epoch=steps)
        elif "epochs" in fields:
            change["epochs"] = 1
            if "warmup_epochs" in fields:
                change["warmup_epochs"] = 0
            if "cached_views" in fields:
                change["cached_views"] = min(section.cached_views, 1)
        if "checkpoint_every" in fields:
            change["checkpoint_every"] = max(steps, 1) * 1000  # no training checkpoint inside the timed run
        if change:
            changes[section.NAME] = change
    return config.replace(**changes), changes


def images_seen(config: MethodConfig, task: TaskData) -> int:
    """Training images the method goes through under ``config`` (see the module's docstring)."""
    train = sum(len(task.expert[d]) for d in task.sources)
    for section in config.sections():
        fields = {f.name for f in dataclasses.fields(section)}
        if "iterations" in fields and section.iterations is not None:
            return section.iterations * section.batch_size
        if "steps_per_epoch" in fields:
            return section.epochs * section.steps_per_epoch * section.batch_per_domain * len(task.sources)
    for section in config.sections():
        if "epochs" in {f.name for f in dataclasses.fields(section)}:
            return section.epochs * train
    return train


def measure(method: str, backbone_spec: BackboneSpec, task: TaskData, device: str, steps: int, seed: int,
            cache: CacheSettings) -> dict[str, Any]:
    """One shortened training of ``method`` on a fresh backbone, timed."""
    backbone = load_backbone(backbone_spec, device=device)
    towers = tower_depths(backbone_spec.arch)
    config, changes = shortened(method, steps, min(towers.text, towers.vision or towers.text))
    with using_image_cache(cache):
        if backbone.device.type == "cuda":
            torch.cuda.synchronize(backbone.device)
        started = time.perf_counter()
        predictor = fit_method(method, backbone, task, config, seed=seed, num_workers=cache.workers)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize(backbone.device)
        seconds = time.perf_counter() - started
    images = images_seen(config, task)
    return {
        "method": method, "images": images, "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 2),
        "phase_seconds": {k: round(float(v), 3) for k, v in predictor.details.get("phase_seconds", {}).items()},
        "changes": changes, "n_trainable": int(predictor.n_trainable),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip architecture, random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="+", default=[m for m in NEW_METHODS if m in METHODS],
                        choices=[m for m in METHODS if get_method(m).base is None])
    parser.add_argument("--sources", type=int, default=3)
    parser.add_argument("--classes", type=int, default=7, help="7: PACS")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps of step-counted methods")
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    register_model_configs()
    spec = BackboneSpec(args.arch, None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="method-throughput-") as scratch:
        root = Path(scratch)
        task = synthetic_task(root / "images", args.sources, args.classes, args.shots, args.workers)
        cache = CacheSettings(root / "cache", place="benchmark", workers=args.workers)
        measure(ANCHOR, spec, task, args.device, 1, args.seed, cache)  # untimed: builds the caches, warms up
        for method in (ANCHOR, *(m for m in args.methods if m != ANCHOR)):
            row = measure(method, spec, task, args.device, args.steps, args.seed, cache)
            rows.append(row)
    anchor = rows[0]["images_per_s"]
    for row in rows:
        row["vs_clipood"] = round(row["images_per_s"] / anchor, 3)
        phases = ", ".join(f"{k} {v} s" for k, v in row["phase_seconds"].items())
        print(f"{row['method']:>14}: {row['images_per_s']:10.1f} images/s ({row['images']} images in "
              f"{row['seconds']} s; {row['vs_clipood']}x CLIPood){'; ' + phases if phases else ''}")
    if args.json is not None:
        machine = {"platform": platform.platform(), "torch": torch.__version__, "device": args.device,
                   "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   "threads": torch.get_num_threads()}
        payload = {"arch": args.arch, "sources": args.sources, "classes": args.classes, "shots": args.shots,
                   "steps": args.steps, "machine": machine, "results": rows}
        write_text_atomic(args.json, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
