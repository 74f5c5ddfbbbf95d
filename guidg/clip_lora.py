"""CLIP-LoRA: low-rank adapters on q, k and v of every attention layer of both CLIP towers, trained few-shot.

M. Zanella and I. Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models", CVPR Workshops 2024
(arXiv:2405.18541). Reference code: https://github.com/MaxZanella/CLIP-LoRA (``main.py``, ``run_utils.py``,
``lora.py``, ``loralib/utils.py``, ``loralib/layers.py``).

Every attention layer of the text and the image transformer gets adapters ``A_i`` (r, d), ``B_i`` (d, r) on its
query, key and value projections (:mod:`guidg.lora`): ``W_i' = W_i + s B_i A_i``, dropout on the adapters'
input, ``B`` initialised to zero so training starts from CLIP itself. Each step encodes a batch of the pooled
sources' training images and the class prompts "a photo of a {name}." through the adapted towers and minimises
the cross-entropy of ``100 cos(image, text)`` (the reference's fixed logit scale of 100, not the model's learned
one); only the adapters train, with AdamW and a cosine schedule over ``500 x shots`` iterations. The reference
selects nothing (its validation is switched off): the last iterate is the result. The adapters are then merged
into the weights, so the model is a plain open_clip model (exportable as one) and the class text features are
computed once from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from guidg.backbone import Backbone
from guidg.checkpoints import export_open_clip_checkpoint, fingerprint
from guidg.evaluation import image_features
from guidg.feature_training import PhaseClock
from guidg.image_pipeline import describe_pipeline
from guidg.lora import (
    SCALING_RULES,
    LoRAAttention,
    apply_lora,
    load_lora_state,
    lora_parameter_count,
    lora_parameters,
    lora_state,
    merge_lora,
    remove_lora,
    set_dropout_generator,
)
from guidg.losses import LOGIT_SCALE
from guidg.pooled_training import (
    PooledEpochSampler,
    describe_fingerprint_inputs,
    frozen_parameters,
    source_pools,
    task_shots,
    train_steps,
)
from guidg.schedule import cosine_lambda
from guidg.seeding import derive_seed, generator
from guidg.settings import OneOf, Range, Section, at_least, positive, setting
from guidg.transforms import prompt_train_transform
from guidg.zeroshot import photo_of_a, zeroshot_classifier
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData

METHOD = "clip-lora"

TRAIN_CROP_SCALE = (0.08, 1.0)
"""RandomResizedCrop's area range (bicubic, then a horizontal flip): the reference's training transform."""

ADAM_BETAS = (0.9, 0.999)
"""AdamW's betas in the reference (``lora.py``)."""

class ClipLoRAError(ImageNetDGError):
    """CLIP-LoRA cannot run as configured on this task, or a saved state does not fit."""


@dataclass(frozen=True)
class ClipLoRAConfig(Section):
    """CLIP-LoRA's settings, with the reference code's defaults (``run_utils.py`` for the adapters and the run's
    length, ``lora.py`` for the optimiser and schedule, ``loralib/layers.py`` for the scaling)."""

    NAME: ClassVar[str] = "clip_lora"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"iterations": 6, "batch_size": 16, "lr": 5e-3, "checkpoint_every": 6},
        "mini": {"iterations": 40, "lr": 5e-3, "checkpoint_every": 20},
    }

    rank: int = setting(2, at_least(1), "r, the rank of every adapter (--r)")
    alpha: float = setting(1.0, positive(), "alpha of the adapters' scaling (--alpha)")
    scaling: str = setting(SCALING_RULES[0], OneOf(SCALING_RULES),
                           "alpha/sqrt(r), what the reference computes, or the LoRA paper's alpha/r")
    dropout: float = setting(0.25, Range(0.0, 1.0, open_high=True),
                             "dropout on the adapters' input, in training (--dropout_rate)")
    lr: float = setting(2e-4, positive(), "AdamW learning rate at the start of the cosine schedule")
    weight_decay: float = setting(1e-2, at_least(0.0), "AdamW's decoupled weight decay on the adapters")
    min_lr: float = setting(1e-6, at_least(0.0), "where the cosine schedule ends (CosineAnnealingLR's eta_min)")
    batch_size: int = setting(32, at_least(1), "images per step (--batch_size)")
    iterations_per_shot: int = setting(500, at_least(1), "the run is iterations_per_shot x shots steps (--n_iters)")
    iterations: int | None = setting(
        None, at_least(1), "steps of the whole run, replacing iterations_per_shot x shots (needed under the full "
        "protocol, which has no shots)")
    checkpoint_every: int = setting(500, at_least(1), "steps between training checkpoints of a run with a run "
                                    "folder (does not change the result)")

    def relations(self) -> Iterator[str]:
        if self.min_lr > self.lr:
            yield f"min_lr ({self.min_lr}) must be at most lr ({self.lr})"


def clip_lora_iterations(config: ClipLoRAConfig, task: TaskData) -> int:
    """Optimiser steps of a run on ``task``: ``config.iterations``, else ``iterations_per_shot x shots``."""
    if config.iterations is not None:
        return config.iterations
    shots = task_shots(task)
    if shots is None:
        raise ClipLoRAError(
            f"{METHOD}: task {task.name} is of the {task.protocol} protocol, which has no shots to count "
            f"{config.iterations_per_shot} x shots iterations by; set {ClipLoRAConfig.NAME}.iterations"
        )
    return config.iterations_per_shot * shots


def cosine_to_floor(total: int, floor: float):
    """LR factor per step: cosine from 1 to ``floor`` over ``total`` steps (``CosineAnnealingLR`` with
    ``eta_min = floor * lr``, in closed form)."""
    cosine = cosine_lambda(total)
    return lambda step: floor + (1.0 - floor) * cosine(step)


@dataclass
class ClipLoRAResult:
    """A trained CLIP-LoRA: the backbone with the adapters merged into its weights, and the class texts.

    Logits are ``100 cos(image feature, class text feature)``; image features come from the merged backbone's
    image encoder (:meth:`image_features`, or :func:`guidg.evaluation.image_features` of :attr:`backbone`).
    """

    backbone: Backbone
    """The backbone whose model now holds ``W + s B A`` in every ``in_proj_weight`` (a plain open_clip model)."""
    class_names: tuple[str, ...]
    config: ClipLoRAConfig
    lora: dict[str, Tensor]
    """The adapters' ``A`` and ``B`` by block (``text.<i>.A``, ``visual.<i>.B``...), on the CPU."""
    text_features: Tensor
    """(C, D) L2-normalised, float32, on the backbone's device: "a photo of a {name}." through the merged model."""
    n_trainable: int
    """CLIP-LoRA's count: ``3 x 2 r d`` per attention layer of both towers (:func:`guidg.lora.lora_parameter_count`)."""
    steps: int = 0
    total_steps: int = 0
    resumed_from: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds of the named phases of training (``training``); the runner scores the sources' validation images."""

    def image_features(self, images: LabeledImages, *, batch_size: int | None = None, num_workers: int = 0
                       ) -> Tensor:
        """Normalised features (N, D) of ``images`` under the evaluation transform, from the merged encoder."""
        return image_features(self.backbone, images, batch_size=batch_size, num_workers=num_workers)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Logits (N, C) ``100 cos(f, T_c)`` of image features (N, D) of the merged encoder."""
        text = self.text_features.to(features.device)
        return LOGIT_SCALE * F.normalize(features.float(), dim=-1) @ text.T

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Logits (B, C) of a batch of preprocessed images (B, 3, H, W)."""
        return self.logits_from_features(self.backbone.encode_images(images))

    def state_dict(self) -> dict[str, Tensor]:
        """What :func:`load_clip_lora` needs besides the pretrained backbone, the class names and the config:
        the adapters, as contiguous CPU tensors (safetensors-saveable)."""
        return {f"lora.{name}": tensor.contiguous() for name, tensor in self.lora.items()}

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the merged model as an open_clip safetensors checkpoint (``pretrained=<path>`` loads it)."""
        return export_open_clip_checkpoint(self.backbone.model, path, {"method": METHOD})


def _class_tokens(backbone: Backbone, class_names: Sequence[str]) -> Tensor:
    return backbone.tokenizer([photo_of_a(name) for name in class_names]).to(backbone.device)


def _finish(
    backbone: Backbone, class_names: Sequence[str], config: ClipLoRAConfig, layers: Mapping[str, LoRAAttention],
    **progress: Any,
) -> ClipLoRAResult:
    """Merge ``layers`` into the backbone and compute the class text features from the merged model."""
    saved = lora_state(layers)
    count = lora_parameter_count(layers)
    merge_lora(backbone.model)
    text = zeroshot_classifier(backbone, list(class_names), "single")
    return ClipLoRAResult(backbone, tuple(class_names), config, saved, text, count, **progress)


def train_clip_lora(
    backbone: Backbone,
    task: TaskData,
    config: ClipLoRAConfig = ClipLoRAConfig(),
    *,
    seed: int,
    num_workers: int = 0,
    run_dir: str | os.PathLike[str] | None = None,
    stop_at_step: int | None = None,
) -> ClipLoRAResult:
    """Train CLIP-LoRA on the pooled training images of ``task``'s sources and merge it into ``backbone``.

    Reads ``task.expert`` only (the last step is the result; nothing is selected), never
    ``task.test``. Every random draw (adapter initialisation, epoch orders, augmentation, dropout masks) is
    derived from ``seed``, so two CPU runs are bit-identical. With ``run_dir`` the run checkpoints every
    ``config.checkpoint_every`` steps and a rerun resumes; ``stop_at_step`` stops there after saving. Afterwards
    ``backbone.model`` holds the merged weights; on an error it is left as it was.
    """
    device = backbone.device
    pools = source_pools(task)
    total = clip_lora_iterations(config, task)
    clock = PhaseClock(device)
    with clock.phase("training"), frozen_parameters(backbone.model):  # only the adapters train
        layers = apply_lora(backbone.model, config.rank, config.alpha, config.dropout, config.scaling,
                            generator(seed, METHOD, "lora-init"))
        try:
            parameters = lora_parameters(layers)
            optimizer = torch.optim.AdamW(parameters.values(), lr=config.lr, betas=ADAM_BETAS,
                                          weight_decay=config.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                          cosine_to_floor(total, config.min_lr / config.lr))
            tokens = _class_tokens(backbone, task.class_names)
            transform = prompt_train_transform(backbone.image_size, TRAIN_CROP_SCALE, True)
            sampler = PooledEpochSampler([len(p) for p in pools], config.batch_size, seed, total, purpose=METHOD,
                                         drop_last=False)

            def step_loss(step: int, images: Tensor, labels: Tensor) -> Tensor:
                masks = torch.Generator(device=device).manual_seed(derive_seed(seed, METHOD, "dropout", step))
                set_dropout_generator(layers, masks)
                with backbone.autocast():
                    text = backbone.text.encode_tokens(tokens)
                    image = backbone.image_encoder(images)
                logits = LOGIT_SCALE * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
                return F.cross_entropy(logits, labels)

            run_fingerprint = fingerprint(describe_fingerprint_inputs(
                METHOD, seed, config, backbone.spec.describe(), pools, task.class_names))
            for layer in layers.values():
                layer.train()  # only the adapters' dropout differs in training; the encoders stay in evaluation mode
            progress = train_steps(
                method=METHOD, pools=pools, transform=transform, sampler=sampler, parameters=parameters,
                optimizer=optimizer, scheduler=scheduler, schedule_unit="step", step_loss=step_loss, device=device,
                run_fingerprint=run_fingerprint, run_dir=run_dir, checkpoint_every=config.checkpoint_every,
                stop_at_step=stop_at_step, num_workers=num_workers,
            )
        except BaseException:
            remove_lora(backbone.model)
            raise
        for layer in layers.values():
            layer.eval()
        set_dropout_generator(layers, None)
        result = _finish(backbone, task.class_names, config, layers, steps=progress.steps, total_steps=total,
                         resumed_from=progress.resumed_from, history=progress.history,
                         pipeline=describe_pipeline(device))
    result.seconds = dict(clock.seconds)
    return result


def load_clip_lora(
    backbone: Backbone, class_names: Sequence[str], state: Mapping[str, Tensor], config: ClipLoRAConfig
) -> ClipLoRAResult:
    """The result saved as ``state`` (:meth:`ClipLoRAResult.state_dict`), put onto ``backbone``: the pretrained
    backbone it was trained from (its model is changed in place, as training changes it)."""
    adapters = {name[len("lora."):]: tensor for name, tensor in state.items() if name.startswith("lora.")}
    if len(adapters) != len(state):
        others = sorted(set(state) - set(adapters))[:4]
        raise ClipLoRAError(f"a {METHOD} state holds only lora.* tensors; found {others}")
    layers = apply_lora(backbone.model, config.rank, config.alpha, 0.0, config.scaling)
    try:
        load_lora_state(layers, adapters)
    except BaseException:
        remove_lora(backbone.model)
        raise
    for layer in layers.values():
        layer.eval()
    return _finish(backbone, class_names, config, layers)
