"""Cost of CoCoOp by number of classes: one training step, and the logits of N images.

CoCoOp gives every image its own prompt context, so each image needs its own C text features: a training step
of B images runs B x C prompts through the text tower, forward and backward, and evaluating N images runs
N x C prompts. ``guidg.cocoop`` runs them in passes of at most ``max_sequences`` prompts (several images x all
classes, or one image x a slice of the classes) and, in a training step of several passes, recomputes each
pass's activations in the backward pass instead of keeping them all: memory is bounded whatever C.

Cases: the model (``vit-b-16``, the paper's architecture, and the ``tiny`` test model, both with random
weights: no timing depends on them), C (7: PACS, 65: OfficeHome, 345: DomainNet, with their real class names),
the bound on prompts per pass (``--bounds``: ``default``, the library's ``max_sequences`` in training and
``eval_max_sequences`` in evaluation; ``one-pass``, all prompts at once; or a number), and the kind (``train``:
one SGD step on a batch of ``--batch`` images, as ``train_cocoop`` runs it with the cache; ``eval``: the
logits of ``--images`` images, no gradient). The image features are random unit vectors: the image encoder is frozen
and its features cached, so neither kind runs it.

Each case runs in a fresh Python process, so that its peak memory is its own: on a CPU the peak resident memory
during the timed calls above the resident memory just before them (``/proc/self/status``; the peak is reset
through ``/proc/self/clear_refs`` before each call), on a GPU ``torch.cuda.max_memory_allocated`` above the
memory allocated before. The figure is what the step needs beyond the model and the cached features. Each case
warms up with one call (included in the peak: the first call allocates most) and reports the median of
``--steps`` timed calls.

Usage::

    python benchmarks/cocoop_step.py [--models tiny vit-b-16] [--classes 7 65 345] [--bounds default one-pass]
        [--kinds train eval] [--batch 1] [--images 16] [--steps 3] [--device cpu|cuda] [--threads N]
        [--timeout 900] [--json FILE]

The exit status is 0 when every case ran, 1 when some case failed or ran past ``--timeout`` (then reported).
Other processes on the machine distort the timings: the load average is printed and recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from guidg.backbone import TINY_SPEC, BackboneSpec, load_backbone
from guidg.cocoop import CoCoOpConfig, build_learner, chunk_plan
from guidg.seeding import generator
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.suites import get_suite

MODELS: dict[str, BackboneSpec] = {"tiny": TINY_SPEC, "vit-b-16": BackboneSpec("ViT-B-16", None)}
"""Models this benchmark can time, by name; random weights, since timing does not depend on them."""

SUITE_OF_CLASSES = {7: "pacs", 65: "officehome", 345: "domainnet"}
"""The real class lists timed, by their number of classes."""

KINDS = ("train", "eval")

BOUND_WORDS = ("default", "one-pass")
"""``--bounds`` words: the library's bound of the kind timed, and all prompts in one pass."""


class BenchmarkError(ImageNetDGError):
    """The benchmark was asked for something it cannot time."""


def class_names(count: int) -> tuple[str, ...]:
    """The readable class names of the suite with ``count`` classes (PACS, OfficeHome or DomainNet)."""
    if count not in SUITE_OF_CLASSES:
        raise BenchmarkError(f"--classes: expected some of {', '.join(map(str, SUITE_OF_CLASSES))}, got {count}")
    return get_suite(SUITE_OF_CLASSES[count]).prompt_names()


def bound_option(text: str) -> str:
    """A ``--bounds`` value: one of :data:`BOUND_WORDS` or a whole number of prompts, at least 1."""
    if text in BOUND_WORDS or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"expected {' or '.join(BOUND_WORDS)} or a number >= 1, got {text!r}")


class PeakMemory:
    """Peak memory of this process during a block, above what it held just before."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def _status() -> dict[str, int]:
        text = Path("/proc/self/status").read_text()
        return {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size to the current one
            self.before = self._status()["VmRSS"]

    def stop(self) -> tuple[int, int]:
        """(bytes held before, peak bytes above that)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return self.before, torch.cuda.max_memory_allocated(self.device) - self.before
        return self.before, self._status()["VmHWM"] - self.before


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Time one case in this process and measure its peak memory."""
    device = torch.device(case["device"])
    torch.set_num_threads(case["threads"])
    backbone = load_backbone(MODELS[case["model"]], device)
    names = class_names(case["classes"])
    training = case["kind"] == "train"
    rows = case["batch"] if training else case["images"]
    setting = "max_sequences" if training else "eval_max_sequences"
    bound = {"default": getattr(CoCoOpConfig(), setting), "one-pass": rows * len(names)}.get(case["bound"])
    config = CoCoOpConfig(**{setting: bound or int(case["bound"])})
    bound = getattr(config, setting)
    learner = build_learner(backbone, names, config, seed=0)
    optimizer = torch.optim.SGD(
        learner.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    features = F.normalize(torch.randn(rows, backbone.embed_dim, generator=generator(0, "features")), dim=-1)
    features = features.to(device)
    labels = torch.randint(len(names), (rows,), generator=generator(0, "labels")).to(device)

    def call() -> None:
        if training:
            with backbone.autocast():
                logits = learner(features)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad(), backbone.autocast():
                learner(features)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    memory = PeakMemory(device)
    peaks, seconds = [], []
    for index in range(1 + case["steps"]):
        memory.start()
        started = time.perf_counter()
        call()
        elapsed = time.perf_counter() - started
        before, peak = memory.stop()
        peaks.append(peak)
        if index == 0:
            held = before
        else:
            seconds.append(elapsed)
    plan = chunk_plan(rows, len(names), bound)
    return {
        **case,
        "max_sequences": bound,
        "text_encoding": learner.text_encoding,
        "prompts": rows * len(names),
        "passes": sum(len(ranges) for _, _, ranges in plan),
        "recomputed": training and sum(len(ranges) for _, _, ranges in plan) > 1,
        "seconds": statistics.median(seconds),
        "min_seconds": min(seconds),
        "step_seconds": seconds,
        "seconds_per_image": statistics.median(seconds) / rows,
        "held_bytes": held,
        "peak_bytes": max(peaks),
        "peak_bytes_warm": max(peaks[1:]),
    }


def run_in_subprocess(case: dict[str, Any], timeout: float) -> dict[str, Any]:
    """:func:`run_case` in a fresh Python process; a failure or a time-out is reported in the result."""
    command = [sys.executable, os.path.abspath(__file__), "--case", json.dumps(case)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**case, "skipped": f"ran past --timeout {timeout:g} s"}
    if done.returncode != 0:
        return {**case, "skipped": f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | C | kind | rows | max_sequences | passes | s per call (min) | s per image | peak MiB (above held) "
        "| held MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['classes']} | {r['kind']} | | {r['bound']} | | {r['skipped']} | | | |")
            continue
        rows = r["batch"] if r["kind"] == "train" else r["images"]
        bound = f"{r['max_sequences']} ({r['bound']})" if r["bound"] in BOUND_WORDS else r["max_sequences"]
        passes = f"{r['passes']}{' (recomputed)' if r['recomputed'] else ''}"
        lines.append(
            f"| {r['model']} | {r['classes']} | {r['kind']} | {rows} | {bound} | {passes} | {r['seconds']:.3f} "
            f"({r['min_seconds']:.3f}) | "
            f"{r['seconds_per_image']:.3f} | {mib(r['peak_bytes'])} | {mib(r['held_bytes'])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vit-b-16"], choices=sorted(MODELS))
    parser.add_argument("--classes", nargs="+", type=int, default=[7, 65, 345])
    parser.add_argument("--bounds", nargs="+", default=list(BOUND_WORDS), type=bound_option,
                        help="prompts per pass: default (the library's), one-pass, or a number")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--batch", type=int, default=CoCoOpConfig().batch_size, help="images per training step")
    parser.add_argument("--images", type=int, default=16, help="images per evaluation call")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one case may take")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    for count in args.classes:
        class_names(count)
    if args.batch < 1 or args.images < 1 or args.steps < 1:
        parser.error("--batch, --images and --steps must be at least 1")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; device {args.device}, {args.threads} threads")
    results = []
    for model in args.models:
        for classes in args.classes:
            for kind in args.kinds:
                for bound in args.bounds:
                    case = {"model": model, "classes": classes, "kind": kind, "bound": bound,
                            "batch": args.batch, "images": args.images, "steps": args.steps,
                            "device": args.device, "threads": args.threads}
                    result = run_in_subprocess(case, args.timeout)
                    results.append(result)
                    print(table([result]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    if args.json is not None:
        record = {
            "results": results, "options": {k: v for k, v in vars(args).items() if k not in ("json", "case")},
            "platform": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                         "python": platform.python_version(), "torch": torch.__version__},
            "load_average": {"start": load, "end": os.getloadavg()},
        }
        if args.device.startswith("cuda"):
            record["platform"]["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
        write_text_atomic(args.json, json.dumps(record, indent=2, default=str) + "\n")
    return 1 if any("skipped" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
