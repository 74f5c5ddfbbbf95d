"""Time of one prompt-expert training step (docs/methods.md, "CoOp"): feature cache and cut prompts against the plain loop.

Step 1 of GuiDG trains only M context vectors while both CLIP encoders stay frozen. ``train_prompt`` with
``cached_views > 0`` therefore encodes a few augmented views of the k-shot sample once and, at each step,
only gathers 32 cached image features; it runs the text tower on prompts cut after the longest prompt's EOS
token, and the PromptLearner runs the class-independent prefix ([SOS] and the context) once for all classes.
The plain loop, as the reference CoOp code trains, encodes freshly augmented images with the frozen image
encoder at every step and runs the text tower on all 77 positions.

One step is one SGD update on a batch of 32 images, with the same model, classes and data in every variant:

- ``plain``: decode 32 image files, RandomResizedCrop + flip, encode them (no grad), text features of all C
  classes from the full-length (77-token) prompt embeddings, logits 100 * cos, cross-entropy, backward, SGD.
- ``cached-cut``: gather 32 cached features, PromptLearner forward on the cut prompts, the same loss and update.
- ``cached-cut-shared``: as ``cached-cut`` with the shared-prefix text encoding (the library default).

Target: the cached variants at least 10x faster per step than ``plain``. Reported besides: the one-off cost
of building the cache (seconds per cached view of a k-shot sample of C classes, measured on a small sample of
image files and scaled), and the amortised total of a whole run (the paper's 31 epochs of a 16-shot sample,
``PromptConfig.cached_views`` views cached) as a second comparison.

The class names are the real ones (PACS's seven, the 200 of ImageNet-A, the 1000 of ImageNet); the images are
random pixels, since no timing depends on their content. The models are ViT-B/16 (the paper's architecture)
with random weights and the tiny test model. A total-time budget decides how many steps each case times and
skips a case that cannot fit (or whose activations cannot fit in memory); a skipped ``plain`` case is then
estimated from a smaller C (image encoding is independent of C, the text tower's cost is proportional to it)
and marked as an estimate.

Usage::

    python benchmarks/prompt_step.py [--models tiny vit-b-16] [--classes 7 200 1000] [--steps 3]
        [--budget 900] [--device cpu|cuda] [--json FILE]

The exit status is 1 when a ``cached-cut-shared`` step of ViT-B/16 (the library's way, on the paper's model)
is less than 10x faster than ``plain`` at some C, else 0. Timings share the machine with whatever else runs
on it: the load average is printed and recorded.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from guidg.backbone import TINY_SPEC, Backbone, BackboneSpec, load_backbone
from guidg.divergence import check_finite
from guidg.features import encode_views
from guidg.losses import LOGIT_SCALE
from guidg.prompt_training import PromptConfig, new_prompt_learner, prompt_optimizer
from guidg.prompts import PromptLearner
from guidg.seeding import generator
from guidg.transforms import prompt_train_transform
from imagenet_dg.atomic import write_bytes_atomic, write_text_atomic
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.images import open_image
from imagenet_dg.loading import LabeledImages
from imagenet_dg.taxonomy import load_taxonomy

MODELS: dict[str, BackboneSpec] = {
    "tiny": TINY_SPEC,
    "vit-b-16": BackboneSpec("ViT-B-16", None),
}
"""Models this benchmark can time, by name; random weights, since timing does not depend on them."""

PACS_NAMES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")

VARIANTS = ("plain", "cached-cut", "cached-cut-shared")
"""The step variants, slowest first; speedups are ``plain`` time over a cached variant's time."""

TARGET_SPEEDUP = 10.0
TARGET_MODEL = "vit-b-16"
TARGET_VARIANT = "cached-cut-shared"
"""The exit status holds the paper's model, trained the library's way, to the target; the rest is reported."""
SYNTHETIC_IMAGE_SIZE = 224
ACTIVATION_FLOATS_PER_WIDTH = 16
"""Floats kept for the backward pass per token, layer and unit of width (measured: about 15 for ViT-B/16)."""
MEMORY_HEADROOM = 0.8
"""Fraction of the available memory a case may plan to fill with activations."""


class BenchmarkError(ImageNetDGError):
    """The benchmark was asked for something it cannot time."""


def class_names(count: int) -> tuple[str, ...]:
    """Readable names of ``count`` real classes: PACS for 7, ImageNet-A for 200, else the first ImageNet ones."""
    taxonomy = load_taxonomy()
    if count == len(PACS_NAMES):
        return PACS_NAMES
    if count == len(taxonomy.imagenet_a):
        return tuple(taxonomy.names[w] for w in taxonomy.imagenet_a)
    if not 1 <= count <= len(taxonomy.wnids):
        raise BenchmarkError(f"--classes must lie between 1 and {len(taxonomy.wnids)}, got {count}")
    return tuple(taxonomy.names[w] for w in taxonomy.wnids[:count])


def write_synthetic_images(folder: Path, count: int, seed: int) -> LabeledImages:
    """``count`` JPEG files of random 224 x 224 pixels in ``folder``, as one labelled domain (labels 0)."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, (SYNTHETIC_IMAGE_SIZE, SYNTHETIC_IMAGE_SIZE, 3), dtype=np.uint8)
        data = io.BytesIO()
        Image.fromarray(pixels).save(data, format="JPEG", quality=90)
        path = folder / f"{index:05d}.jpg"
        write_bytes_atomic(path, data.getvalue())
        paths.append(path.resolve())
    return LabeledImages(paths=tuple(paths), labels=(0,) * count, domains=("synthetic",) * count)


class Stopwatch:
    """Wall-clock laps of one step, waiting for the device to finish before each reading."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.laps: dict[str, float] = {}
        self._last = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        """Begin a step: forget earlier laps."""
        self.laps = {}
        self._last = self._now()

    def lap(self, name: str) -> None:
        """Charge the time since the previous reading to ``name``."""
        now = self._now()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now


class PromptStep:
    """One configured training step; calling it runs one SGD update and returns that step's text features."""

    variant: str
    learner: PromptLearner

    def __init__(self, backbone: Backbone, names: Sequence[str], config: PromptConfig, seed: int, share: bool) -> None:
        self.backbone = backbone
        self.config = config
        self.learner = new_prompt_learner(backbone, names, config, seed, share_prefix=share)
        self.optimizer, self.scheduler = prompt_optimizer(self.learner, config)
        self.steps_done = 0

    @property
    def tokens_per_class(self) -> int:
        """Positions of one class's prompt that the text tower runs per step (its cost is proportional to it)."""
        return self.learner.cut_length

    def update(self, features: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, clock: Stopwatch) -> None:
        """Loss ``CE(100 * features @ text.T, labels)``, backward, SGD step, as ``train_prompt`` does."""
        logits = LOGIT_SCALE * features @ text.float().T
        loss = F.cross_entropy(logits, labels)
        check_finite(loss, self.steps_done, self.variant)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap("loss+backward")
        self.optimizer.step()
        self.scheduler.step()
        self.steps_done += 1
        clock.lap("update")


class CachedStep(PromptStep):
    """The inner step of ``train_prompt`` with ``cached_views > 0``: cached features, cut prompts."""

    def __init__(
        self, backbone: Backbone, names: Sequence[str], config: PromptConfig, seed: int, share: bool, sample_size: int
    ) -> None:
        super().__init__(backbone, names, config, seed, share)
        self.variant = "cached-cut-shared" if share else "cached-cut"
        if share and not self.learner.shares_prefix:
            raise BenchmarkError(
                f"the text tower of {backbone.spec.arch} cannot share the prompt prefix; time only cached-cut"
            )
        device = backbone.device
        # The cache's content does not matter to the timing, only its shape and where it lies.
        cache = torch.randn(sample_size, config.cached_views, backbone.embed_dim, generator=generator(seed, "cache"))
        self.cache = F.normalize(cache, dim=-1).to(device)
        self.labels = torch.randint(len(names), (sample_size,), generator=generator(seed, "labels")).to(device)
        self.order = torch.randperm(sample_size, generator=generator(seed, "order")).to(device)
        self.view_of = torch.randint(config.cached_views, (sample_size,), generator=generator(seed, "views"))
        self.view_of = self.view_of.to(device)

    @property
    def tokens_per_class(self) -> int:
        if self.learner.shares_prefix:
            return self.learner.cut_length - (1 + self.learner.n_ctx)
        return self.learner.cut_length

    def __call__(self, clock: Stopwatch) -> torch.Tensor:
        size = len(self.order)
        start = (self.steps_done * self.config.batch_size) % size
        batch = self.order[start : start + self.config.batch_size]
        features = self.cache[batch, self.view_of[batch]]
        clock.lap("gather")
        with self.backbone.autocast():
            text = self.learner()
        clock.lap("text")
        self.update(features, text, self.labels[batch], clock)
        return text.detach().float()


class PlainStep(PromptStep):
    """The reference CoOp step: augment and encode the batch's images, run the text tower on 77 positions."""

    variant = "plain"

    def __init__(
        self, backbone: Backbone, names: Sequence[str], config: PromptConfig, seed: int, images: LabeledImages
    ) -> None:
        super().__init__(backbone, names, config, seed, share=False)
        self.images = images
        self.transform = prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
        self.labels = torch.randint(len(names), (len(images),), generator=generator(seed, "labels"))
        text = backbone.text
        padding = text.context_length - self.learner.cut_length
        with torch.no_grad():
            # Token id 0 fills a tokenized prompt after its EOS; these are the positions the cut leaves out.
            pad_ids = torch.zeros(len(names), padding, dtype=torch.long)
            self.padding = text.embed_tokens(pad_ids).float()

    @property
    def tokens_per_class(self) -> int:
        return self.backbone.text.context_length

    def __call__(self, clock: Stopwatch) -> torch.Tensor:
        size, batch_size = len(self.images), self.config.batch_size
        picks = [(self.steps_done * batch_size + i) % size for i in range(batch_size)]
        pixels = torch.stack([self.transform(open_image(self.images.paths[i])) for i in picks])
        with torch.no_grad():
            features = self.backbone.encode_images(pixels)
        clock.lap("images")
        with self.backbone.autocast():
            embeddings = torch.cat([self.learner.prompt_embeddings(), self.padding], dim=1)
            text = F.normalize(self.backbone.text(embeddings, self.learner.eos_positions), dim=-1)
        clock.lap("text")
        self.update(features, text, self.labels[picks].to(self.backbone.device), clock)
        return text.detach().float()


@dataclass
class CaseResult:
    """Figures of one (model, C, variant) case; ``seconds`` None when it was neither timed nor estimated."""

    model: str
    classes: int
    variant: str
    tokens_per_class: int
    steps: int = 0
    seconds: float | None = None
    """Median seconds per step."""
    min_seconds: float | None = None
    """Fastest timed step: the figure least disturbed by other processes on the machine."""
    step_seconds: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    """Median seconds per step of each phase."""
    estimated: bool = False
    skipped: str | None = None
    """Why the case was not timed."""
    text_difference: float | None = None
    """Largest difference of its first step's text features from those of the plain (or cut) variant."""


def activation_bytes(step: PromptStep) -> int:
    """Rough memory the text tower keeps for the backward pass of one step."""
    text = step.backbone.text
    blocks = getattr(text.transformer, "resblocks", [])
    heads = getattr(getattr(blocks[0], "attn", None), "num_heads", 1) if len(blocks) else 1
    # Attention rows of the shared-prefix suffix also span the prefix: they are as long as the cut prompt.
    seen = step.learner.cut_length if isinstance(step, CachedStep) else step.tokens_per_class
    per_token = ACTIVATION_FLOATS_PER_WIDTH * text.width + 2 * heads * seen
    tokens = len(step.learner.class_names) * step.tokens_per_class
    return 4 * tokens * per_token * int(text.transformer.layers)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a case's activations on ``device``; None when it cannot be known."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def forecast(variant: str, classes: int, tokens: int, done: Sequence[CaseResult]) -> CaseResult | None:
    """The case (``variant``, ``classes``) foreseen from the largest C of that variant timed so far, or None.

    Work outside the text tower and its backward (the images of ``plain``) is taken as it is; the rest is
    scaled by classes x positions per class, to which the text tower's cost is proportional.
    """
    timed = [r for r in done if r.variant == variant and r.seconds is not None and not r.estimated]
    if not timed:
        return None
    reference = max(timed, key=lambda r: r.classes)
    scale = classes * tokens / (reference.classes * reference.tokens_per_class)
    phases = {k: v if k == "images" else v * scale for k, v in reference.phases.items()}
    return CaseResult(
        model=reference.model,
        classes=classes,
        variant=variant,
        tokens_per_class=tokens,
        seconds=sum(phases.values()),
        phases=phases,
        estimated=True,
    )


class Budget:
    """Wall-clock allowance of the whole run, shared out between the cases still to run."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    @property
    def remaining(self) -> float:
        """Seconds left before the deadline (negative past it)."""
        return self.deadline - time.perf_counter()

    def fits(self, step_seconds: float, warmup: int) -> bool:
        """Whether warm-up plus one timed step of ``step_seconds`` each still fits."""
        return (warmup + 1) * step_seconds <= self.remaining

    def steps(self, step_seconds: float, wanted: int, cases_left: int) -> int:
        """Timed steps (1 to ``wanted``) that fit in this case's fair share of the remaining time."""
        share = self.remaining / max(1, cases_left)
        return max(1, min(wanted, int(share // max(step_seconds, 1e-9))))


def time_case(
    step: PromptStep, clock: Stopwatch, warmup: int, wanted: int, budget: Budget, cases_left: int
) -> tuple[CaseResult, torch.Tensor]:
    """Run ``warmup`` untimed steps, then as many timed steps as the budget allows; the first step's features.

    The number of timed steps is decided after the first step, from its duration.
    """
    first: torch.Tensor | None = None
    steps = wanted
    durations: list[float] = []
    laps: list[dict[str, float]] = []
    for index in range(warmup + wanted):
        if index >= warmup + steps:
            break
        clock.start()
        text = step(clock)
        seconds = sum(clock.laps.values())
        if first is None:
            first = text
            steps = budget.steps(seconds, wanted, cases_left)
        if index >= warmup:
            durations.append(seconds)
            laps.append(dict(clock.laps))
    assert first is not None and durations
    return (
        CaseResult(
            model="",
            classes=len(step.learner.class_names),
            variant=step.variant,
            tokens_per_class=step.tokens_per_class,
            steps=len(durations),
            seconds=statistics.median(durations),
            min_seconds=min(durations),
            step_seconds=durations,
            phases={name: statistics.median(lap[name] for lap in laps) for name in laps[0]},
        ),
        first,
    )


def cache_build_seconds(backbone: Backbone, images: LabeledImages, config: PromptConfig, seed: int) -> float:
    """Seconds per image and view of ``encode_views`` (decode, augment, encode), after a two-image warm-up."""
    transform = prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
    encode_views(backbone, images.select([0, 1]), transform, views=1, seed=seed)
    start = time.perf_counter()
    encode_views(backbone, images, transform, views=1, seed=seed)
    if backbone.device.type == "cuda":
        torch.cuda.synchronize(backbone.device)
    return (time.perf_counter() - start) / len(images)


def run_model(
    name: str,
    spec: BackboneSpec,
    counts: Sequence[int],
    variants: Sequence[str],
    config: PromptConfig,
    args: argparse.Namespace,
    budget: Budget,
    images: LabeledImages,
    cases_after: int,
) -> dict[str, Any]:
    """Every case of one model, the cache-build cost and the amortised comparison; prints progress."""
    device = torch.device(args.device)
    backbone = load_backbone(spec, device)
    clock = Stopwatch(device)
    per_image = cache_build_seconds(backbone, images, config, args.seed)
    print(f"[{name}] cache build: {per_image:.4f} s per image and view", flush=True)
    results: list[CaseResult] = []
    order = [v for v in reversed(VARIANTS) if v in variants]  # cheapest first, so forecasts exist for the rest
    total_cases = len(counts) * len(order)
    for c_index, count in enumerate(counts):
        names = class_names(count)
        firsts: dict[str, torch.Tensor] = {}
        for v_index, variant in enumerate(order):
            cases_left = total_cases - (c_index * len(order) + v_index) + cases_after
            if variant == "plain":
                step: PromptStep = PlainStep(backbone, names, config, args.seed, images)
            else:
                share = variant == "cached-cut-shared"
                step = CachedStep(backbone, names, config, args.seed, share, args.shots * count)
            result = CaseResult(name, count, variant, step.tokens_per_class)
            foreseen = forecast(variant, count, step.tokens_per_class, results)
            need, free = activation_bytes(step), available_memory(device)
            if free is not None and need > MEMORY_HEADROOM * free:
                result.skipped = f"needs ~{need / 2**30:.0f} GiB of activations, {free / 2**30:.0f} GiB available"
            elif foreseen is not None and not budget.fits(foreseen.seconds, args.warmup):
                result.skipped = (
                    f"foreseen {foreseen.seconds:.0f} s per step, {max(budget.remaining, 0):.0f} s of budget left"
                )
            else:
                result, firsts[variant] = time_case(step, clock, args.warmup, args.steps, budget, cases_left)
                result.model = name
            del step
            if result.skipped and variant == "plain" and foreseen is not None:
                foreseen.skipped = result.skipped
                result = foreseen
            results.append(result)
            shown = f"{result.seconds:.3f} s/step ({result.steps} steps)" if result.steps else "-"
            if result.skipped:
                shown = f"skipped ({result.skipped}); " + ("estimated " + shown if result.estimated else "no figure")
            print(f"[{name}] C={count} {variant}: {shown}", flush=True)
        reference = firsts.get("plain", firsts.get("cached-cut"))
        for result in results[-len(order) :]:
            if reference is not None and result.variant in firsts:
                result.text_difference = float((firsts[result.variant] - reference).abs().max())
    return {
        "model": name,
        "spec": asdict(spec),
        "cache_seconds_per_image_view": per_image,
        "cases": [asdict(r) for r in results],
        "runs": [amortised(count, results, per_image, config, args.shots) for count in counts],
    }


def amortised(
    count: int, results: Sequence[CaseResult], per_image: float, config: PromptConfig, shots: int
) -> dict[str, Any]:
    """Whole-run totals for C = ``count``: ``config.epochs`` epochs over a ``shots``-shot sample."""
    sample = shots * count
    steps = config.epochs * math.ceil(sample / config.batch_size)
    build = config.cached_views * sample * per_image
    seconds = {r.variant: r.seconds for r in results if r.classes == count and r.seconds is not None}
    totals = {variant: value * steps + (build if variant != "plain" else 0.0) for variant, value in seconds.items()}
    return {
        "classes": count,
        "sample_images": sample,
        "steps": steps,
        "cache_build_seconds_per_view": sample * per_image,
        "cache_build_seconds": build,
        "total_seconds": totals,
        "plain_estimated": any(r.estimated for r in results if r.classes == count and r.variant == "plain"),
    }


def speedup(plain: float | None, other: float | None) -> str:
    """``plain / other`` as text, or "-" when either is missing."""
    return "-" if plain is None or not other else f"{plain / other:.1f}x"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with every cell in full."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def report(models: Sequence[dict[str, Any]]) -> str:
    """The per-step, phase and amortised tables of every model."""
    step_rows, phase_rows, run_rows = [], [], []
    fmt = lambda s: "-" if s is None else f"{s:.3f}"  # noqa: E731
    for model in models:
        cases = model["cases"]
        for count in sorted({c["classes"] for c in cases}):
            by = {c["variant"]: c for c in cases if c["classes"] == count}
            plain = by.get("plain", {})
            p = plain.get("seconds")
            p_text = fmt(p) + (" (est.)" if plain.get("estimated") else "")
            cut = by.get("cached-cut", {}).get("seconds")
            shared = by.get("cached-cut-shared", {}).get("seconds")
            steps = "/".join(str(by[v]["steps"]) for v in VARIANTS if v in by)
            step_rows.append(
                [model["model"], count, p_text, fmt(cut), fmt(shared), speedup(p, cut), speedup(p, shared), steps]
            )
            for variant in VARIANTS:
                case = by.get(variant)
                if case is None or case["seconds"] is None:
                    continue
                phases = ", ".join(f"{k} {v:.3f}" for k, v in case["phases"].items())
                diff = "-" if case["text_difference"] is None else f"{case['text_difference']:.1e}"
                mark = " (est.)" if case["estimated"] else ""
                phase_rows.append([model["model"], count, variant + mark, case["tokens_per_class"], phases, diff])
        for run in model["runs"]:
            totals = run["total_seconds"]
            hours = lambda v: "-" if totals.get(v) is None else f"{totals[v] / 3600:.2f}"  # noqa: E731
            plain_total = totals.get("plain")
            run_rows.append(
                [
                    model["model"],
                    run["classes"],
                    f"{run['cache_build_seconds_per_view']:.1f}",
                    run["steps"],
                    hours("plain") + (" (est.)" if run["plain_estimated"] else ""),
                    hours("cached-cut"),
                    hours("cached-cut-shared"),
                    speedup(plain_total, totals.get("cached-cut")),
                    speedup(plain_total, totals.get("cached-cut-shared")),
                ]
            )
    skipped = [
        f"- {m['model']} C={c['classes']} {c['variant']}: {c['skipped']}"
        + ("; the plain figure is estimated from a smaller C" if c["estimated"] else "")
        for m in models
        for c in m["cases"]
        if c["skipped"]
    ]
    parts = [
        "Seconds per step (median; plain / cut / shared-prefix timed steps in the last column)",
        render_table(
            ["model", "C", "plain", "cached+cut", "cached+cut+shared", "speedup cut", "speedup shared", "steps"],
            step_rows,
        ),
        "",
        "Where a step's time goes (median seconds per phase; text difference = max |first-step text features - "
        "plain's|)",
        render_table(["model", "C", "variant", "positions/class", "phases", "text diff"], phase_rows),
        "",
        "Whole run: 31 epochs of a 16-shot sample (hours; cached totals include building the cache's views)",
        render_table(
            ["model", "C", "cache s/view", "steps", "plain h", "cut h", "shared h", "speedup cut", "speedup shared"],
            run_rows,
        ),
    ]
    if skipped:
        parts += ["", "Skipped cases:", *skipped]
    return "\n".join(parts)


def shortfalls(models: Sequence[dict[str, Any]]) -> list[tuple[str, int, str, float]]:
    """Every (model, C, cached variant, speedup) below :data:`TARGET_SPEEDUP` against a plain figure."""
    missed = []
    for model in models:
        seconds = {(c["classes"], c["variant"]): c["seconds"] for c in model["cases"] if c["seconds"] is not None}
        for (count, variant), value in sorted(seconds.items()):
            plain = seconds.get((count, "plain"))
            if variant != "plain" and plain is not None and plain / value < TARGET_SPEEDUP:
                missed.append((model["model"], count, variant, plain / value))
    return missed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; defaults time both models at C = 7, 200, 1000 within about 15 minutes on 2 cores."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "vit-b-16"])
    parser.add_argument("--classes", nargs="+", type=int, default=[7, 200, 1000], help="numbers of classes C")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (fewer when the budget is short)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing each case")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds the whole run may take, roughly")
    parser.add_argument("--cache-images", type=int, default=32, help="image files encoded to time the cache build")
    parser.add_argument("--shots", type=int, default=16, help="images per class of the few-shot sample")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.cache_images < 2 or args.shots < 1:
        parser.error("--steps and --shots must be at least 1, --warmup at least 0, --cache-images at least 2")
    for count in args.classes:
        try:
            class_names(count)
        except BenchmarkError as error:
            parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Time every case, print the tables, write ``--json`` when asked; 1 when the target is missed, else 0.

    The target counts for :data:`TARGET_VARIANT` of :data:`TARGET_MODEL` at every C with a plain figure.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = PromptConfig()
    budget = Budget(args.budget)
    started = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, load average {load_before[0]:.1f} "
        f"(other processes on the machine slow every figure)",
        flush=True,
    )
    counts = sorted(set(args.classes))
    variants = [v for v in VARIANTS if v in args.variants]
    models = []
    with tempfile.TemporaryDirectory(prefix="prompt-step-") as folder:
        images = write_synthetic_images(Path(folder), max(args.cache_images, config.batch_size), args.seed)
        for index, name in enumerate(args.models):
            cases_after = (len(args.models) - 1 - index) * len(counts) * len(variants)
            models.append(run_model(name, MODELS[name], counts, variants, config, args, budget, images, cases_after))
    print()
    print(report(models))
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    missed = shortfalls(models)
    failed = any(m == TARGET_MODEL and v == TARGET_VARIANT for m, _, v, _ in missed)
    print(f"\nTarget: {TARGET_VARIANT} steps of {TARGET_MODEL} at least {TARGET_SPEEDUP:.0f}x faster than plain.")
    for model, count, variant, ratio in missed:
        print(f"- below target: {model} C={count} {variant} {ratio:.1f}x")
    assessed = TARGET_MODEL in args.models and TARGET_VARIANT in variants
    verdict = "missed" if failed else "met" if assessed else f"not assessed ({TARGET_MODEL} {TARGET_VARIANT} not run)"
    print(f"Total {elapsed:.0f} s (load average {load_after[0]:.1f} at the end); target {verdict}.")
    if args.json is not None:
        record = {
            "benchmark": "prompt_step",
            "target_speedup": TARGET_SPEEDUP,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "prompt_config": asdict(config),
            "environment": {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpu_count": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "device": args.device,
                "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
            },
            "elapsed_seconds": elapsed,
            "load_average_1min": {"start": load_before[0], "end": load_after[0]},
            "models": models,
            "below_target": [
                {"model": m, "classes": c, "variant": v, "speedup": r} for m, c, v, r in missed
            ],
            "target_met": (not failed) if assessed else None,
        }
        write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
