"""GuiDG step 1: one prompt expert per source domain, saved and reused (``docs/methods.md``, "GuiDG").

An expert is trained on its domain's expert-pool sample and its epoch chosen on that domain's selection images
(:func:`guidg.model_selection.validation_images`: the guide-pool sample under the fewshot protocol).
It is saved as ``expert.safetensors`` (context vectors and class text features) beside ``expert.json`` (what
produced it), in a folder named by a hash of everything that determines it, so asking again for the same
expert (another task with the same source domain and classes, or a rerun) loads it instead of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from imagenet_dg.atomic import atomic_path, write_text_atomic
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData
from guidg.backbone import Backbone
from guidg.image_cache import active_cache_settings
from guidg.model_selection import validation_images
from guidg.prompt_training import PromptConfig, train_prompt

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "expert.safetensors"
RECORD_FILE = "expert.json"


@dataclass
class Expert:
    """A domain's prompt expert."""

    domain: str
    context: dict[str, Tensor]
    text_features: Tensor
    """(C, D) L2-normalised class text features, float32, CPU."""
    record: dict[str, Any]
    n_trainable: int


def _images_identity(images: LabeledImages) -> list[list[Any]]:
    return [[str(p), int(y)] for p, y in zip(images.paths, images.labels)]


def expert_key(
    backbone: Backbone,
    domain: str,
    class_ids: Sequence[str],
    class_names: Sequence[str],
    train: LabeledImages,
    select: LabeledImages,
    config: PromptConfig,
    seed: int,
) -> str:
    """Hash of everything that determines an expert: backbone, the device type it computes on (bf16 on CUDA),
    how its images are read (from files, or a decoded-image cache and its decoder), domain, classes, data,
    hyperparameters, seed."""
    settings = active_cache_settings()
    payload = {
        "backbone": backbone.spec.describe(),
        "device_type": backbone.device.type,
        "images": "files" if settings is None else f"decoded-image cache ({settings.decoder})",
        "domain": domain,
        "class_ids": list(class_ids),
        "class_names": list(class_names),
        "train": _images_identity(train),
        "select": _images_identity(select),
        "config": asdict(config),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class ExpertStore:
    """A folder of saved experts, one sub-folder per expert key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def load(self, key: str) -> Expert | None:
        """The saved expert of ``key``, or None when there is none."""
        folder = self.root / key
        weights, record_file = folder / WEIGHTS_FILE, folder / RECORD_FILE
        if not (weights.is_file() and record_file.is_file()):
            return None
        try:
            tensors = load_file(str(weights))
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ImageNetDGError(f"{folder}: cannot read the saved expert ({error}); delete the folder to retrain") from None
        return Expert(
            domain=record["domain"],
            context={"ctx": tensors["ctx"]},
            text_features=tensors["text_features"],
            record=record,
            n_trainable=int(record["n_trainable"]),
        )

    def save(self, key: str, expert: Expert) -> None:
        """Save ``expert`` under ``key``: weights first, then the record that marks it complete."""
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"ctx": expert.context["ctx"].contiguous(), "text_features": expert.text_features.contiguous()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"domain": expert.domain})
        write_text_atomic(folder / RECORD_FILE, json.dumps(expert.record, indent=2, sort_keys=True) + "\n")


def train_experts(
    backbone: Backbone,
    task: TaskData,
    config: PromptConfig,
    *,
    seed: int,
    store: ExpertStore | None = None,
    num_workers: int = 0,
) -> list[Expert]:
    """The expert of every source domain of ``task``, in source order, trained or loaded from ``store``."""
    experts = []
    selection = validation_images(task)
    for domain in task.sources:
        train, select = task.expert[domain], selection[domain]
        key = expert_key(backbone, domain, task.class_ids, task.class_names, train, select, config, seed)
        expert = store.load(key) if store is not None else None
        if expert is not None:
            logger.info("expert %s: loaded %s", domain, store.root / key)  # type: ignore[union-attr]
            experts.append(expert)
            continue
        logger.info("expert %s: training on %d images, selecting on %d", domain, len(train), len(select))
        result = train_prompt(
            backbone, task.class_names, train, select, config, seed=seed, method=f"expert {domain}",
            num_workers=num_workers,
        )
        record = {
            "domain": domain,
            "key": key,
            "task": task.name,
            "classes": len(task.class_ids),
            "train_images": len(train),
            "select_images": len(select),
            "seed": seed,
            "config": asdict(config),
            "backbone": backbone.spec.describe(),
            "best_epoch": result.best_epoch,
            "select_accuracy": result.best_accuracy,
            "text_encoding": result.text_encoding,
            "n_trainable": result.n_trainable,
            "history": result.history,
        }
        expert = Expert(domain, result.context, result.text_features, record, result.n_trainable)
        if store is not None:
            store.save(key, expert)
        experts.append(expert)
    return experts


def stack_text_features(experts: Sequence[Expert]) -> Tensor:
    """The experts' class text features as one (d, C, D) tensor."""
    return torch.stack([e.text_features for e in experts])


def expert_summaries(experts: Sequence[Expert]) -> Mapping[str, dict[str, Any]]:
    """Per domain: how the expert was chosen (for result records)."""
    return {
        e.domain: {"key": e.record["key"], "best_epoch": e.record["best_epoch"], "select_accuracy": e.record["select_accuracy"],
                   "text_encoding": e.record.get("text_encoding")}
        for e in experts
    }
