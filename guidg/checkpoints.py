"""Checkpoints: resumable training state, trained predictors, and fine-tuned models exported for open_clip.

Training state is saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``, which
admits only tensors and plain containers, never arbitrary objects. A trained predictor (what a method's fit
returns) is a safetensors file of its named tensors with text metadata. Exports are safetensors files holding
a complete open_clip state dict, so ``open_clip.create_model_and_transforms(arch, pretrained=<file>)`` loads
them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from imagenet_dg.atomic import atomic_file, atomic_path
from imagenet_dg.errors import ImageNetDGError


class CheckpointError(ImageNetDGError):
    """A checkpoint cannot be read, or belongs to another run."""


def fingerprint(record: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON-able description of a run: identifies which run a checkpoint belongs to."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def save_training_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings and containers of them) atomically; a full disk is one
    :class:`~imagenet_dg.errors.WriteError` with the state's size."""
    with atomic_file(path, "the resumable training state", size=state_bytes(state)) as handle:
        torch.save(dict(state), handle)


def state_bytes(state: object) -> int:
    """The bytes of the tensors in ``state`` (nested in dicts, lists and tuples): about its size on disk."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def load_training_state(path: str | os.PathLike[str], run_fingerprint: str) -> dict[str, Any] | None:
    """The saved state at ``path`` if there is one; raises if it belongs to a run with another fingerprint."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged or foreign files
        raise CheckpointError(f"{path}: cannot read this training checkpoint ({error}); delete it to restart") from None
    if state.get("fingerprint") != run_fingerprint:
        raise CheckpointError(
            f"{path} holds the state of another run (other data, method or hyperparameters); "
            "use another run folder, or delete the checkpoint to start this run from scratch"
        )
    return state


def save_tensors(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write named tensors and text ``metadata`` as one safetensors file, atomically."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a :func:`save_tensors` file; an error naming the file when it cannot be read."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as opened:
            return {name: opened.get_tensor(name) for name in opened.keys()}, dict(opened.metadata() or {})
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{path}: cannot read these saved tensors ({error}); delete the file to retrain") from None


def export_open_clip_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save the full state dict of an open_clip ``model`` as safetensors, loadable as ``pretrained=<path>``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: an exported model must be a .safetensors file")
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path, "the exported model", size=state_bytes(state)) as tmp:
        save_file(state, str(tmp), metadata=dict(metadata or {}))
    return path


def load_module_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``module`` in place (same keys and shapes), keeping its device and dtype."""
    missing, unexpected = module.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"saved weights do not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
