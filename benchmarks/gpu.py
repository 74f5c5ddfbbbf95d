"""GPU speed of the library measured side by side with a plain open_clip loop, in one run.

Sections (each prints images/s, the fraction of the device's bf16 dense peak where FLOPs are counted, and its
ratio against its target):

- ``anchor``: a plain open_clip training step (image encoder forward under bf16 autocast, 100 * cos logits
  against fixed class features, cross-entropy, backward, fused AdamW) and a plain evaluation pass
  (``visual(x)`` under bf16 autocast, no grad), written here, on tensors already on the device; uncompiled and
  with ``torch.compile``.
- ``library_step``: ``guidg.finetune.train_step`` (GuiDG step 2: CMAttn over 3 experts, guided loss) on the
  same device tensors, uncompiled and with the image encoder compiled (``Backbone.compile_image_encoder``, the
  library's ``pipeline.compile``).
  Target: at least 1.0x the compiled anchor.
- ``end_to_end``: ``guidg.finetune.finetune_image_encoder`` on generated 500x375 JPEGs through the decoded-image
  cache, in steady state (``--steps`` optimiser steps timed after ``--warmup``); ``end_to_end_device_augment``
  the same with RandAugment on the GPU (``pipeline.augment_on=device``), ``end_to_end_compiled`` with the
  encoder compiled (``pipeline.compile``). Target: 80% of ``library_step`` (uncompiled against uncompiled, and
  compiled against compiled where both ran).
- ``evaluation``: ``guidg.evaluation.image_features`` end to end on generated JPEGs (second pass, cache built);
  ``evaluation_compiled`` with the encoder compiled. Target: 80% of the anchor's evaluation pass (the faster
  of compiled and uncompiled on each side).
- ``cache_build``: building the decoded-image cache of the evaluation images, with Pillow in ``--workers``
  processes and with nvjpeg. Target: 3,000 img/s.
- ``harness_runs``: ``imagenet-dg evaluate --mini`` end to end (task a) with the packaged tiny model, with
  the default pipeline and with every pipeline setting: a check that the whole device path runs (bf16).
- ``step1``: one prompt-expert step with each text encoding (``full``, ``cut``, ``shared-prefix``,
  ``shared-prefix-padded``) on cached features, the encoding the library chooses on this device, and the plain
  CoOp loop (decode 32 files, augment, encode, 77-token text tower); plus building the step-1 feature cache
  (8 views of a pool) through the image pipeline. Target: the library's choice at least 10x the plain loop.

Random weights, no network. Runs in under 8 minutes on an H100/H200 (a time budget skips what would not fit,
saying so); ``--quick`` is a short check. On a CPU with the tiny model it is a smoke run of every section:

    python benchmarks/gpu.py --json gpu.json                                   # on a GPU
    python benchmarks/gpu.py --device cpu --arch imagenet-dg-tiny --quick      # smoke check on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from finetune_throughput import peak_tflops  # noqa: E402
from prompt_step import PlainStep, Stopwatch, class_names, write_synthetic_images  # noqa: E402

from guidg.backbone import Backbone, BackboneSpec, load_backbone, register_model_configs  # noqa: E402
from guidg.bases import get_base  # noqa: E402
from guidg.evaluation import image_features  # noqa: E402
from guidg.features import encode_views  # noqa: E402
from guidg.finetune import FinetuneConfig, finetune_image_encoder, train_step  # noqa: E402
from guidg.image_cache import CacheSettings, DecodeSpec, eval_spec, open_or_build, using_image_cache  # noqa: E402
from guidg.image_pipeline import eval_batch_size, machine_workers  # noqa: E402
from guidg.losses import LOGIT_SCALE  # noqa: E402
from guidg.methods.guidg import GuidgConfig, new_cmattn  # noqa: E402
from guidg.presets import get_preset  # noqa: E402
from guidg.prompt_training import PromptConfig  # noqa: E402
from guidg.prompts import TEXT_ENCODINGS, PromptLearner, choose_text_encoding  # noqa: E402
from guidg.seeding import generator  # noqa: E402
from guidg.transforms import prompt_train_transform  # noqa: E402
from imagenet_dg.atomic import write_text_atomic  # noqa: E402
from imagenet_dg.loading import LabeledImages  # noqa: E402

TARGETS = {
    "library_step_vs_compiled_anchor": 1.0,
    "end_to_end_vs_library_step": 0.8,
    "evaluation_vs_anchor": 0.8,
    "step1_default_vs_plain": 10.0,
    "cache_build_images_per_second": 3000.0,
}


# ---------------------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(step: Callable[[], Any], items: int, steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Items per second of ``step`` over ``steps`` calls after ``warmup``, waiting for the device only at the ends."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    return {"seconds_per_step": seconds / steps, "images_per_second": items * steps / seconds, "steps": steps}


def count_flops(step: Callable[[], Any]) -> float | None:
    """FLOPs of one call of ``step``; None when the counter cannot follow it (the section's timing still counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            step()
    except Exception as error:  # noqa: BLE001 - a missing FLOP formula must not lose the section's figures
        print(f"FLOPs not counted: {type(error).__name__}: {error}", flush=True)
        return None
    return float(counter.get_total_flops())


def with_peak(result: dict[str, Any], flops: float | None, peak: float | None) -> dict[str, Any]:
    if flops:
        result["tflop_per_step"] = flops / 1e12
        result["achieved_tflops"] = flops / result["seconds_per_step"] / 1e12
        result["fraction_of_bf16_peak"] = result["achieved_tflops"] / peak if peak else None
    return result


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


# ---------------------------------------------------------------------------------------------------------
# Data


def _write_jpeg(job: tuple[str, int]) -> None:
    path, seed = job
    rng = np.random.default_rng(seed)
    # Smooth shapes plus grain: files of a natural photo's size (a pure-noise JPEG decodes much slower).
    coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC), dtype=np.int16)
    picture = np.clip(picture + rng.integers(-12, 13, picture.shape), 0, 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(picture).save(data, format="JPEG", quality=90)
    Path(path).write_bytes(data.getvalue())


def generated_images(folder: Path, name: str, count: int, classes: int, workers: int) -> LabeledImages:
    """``count`` 500x375 JPEGs in ``folder/name``, written in parallel, as one labelled domain."""
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{i:06d}.jpg" for i in range(count)]
    jobs = [(str(p), zlib.crc32(f"{name}/{i}".encode())) for i, p in enumerate(paths)]
    if workers > 1:
        with Pool(workers) as pool:
            pool.map(_write_jpeg, jobs, chunksize=16)
    else:
        for job in jobs:
            _write_jpeg(job)
    return LabeledImages(tuple(paths), tuple(i % classes for i in range(count)), (name,) * count)


# ---------------------------------------------------------------------------------------------------------
# Sections


def plain_model(arch: str, device: torch.device) -> torch.nn.Module:
    register_model_configs()
    torch.manual_seed(0)
    return open_clip.create_model(arch, pretrained=None, precision="fp32", device=device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def anchor(args: argparse.Namespace, device: torch.device, peak: float | None, compiled: bool) -> dict[str, Any]:
    """The plain open_clip training step and evaluation pass on device tensors."""
    model = plain_model(args.arch, device)
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    dim = model.visual.output_dim
    batch = args.batch_per_domain * args.domains
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(args.classes, (batch,), device=device)
    head = F.normalize(torch.randn(args.classes, dim, device=device), dim=-1)
    visual.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(visual.parameters(), lr=1e-5, weight_decay=0.1, fused=device.type == "cuda")
    forward = torch.compile(visual) if compiled else visual

    def step() -> None:
        with autocast(device):
            features = F.normalize(forward(images).float(), dim=-1)
        loss = F.cross_entropy(LOGIT_SCALE * features @ head.T, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    flops = None if compiled else count_flops(step)
    started = time.perf_counter()
    step()  # the first call compiles
    sync(device)
    compile_seconds = time.perf_counter() - started
    train = with_peak(throughput(step, batch, args.train_steps, args.warmup, device), flops, peak)
    train["batch"] = batch

    visual.eval()
    eval_images = torch.randn(args.eval_batch, 3, size, size, device=device)
    eval_forward = torch.compile(visual) if compiled else visual

    def evaluate() -> None:
        with torch.no_grad(), autocast(device):
            eval_forward(eval_images)

    eval_flops = None if compiled else count_flops(evaluate)
    evaluate()
    evaluation = with_peak(throughput(evaluate, args.eval_batch, args.eval_steps, args.warmup, device), eval_flops, peak)
    evaluation["batch"] = args.eval_batch
    return {"train": train, "evaluation": evaluation, "compiled": compiled, "first_step_seconds": compile_seconds}


def library_backbone(args: argparse.Namespace, device: torch.device) -> Backbone:
    return load_backbone(BackboneSpec(args.arch, None), device)


def library_step(args: argparse.Namespace, device: torch.device, peak: float | None, compiled: bool) -> dict[str, Any]:
    """``guidg.finetune.train_step`` (guided, 3 experts) on device tensors, as the fine-tuning loop builds it."""
    backbone = library_backbone(args, device)
    size, dim = backbone.image_size, backbone.embed_dim
    batch = args.batch_per_domain * args.domains
    config = FinetuneConfig(batch_per_domain=args.batch_per_domain)
    heads = F.normalize(torch.randn(args.domains, args.classes, dim, device=device), dim=-1)
    cmattn = new_cmattn(heads, GuidgConfig(), 0).to(device)
    erm = get_base("erm").objective(get_preset("paper"))
    visual = backbone.model.visual.train()
    visual.requires_grad_(True)
    parameters = list(visual.parameters()) + list(cmattn.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda")
    if compiled:
        backbone.compile_image_encoder()  # the library's own option (pipeline.compile)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(args.classes, (batch,), device=device)

    def step() -> None:
        train_step(backbone, cmattn, heads, images, labels, erm, config, optimizer)

    flops = None if compiled else count_flops(step)
    started = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - started
    result = with_peak(throughput(step, batch, args.train_steps, args.warmup, device), flops, peak)
    result.update(batch=batch, compiled=compiled, first_step_seconds=first)
    return result


def end_to_end(args: argparse.Namespace, device: torch.device, pools: list[LabeledImages], root: Path, *,
               augment_on: str = "workers", compiled: bool = False, steps: int | None = None) -> dict[str, Any]:
    """Steady-state images/s of ``finetune_image_encoder`` on JPEG files through the decoded-image cache, with
    RandAugment where ``augment_on`` says and the image encoder compiled or not (the pipeline settings)."""
    backbone = library_backbone(args, device)
    if compiled:
        backbone.compile_image_encoder()
    steps = args.steps if steps is None else steps
    total = args.warmup_e2e + steps
    config = FinetuneConfig(
        batch_per_domain=args.batch_per_domain, epochs=1, steps_per_epoch=total, checkpoint_every=10**9
    )
    heads = F.normalize(torch.randn(args.domains, args.classes, backbone.embed_dim), dim=-1)
    marks: dict[str, float] = {}
    count = {"steps": 0}

    def after_step(optimizer: torch.optim.Optimizer, *_: Any) -> None:
        count["steps"] += 1
        if count["steps"] == args.warmup_e2e:
            sync(device)
            marks["steady_start"] = time.perf_counter()
        elif count["steps"] == total:
            sync(device)
            marks["steady_end"] = time.perf_counter()

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(after_step)
    started = time.perf_counter()
    try:
        with using_image_cache(CacheSettings(root, place="benchmark", workers=args.workers, augment_on=augment_on)):
            finetune_image_encoder(
                backbone, pools, heads, config, get_base("erm").objective(get_preset("paper")), seed=0,
                method="benchmark", cmattn=new_cmattn(heads, GuidgConfig(), 0), num_workers=args.workers,
            )
    finally:
        handle.remove()
    sync(device)
    whole = time.perf_counter() - started
    batch = args.batch_per_domain * args.domains
    steady = marks["steady_end"] - marks["steady_start"]
    return {
        "steps_timed": steps,
        "warmup_steps": args.warmup_e2e,
        "workers": args.workers,
        "augment_on": augment_on,
        "compiled": compiled,
        "images_per_second": steps * batch / steady,
        "whole_run_seconds": whole,
        "whole_run_images_per_second": total * batch / whole,
        "pool_images": sum(len(p) for p in pools),
    }


def evaluation(args: argparse.Namespace, device: torch.device, images: LabeledImages, root: Path,
               compiled: bool = False) -> dict[str, Any]:
    """``image_features`` end to end: first pass (cache already built by cache_build), second pass, and the
    uncached Pillow path for reference; with ``compiled``, the encoder under ``pipeline.compile``."""
    backbone = library_backbone(args, device)
    if compiled:
        backbone.compile_image_encoder()
    result: dict[str, Any] = {"images": len(images), "workers": args.workers, "compiled": compiled}
    with using_image_cache(CacheSettings(root, place="benchmark", workers=args.workers)):
        for name in ("first_pass", "second_pass"):
            sync(device)
            start = time.perf_counter()
            image_features(backbone, images, num_workers=args.workers)
            sync(device)
            result[name] = {"images_per_second": len(images) / (time.perf_counter() - start)}
    if not args.quick and not compiled:
        start = time.perf_counter()
        image_features(backbone, images, num_workers=args.workers)
        sync(device)
        result["uncached_pillow"] = {"images_per_second": len(images) / (time.perf_counter() - start)}
    result["images_per_second"] = result["second_pass"]["images_per_second"]
    result["batch"] = eval_batch_size(device)
    return result


def cache_build(args: argparse.Namespace, device: torch.device, images: LabeledImages, root: Path, size: int) -> dict[str, Any]:
    result: dict[str, Any] = {"images": len(images), "workers": args.workers}
    start = time.perf_counter()
    open_or_build(root, images, eval_spec(size), workers=args.workers)
    result["pil"] = {"images_per_second": len(images) / (time.perf_counter() - start)}
    if device.type == "cuda":
        start = time.perf_counter()
        try:
            cache, _ = open_or_build(root / "nvjpeg", images, DecodeSpec(size, "nvjpeg"), workers=args.workers,
                                     device=device)
            result["nvjpeg"] = {"images_per_second": len(images) / (time.perf_counter() - start),
                                "decoded_by": cache.record.get("decoded_by")}
        except Exception as error:  # noqa: BLE001 - reported, the run goes on
            result["nvjpeg"] = {"error": f"{type(error).__name__}: {error}"}
    best = max(v.get("images_per_second", 0.0) for v in result.values() if isinstance(v, dict))
    result["images_per_second"] = best
    return result


def step1(args: argparse.Namespace, device: torch.device, folder: Path, pool: LabeledImages, root: Path) -> dict[str, Any]:
    """One step-1 training step with each text encoding, the library's choice, and the plain CoOp loop."""
    backbone = library_backbone(args, device)
    config = PromptConfig()
    plain_images = write_synthetic_images(folder / "plain-step", config.batch_size, 0)
    result: dict[str, Any] = {"classes": {}}
    for count in args.step1_classes:
        names = class_names(count)
        row: dict[str, Any] = {}
        features = F.normalize(torch.randn(config.batch_size, backbone.embed_dim, device=device), dim=-1)
        labels = torch.randint(count, (config.batch_size,), device=device)
        for encoding in TEXT_ENCODINGS:
            learner = PromptLearner(
                backbone.text, backbone.tokenizer, names, n_ctx=config.n_ctx, generator=generator(0, "ctx"),
                text_encoding=encoding,
            )
            optimizer = torch.optim.SGD(learner.parameters(), lr=config.lr, momentum=config.momentum)

            def step() -> None:
                with backbone.autocast():
                    text = learner()
                loss = F.cross_entropy(LOGIT_SCALE * features @ text.float().T, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            timed = throughput(step, config.batch_size, args.step1_steps, 1, device)
            row[encoding] = {"seconds_per_step": timed["seconds_per_step"]}
        chooser = PromptLearner(backbone.text, backbone.tokenizer, names, n_ctx=config.n_ctx, generator=generator(0, "ctx"))
        choice = choose_text_encoding(chooser, True, backbone.autocast)
        row["library_choice"] = choice
        plain = PlainStep(backbone, names, config, 0, plain_images)
        clock = Stopwatch(device)
        plain_times = []
        for index in range(1 + args.plain_steps):
            clock.start()
            plain(clock)
            if index > 0:
                plain_times.append(sum(clock.laps.values()))
        row["plain"] = {"seconds_per_step": statistics.median(plain_times)}
        default = row[choice["text_encoding"]]["seconds_per_step"]
        row["default_vs_plain"] = row["plain"]["seconds_per_step"] / default
        result["classes"][str(count)] = row
        del plain
    transform = prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
    with using_image_cache(CacheSettings(root, place="benchmark", workers=args.workers)):
        for name in ("feature_cache_first", "feature_cache_second"):
            sync(device)
            start = time.perf_counter()
            encode_views(backbone, pool, transform, views=config.cached_views, seed=0,
                         batch_size=eval_batch_size(device), num_workers=args.workers)
            sync(device)
            seconds = time.perf_counter() - start
            result[name] = {"image_views_per_second": len(pool) * config.cached_views / seconds,
                            "seconds_per_view": seconds / config.cached_views, "images": len(pool)}
    return result


def harness_runs(args: argparse.Namespace, device: torch.device, folder: Path) -> dict[str, Any]:
    """The whole evaluation path on the device: ``imagenet-dg evaluate --mini`` (task a) with the packaged
    tiny model (GuiDG+CLIPood and zero-shot, the mini preset), once with the default pipeline and once with
    every pipeline setting (RandAugment on the device, nvjpeg on a GPU, the compiled encoder). A correctness
    check of the device path (bf16 autocast, fused AdamW, the measured text encoding, the records), not a
    speed figure."""
    from guidg import harness, launchers
    from guidg.backbone import TINY_MODEL

    # the embedded default's preset, as README's first command runs it; shortened for --quick
    fast = ("prompt.epochs=4", "finetune.epochs=1", "finetune.steps_per_epoch=20") if args.quick else ()
    settings = {
        "default": (),
        "pipeline": ("pipeline.augment_on=device",) + (("pipeline.compile=true",) if args.compile_on else ())
        + (("pipeline.decoder=nvjpeg",) if device.type == "cuda" else ()),
    }
    result: dict[str, Any] = {}
    for name, extra in settings.items():
        started = time.perf_counter()
        sweep = harness.Sweep(
            mini=True, targets=("a",), methods=("zeroshot", "guidg"), base="clipood", model=TINY_MODEL,
            pretrained="mini", seeds=(1,), preset="mini", overrides=fast + extra, device=str(device),
            workers=args.workers, runs=folder / "harness-runs", mini_dir=folder / "harness-mini",
        )
        outcomes = launchers.run_local(harness.make_plan(sweep, on_build=lambda text: None))
        records = [o.record for o in outcomes]
        result[name] = {
            "seconds": time.perf_counter() - started,
            "overrides": list(extra),
            "runs": {f"{r.method}{'+' + r.base if r.base else ''}": {
                "accuracy": r.accuracy, "precision": r.precision, "device_type": r.device_type,
                "text_encoding": (r.details.get("text_encoding") or {}).get("text_encoding"),
            } for r in records},
        }
        print(f"[harness_runs] {name}: " + ", ".join(f"{k} {v['accuracy']:.1f}% ({v['precision']})"
                                                     for k, v in result[name]["runs"].items()), flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------
# Report


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def best(*values: float | None) -> float | None:
    return max([v for v in values if v], default=None)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: measured ratio (or rate), target, met."""
    get = lambda *keys: _dig(results, keys)  # noqa: E731
    anchor_compiled = get("anchor_compiled", "train", "images_per_second")
    anchor_plain = get("anchor", "train", "images_per_second")
    lib = get("library_step", "images_per_second")
    lib_compiled = get("library_step_compiled", "images_per_second")
    best_lib = max([v for v in (lib, lib_compiled) if v], default=None)
    anchor_eval = max([v for v in (get("anchor", "evaluation", "images_per_second"),
                                   get("anchor_compiled", "evaluation", "images_per_second")) if v], default=None)
    rows = [
        ("library_step_vs_compiled_anchor", ratio(best_lib, anchor_compiled or anchor_plain),
         "best library step / compiled anchor step" + ("" if anchor_compiled else " (uncompiled: no compiled figure)")),
        ("end_to_end_vs_library_step", ratio(best(get("end_to_end", "images_per_second"),
                                                   get("end_to_end_device_augment", "images_per_second")), lib),
         "end to end (RandAugment in the workers or on the device, the faster) / library step, uncompiled"),
        ("evaluation_vs_anchor", ratio(best(get("evaluation", "images_per_second"),
                                            get("evaluation_compiled", "images_per_second")), anchor_eval),
         "evaluation end to end (the faster of plain and compiled) / best anchor evaluation pass"),
    ]
    if get("end_to_end_compiled", "images_per_second") and lib_compiled:
        rows.insert(2, ("end_to_end_vs_library_step (compiled)",
                        ratio(get("end_to_end_compiled", "images_per_second"), lib_compiled),
                        "end to end, compiled encoder / library step, compiled"))
    for count, row in (get("step1", "classes") or {}).items():
        rows.append((f"step1_default_vs_plain (C={count})", row.get("default_vs_plain"),
                     f"{row['library_choice']['text_encoding']} ({row['library_choice']['chosen_by']}) / plain"))
    rows.append(("cache_build_images_per_second", get("cache_build", "images_per_second"), "best decoder"))
    out = []
    for name, value, what in rows:
        target = TARGETS[name.split(" ")[0]]
        out.append({"target_name": name, "value": value, "target": target, "met": None if value is None else value >= target,
                    "what": what})
    return out


def _dig(tree: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def render(results: dict[str, Any]) -> str:
    lines = ["", "| measure | images/s | fraction of bf16 peak |", "|---|---|---|"]
    fmt = lambda v, spec=".0f": "-" if v is None else format(v, spec)  # noqa: E731
    for label, keys in [
        ("anchor train step", ("anchor", "train")),
        ("anchor train step, compiled", ("anchor_compiled", "train")),
        ("anchor evaluation pass", ("anchor", "evaluation")),
        ("anchor evaluation pass, compiled", ("anchor_compiled", "evaluation")),
        ("library step 2 on device tensors", ("library_step",)),
        ("library step 2, compiled encoder", ("library_step_compiled",)),
        ("library step 2 end to end (steady)", ("end_to_end",)),
        ("  the same, RandAugment on the device", ("end_to_end_device_augment",)),
        ("  the same, compiled encoder", ("end_to_end_compiled",)),
        ("library evaluation end to end (2nd pass)", ("evaluation",)),
        ("  the same, compiled encoder", ("evaluation_compiled",)),
        ("cache build (best decoder)", ("cache_build",)),
    ]:
        node = _dig(results, keys) or {}
        lines.append(f"| {label} | {fmt(node.get('images_per_second'))} | {fmt(node.get('fraction_of_bf16_peak'), '.1%')} |")
    for count, row in (_dig(results, ("step1", "classes")) or {}).items():
        cells = ", ".join(f"{k} {row[k]['seconds_per_step'] * 1000:.1f} ms" for k in (*TEXT_ENCODINGS, "plain"))
        lines.append(f"| step 1, C={count}: {cells} | | |")
    for name in ("feature_cache_first", "feature_cache_second"):
        node = _dig(results, ("step1", name))
        if node:
            lines.append(f"| step-1 {name.replace('_', ' ')} (image-views/s) | {node['image_views_per_second']:.0f} | |")
    lines += ["", "| target | measured | target | met |", "|---|---|---|---|"]
    for v in results["verdicts"]:
        shown = "-" if v["value"] is None else f"{v['value']:.2f}"
        met = "not measured" if v["met"] is None else ("yes" if v["met"] else "NO")
        lines.append(f"| {v['target_name']}: {v['what']} | {shown} | {v['target']} | {met} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="few steps and images: a check that every section runs")
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: the machine's cores - 1)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--batch-per-domain", type=int, default=16)
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                        help="torch.compile sections: auto = on a GPU without --quick")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later sections are skipped past it")
    parser.add_argument("--sections", nargs="+", default=None, help="run only these sections")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    args.workers = machine_workers(args.device) if args.workers is None else args.workers
    args.workers_generate = max(1, min(16, os.cpu_count() or 1))
    args.warmup = 2 if quick else 5
    args.train_steps = 3 if quick else 30
    args.eval_batch = 64 if quick else 512
    args.eval_steps = 3 if quick else 20
    args.steps = 10 if quick else 220
    args.steps_variant = 10 if quick else 100
    args.warmup_e2e = 3 if quick else 20
    args.eval_images = 96 if quick else 10240
    args.pool_images = 32 if quick else 512
    args.step1_classes = ([7] if args.device == "cpu" else [200]) if quick else [200, 1000]
    args.step1_steps = 2 if quick else 10
    args.plain_steps = 1 if quick else 3
    args.feature_pool = 32 if quick else 1024
    return args


SECTION_ORDER = ("anchor", "library_step", "cache_build", "evaluation", "end_to_end", "step1",
                 "end_to_end_device_augment", "anchor_compiled", "library_step_compiled", "harness_runs",
                 "evaluation_compiled", "end_to_end_compiled")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    budget = Budget(args.budget)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = peak_tflops(name) if device.type == "cuda" else None
    compile_on = args.compile == "yes" or (args.compile == "auto" and device.type == "cuda" and not args.quick)
    args.compile_on = compile_on
    sections = [s for s in SECTION_ORDER if (args.sections is None or s in args.sections)
                and (compile_on or not s.endswith("_compiled"))]
    print(f"device {name} (bf16 peak {peak} TFLOP/s), arch {args.arch}, workers {args.workers}, "
          f"sections {' '.join(sections)}{' (quick)' if args.quick else ''}", flush=True)
    results: dict[str, Any] = {"skipped": {}, "errors": {}}
    started = time.perf_counter()
    # Seconds each section is foreseen to need on an H100-class GPU, to skip rather than overrun the budget.
    foreseen = {"anchor_compiled": 90, "library_step_compiled": 90, "end_to_end": 40, "step1": 40,
                "end_to_end_device_augment": 25, "harness_runs": 90, "evaluation_compiled": 60,
                "end_to_end_compiled": 90}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as temporary:
        folder = Path(temporary)
        gen_start = time.perf_counter()
        eval_images = generated_images(folder, "eval", args.eval_images, args.classes, args.workers_generate)
        pools = [generated_images(folder, f"pool{d}", args.pool_images, args.classes, args.workers_generate)
                 for d in range(args.domains)]
        feature_pool = generated_images(folder, "expert", args.feature_pool, args.classes, args.workers_generate)
        results["generate_seconds"] = time.perf_counter() - gen_start
        root = folder / "decoded-images"
        size = load_backbone(BackboneSpec(args.arch, None), "cpu").image_size
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "anchor": lambda: anchor(args, device, peak, compiled=False),
            "anchor_compiled": lambda: anchor(args, device, peak, compiled=True),
            "library_step": lambda: library_step(args, device, peak, compiled=False),
            "library_step_compiled": lambda: library_step(args, device, peak, compiled=True),
            "cache_build": lambda: cache_build(args, device, eval_images, root, size),
            "evaluation": lambda: evaluation(args, device, eval_images, root),
            "end_to_end": lambda: end_to_end(args, device, pools, root),
            "end_to_end_device_augment": lambda: end_to_end(args, device, pools, root, augment_on="device",
                                                            steps=args.steps_variant),
            "end_to_end_compiled": lambda: end_to_end(args, device, pools, root, compiled=True,
                                                      steps=args.steps_variant),
            "evaluation_compiled": lambda: evaluation(args, device, eval_images, root, compiled=True),
            "harness_runs": lambda: harness_runs(args, device, folder),
            "step1": lambda: step1(args, device, folder, feature_pool, root),
        }
        for section in sections:
            need = foreseen.get(section, 15) * (0.2 if args.quick else 1.0)
            if budget.left() < need:
                results["skipped"][section] = f"{budget.left():.0f} s of budget left, about {need:.0f} s needed"
                print(f"[{section}] skipped: {results['skipped'][section]}", flush=True)
                continue
            section_start = time.perf_counter()
            try:
                results[section] = runners[section]()
                results[section]["section_seconds"] = time.perf_counter() - section_start
                shown = results[section].get("images_per_second") or _dig(results[section], ("train", "images_per_second"))
                print(f"[{section}] {time.perf_counter() - section_start:.1f} s"
                      + (f", {shown:.0f} img/s" if shown else ""), flush=True)
            except Exception as error:  # noqa: BLE001 - one failing section must not lose the others' figures
                results["errors"][section] = f"{type(error).__name__}: {error}"
                print(f"[{section}] failed: {results['errors'][section]}", flush=True)
                traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if args.json is not None:  # after every section: a run cut short keeps what it measured
                write_text_atomic(args.json, json.dumps(results, indent=2, default=str) + "\n")
    results["verdicts"] = verdicts(results)
    results["total_seconds"] = time.perf_counter() - started
    results["environment"] = {
        "device_name": name, "peak_bf16_tflops": peak, "torch": torch.__version__, "open_clip": open_clip.__version__,
        "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    print(render(results))
    print(f"\ntotal {results['total_seconds']:.0f} s")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(results, indent=2, default=str) + "\n")
    missed = [v for v in results["verdicts"] if v["met"] is False]
    return 1 if missed or results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
