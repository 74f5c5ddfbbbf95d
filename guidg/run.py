"""One evaluation run: a method trained on one benchmark configuration and scored once on its target.

Each run lives in a folder named by a hash of everything that determines its result (benchmark content,
configuration, method, backbone, hyperparameters, seed). The folder holds the resumable training state while
the run is going, then ``results.jsonl`` (one JSON record) and a ``done`` marker; a run whose folder is done
is not repeated, so a sweep resumes by running the same command again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from imagenet_dg import __version__
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.loading import LabeledImages, load_task
from imagenet_dg.manifests import read_manifest
from guidg.backbone import BackboneSpec, load_backbone
from guidg.checkpoints import export_open_clip_checkpoint
from guidg.evaluation import accuracy, domain_accuracies, image_features
from guidg.experts import ExpertStore
from guidg.methods import fit_method, get_method
from guidg.presets import MethodConfig

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"
EXPERTS_DIR = "experts"
MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class RunSpec:
    """What one run trains and scores."""

    benchmark: Path
    """A folder built by ``imagenet-dg build``."""
    config: str
    """A configuration of that benchmark, e.g. ``a-16shot-seed1``."""
    method: str
    backbone: BackboneSpec
    preset: str
    hparams: MethodConfig
    seed: int
    """Training seed (initialisation, batches, augmentation)."""


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers(device: str) -> int:
    """Image-loading processes: none on CPU (they would compete with the model for the cores), up to 8 on GPU."""
    return 0 if torch.device(device).type == "cpu" else min(8, os.cpu_count() or 1)


def run_key(spec: RunSpec, content_hash: str) -> str:
    """Name of the run's folder: a hash of everything that determines its result."""
    payload = {
        "benchmark": content_hash,
        "config": spec.config,
        "method": spec.method,
        "backbone": spec.backbone.describe(),
        "hparams": spec.hparams.to_dict(),
        "seed": spec.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The result record of a finished run folder."""
    return json.loads((Path(folder) / RESULTS_FILE).read_text(encoding="utf-8").splitlines()[0])


def _environment(device: torch.device) -> dict[str, Any]:
    environment = {
        "imagenet_dg": __version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
    return environment


def execute(
    spec: RunSpec,
    roots: Mapping[str, str | os.PathLike[str]],
    runs_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    num_workers: int = 0,
    export_model: bool = False,
) -> dict[str, Any]:
    """Run ``spec`` (or read its record if it already finished) and return the result record.

    ``roots`` maps domain id -> release root holding the images. The target is scored once, after training,
    and never used for anything else. The record carries the configuration and versions that produced it.
    With ``export_model``, the trained model is also saved as ``model.safetensors`` in the run folder, in a
    form ``open_clip.create_model_and_transforms(arch, pretrained=<file>)`` loads.
    """
    get_method(spec.method)
    manifest = read_manifest(spec.benchmark)
    folder = Path(runs_dir) / run_key(spec, manifest["content_hash"])
    if (folder / DONE_FILE).is_file():
        logger.info("%s on %s: already done (%s)", spec.method, spec.config, folder)
        return read_record(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = load_task(spec.benchmark, spec.config, roots)
    torch_device = torch.device(device or default_device())
    backbone = load_backbone(spec.backbone, torch_device)
    started = time.perf_counter()
    trained = fit_method(
        spec.method, backbone, task, spec.hparams, seed=spec.seed, run_dir=folder,
        experts=ExpertStore(Path(runs_dir) / EXPERTS_DIR), num_workers=num_workers,
    )
    trained_seconds = time.perf_counter() - started
    guide = LabeledImages.concat([task.guide[d] for d in task.sources])
    guide_logits = trained.logits(image_features(backbone, guide, num_workers=num_workers))
    test_logits = trained.logits(image_features(backbone, task.test, num_workers=num_workers))
    config = manifest["configs"][spec.config]
    record = {
        "method": spec.method,
        "benchmark": "imagenet-dg",
        "task": manifest["configs"][spec.config]["task"],
        "config": spec.config,
        "target": task.target,
        "sources": list(task.sources),
        "shots": config["shots"],
        "split_seed": config["seed"],
        "seed": spec.seed,
        "accuracy": accuracy(test_logits, torch.tensor(task.test.labels)),
        "test_images": len(task.test),
        "guide_accuracy": dict(domain_accuracies(guide_logits, guide)),
        "n_trainable": trained.n_trainable,
        "eval_batch_size": trained.eval_batch_size,
        "eval_order": "manifest (class, path)",
        "routing": spec.hparams.finetune.routing if trained.cmattn is not None else None,
        "preset": spec.preset,
        "hparams": spec.hparams.to_dict(),
        "backbone": spec.backbone.describe(),
        "benchmark_content_hash": manifest["content_hash"],
        "protocol_version": manifest["protocol_version"],
        "train_seconds": round(trained_seconds, 2),
        "environment": _environment(torch_device),
        "details": {k: v for k, v in trained.record.items() if k != "history"},
    }
    if export_model:
        export_open_clip_checkpoint(
            backbone.model, folder / MODEL_FILE, {"method": spec.method, "config": spec.config, "arch": spec.backbone.arch}
        )
        record["model_file"] = MODEL_FILE
    text = json.dumps(record, sort_keys=True)
    write_text_atomic(folder / RESULTS_FILE, text + "\n")
    write_text_atomic(folder / DONE_FILE, "")
    logger.debug("%s on %s: %.2f%% on %s", spec.method, spec.config, record["accuracy"], task.target)
    return json.loads(text)  # the record exactly as a later reader of the file sees it

