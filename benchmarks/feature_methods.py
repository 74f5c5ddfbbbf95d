"""Training CLIP-Adapter and Tip-Adapter-F on cached features against encoding images at every step.

Both methods leave the image encoder frozen, so the library encodes each augmented training view once and
trains on features: ``train_clip_adapter`` with ``cached_views`` views per image, ``train_tip_adapter_f`` on
the ``augment_views`` views its cache keys are built from. The plain loop, as the reference code trains,
decodes, augments and encodes every batch at every step: ``cached_views = 0`` and ``cached_training = False``,
the same functions with the same model, data, seed and number of steps. Each method is run once each way and
its phases timed by the run itself (``record["seconds"]``):

- ``features``: the zero-shot classifier aside, what is encoded before training: the validation images in
  both modes, and the cached views (CLIP-Adapter, cached) or the key views (Tip-Adapter-F, both modes);
- ``training``: the epochs; the figure compared against the target (at least 10x, same steps);
- ``search``: Tip-Adapter-F's (alpha, beta) grid on validation, the same in both modes.

From these it also reports the whole run with the default number of epochs on the same images: plain =
features + default steps x plain step, cached = features + view cache + default steps x cached step, where
the cost of one cached view is what the cached run's ``features`` phase spent beyond the plain run's.

The images are JPEG files of random pixels (no timing depends on their content), ``--classes`` x ``--shots``
training images in one source domain and ``--classes`` validation images; the models are the tiny test model
and ViT-B/32 with random weights, at small image counts so that the plain loop fits in minutes on a CPU.

    python benchmarks/feature_methods.py [--models tiny vit-b-32] [--json FILE]

The exit status is 1 when a training phase of a model run is less than 10x faster cached than plain, else 0.
Other processes on the machine slow every figure: the load average is printed and recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from guidg.backbone import TINY_SPEC, BackboneSpec, load_backbone
from guidg.clip_adapter import ClipAdapterConfig, train_clip_adapter
from guidg.tip_adapter import TipAdapterFConfig, train_tip_adapter_f
from imagenet_dg.atomic import write_bytes_atomic, write_text_atomic
from imagenet_dg.loading import LabeledImages, TaskData
from imagenet_dg.taxonomy import load_taxonomy

MODELS: dict[str, BackboneSpec] = {"tiny": TINY_SPEC, "vit-b-32": BackboneSpec("ViT-B-32", None)}
"""Models this benchmark can time, by name; random weights, since timing does not depend on them."""

TARGET_SPEEDUP = 10.0
IMAGE_SIZE = 256
"""Side of the generated JPEGs: larger than every model's input, so every crop is resized as with photos."""


def write_images(folder: Path, count: int, classes: int, seed: int, prefix: str) -> LabeledImages:
    """``count`` JPEGs of random pixels in ``folder``, labelled round-robin over ``classes``, one domain."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        data = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)).save(data, format="JPEG")
        path = folder / f"{prefix}-{index:05d}.jpg"
        write_bytes_atomic(path, data.getvalue())
        paths.append(path.resolve())
    return LabeledImages(tuple(paths), tuple(i % classes for i in range(count)), ("synthetic",) * count)


def synthetic_task(folder: Path, classes: int, shots: int, seed: int) -> TaskData:
    """One source domain of ``classes`` x ``shots`` training images (its expert pool) and ``classes``
    validation images (its guide pool, what the few-shot protocol selects on); no test."""
    taxonomy = load_taxonomy()
    wnids = taxonomy.wnids[:classes]
    train = write_images(folder, classes * shots, classes, seed, "train")
    validation = write_images(folder, classes, classes, seed + 1, "validation")
    empty = LabeledImages((), (), ())
    return TaskData(
        name="benchmark", class_names=tuple(taxonomy.names[w] for w in wnids), class_ids=tuple(wnids),
        target="none", sources=("synthetic",), expert={"synthetic": train}, guide={"synthetic": validation},
        held_out={"synthetic": empty}, test=empty,
    )


@dataclasses.dataclass(frozen=True)
class Method:
    """How to run one method cached and plain, and its defaults' number of steps on ``n`` images."""

    name: str
    train: Callable[..., Any]
    measured: Any
    plain_change: dict[str, Any]
    warmup_change: dict[str, Any]
    """An untimed short run: one epoch, one view."""
    default_steps: Callable[[int], int]
    cache_views: Callable[[Any], int]
    """Views the cached run encodes beyond the plain run."""


def clip_adapter_steps(n: int) -> int:
    config = ClipAdapterConfig()
    return config.epochs * (n // config.batch_size if n >= config.batch_size else 1)


def tip_f_steps(n: int) -> int:
    config = TipAdapterFConfig()
    return config.epochs * math.ceil(n / config.batch_size)


def methods(args: argparse.Namespace) -> list[Method]:
    """The two methods with the measured number of epochs (the other settings their defaults)."""
    return [
        Method("clip-adapter", train_clip_adapter, ClipAdapterConfig(epochs=args.adapter_epochs),
               {"cached_views": 0}, {"epochs": 1, "cached_views": 1}, clip_adapter_steps,
               lambda config: config.cached_views),
        Method("tip-adapter-f", train_tip_adapter_f, TipAdapterFConfig(epochs=args.tip_epochs),
               {"cached_training": False}, {"epochs": 1, "augment_views": 1}, tip_f_steps, lambda config: 0),
    ]


def run_method(method: Method, backbone: Any, task: TaskData, seed: int) -> dict[str, Any]:
    """Both modes of one method, phases and per-step seconds, and the whole-run totals at default epochs."""
    # An untimed one-epoch run first: the first optimiser steps and kernels of a process are slower.
    method.train(backbone, task, dataclasses.replace(method.measured, **method.warmup_change), seed=seed)
    runs = {}
    for mode, config in (("plain", dataclasses.replace(method.measured, **method.plain_change)),
                         ("cached", method.measured)):
        started = time.perf_counter()
        result = method.train(backbone, task, config, seed=seed)
        seconds = dict(result.record["seconds"])
        seconds["total"] = time.perf_counter() - started
        runs[mode] = {"seconds": seconds, "steps": result.record["steps"],
                      "step_seconds": seconds["training"] / result.record["steps"]}
        print(f"  {method.name} {mode}: {result.record['steps']} steps, training {seconds['training']:.2f} s "
              f"({runs[mode]['step_seconds'] * 1e3:.2f} ms/step), features {seconds['features']:.2f} s", flush=True)
    n = len(task.expert["synthetic"])
    views = method.cache_views(method.measured)
    extra = max(0.0, runs["cached"]["seconds"]["features"] - runs["plain"]["seconds"]["features"])
    view_seconds = extra / (views * n) if views else 0.0
    steps = method.default_steps(n)
    shared = runs["plain"]["seconds"]["features"] + runs["plain"]["seconds"].get("search", 0.0)
    whole = {
        "steps": steps,
        "plain": shared + steps * runs["plain"]["step_seconds"],
        "cached": shared + views * n * view_seconds + steps * runs["cached"]["step_seconds"],
    }
    return {
        "method": method.name,
        "config": dataclasses.asdict(method.measured),
        "images": n,
        "runs": runs,
        "training_speedup": runs["plain"]["seconds"]["training"] / runs["cached"]["seconds"]["training"],
        "step_speedup": runs["plain"]["step_seconds"] / runs["cached"]["step_seconds"],
        "cached_view_seconds": view_seconds,
        "whole_run_default_epochs": whole,
        "whole_run_speedup": whole["plain"] / whole["cached"],
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    """The Markdown table of every model and method."""
    rows = [
        (
            "| model | method | images | steps | plain s/step | cached s/step | training speedup | whole run (default "
            "epochs) plain / cached | whole-run speedup |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in results:
        for m in model["methods"]:
            plain, cached, whole = m["runs"]["plain"], m["runs"]["cached"], m["whole_run_default_epochs"]
            rows.append(
                f"| {model['model']} | {m['method']} | {m['images']} | {plain['steps']} "
                f"| {plain['step_seconds']:.4f} | "
                f"{cached['step_seconds']:.5f} | {m['training_speedup']:.0f}x | {whole['plain']:.0f} s / "
                f"{whole['cached']:.0f} s ({whole['steps']} steps) | {m['whole_run_speedup']:.1f}x |"
            )
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "vit-b-32"])
    parser.add_argument("--classes", type=int, default=8, help="classes of the synthetic task")
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 4],
                        help="training images per class, one value per model (or one for all)")
    parser.add_argument("--adapter-epochs", type=int, default=4, help="CLIP-Adapter epochs timed in both modes")
    parser.add_argument("--tip-epochs", type=int, default=4, help="Tip-Adapter-F epochs timed in both modes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if len(args.shots) not in (1, len(args.models)):
        parser.error(f"--shots takes one value or one per model ({len(args.models)})")
    if args.classes < 1 or min(args.shots) < 1 or args.adapter_epochs < 1 or args.tip_epochs < 1:
        parser.error("--classes, --shots, --adapter-epochs and --tip-epochs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Time both methods on every model, print the table, write ``--json``; 1 when the target is missed."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(f"cpu, {torch.get_num_threads()} threads, load average {load_before[0]:.1f} "
          "(other processes on the machine slow every figure)", flush=True)
    results = []
    shots = args.shots if len(args.shots) == len(args.models) else args.shots * len(args.models)
    with tempfile.TemporaryDirectory(prefix="feature-methods-") as folder:
        for name, model_shots in zip(args.models, shots):
            task_folder = Path(folder) / name
            task_folder.mkdir()
            task = synthetic_task(task_folder, args.classes, model_shots, args.seed)
            backbone = load_backbone(MODELS[name], "cpu")
            print(f"[{name}] {args.classes} classes x {model_shots} shots", flush=True)
            results.append({"model": name, "spec": dataclasses.asdict(MODELS[name]),
                            "methods": [run_method(m, backbone, task, args.seed) for m in methods(args)]})
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print()
    print(table(results))
    missed = [(r["model"], m["method"], m["training_speedup"]) for r in results for m in r["methods"]
              if m["training_speedup"] < TARGET_SPEEDUP]
    for model, method, ratio in missed:
        print(f"- below target: {model} {method} training {ratio:.1f}x")
    print(f"Target: training at least {TARGET_SPEEDUP:.0f}x faster on cached features; "
          f"{'missed' if missed else 'met'}. Total {elapsed:.0f} s (load average {load_after[0]:.1f} at the end).")
    if args.json is not None:
        record = {
            "benchmark": "feature_methods",
            "target_speedup": TARGET_SPEEDUP,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": {
                "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            },
            "elapsed_seconds": elapsed,
            "load_average_1min": {"start": load_before[0], "end": load_after[0]},
            "models": results,
            "target_met": not missed,
        }
        write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
