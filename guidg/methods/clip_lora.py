"""CLIP-LoRA: low-rank adapters on q, k and v of every attention layer of both CLIP encoders, trained on the pooled
sources and merged into the weights (``docs/methods.md``, "CLIP-LoRA"); its training is in :mod:`guidg.clip_lora`.

After training (or loading) the backbone's model holds the merged weights, a plain open_clip model, which is what
a run exports; the predictor's :meth:`~ClipLoRAPredictor.image_encoder` puts the merged image-encoder weights
into the backbone it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from guidg.backbone import Backbone
from guidg.citations import Citation
from guidg.clip_lora import (
    ClipLoRAConfig,
    ClipLoRAResult,
    load_clip_lora,
    train_clip_lora,
)
from guidg.methods.interface import FitContext, Method, Predictor, RunShape
from guidg.pooled_training import training_details
from guidg.settings import MethodConfig
from imagenet_dg.protocols import FEWSHOT

MERGED_SUFFIX = "attn.in_proj_weight"
"""The weights the adapters are merged into (:func:`guidg.lora.merge_lora`)."""

CLIP_LORA_PAPER = Citation(
    "Zanella and Ben Ayed, Low-Rank Few-Shot Adaptation of Vision-Language Models, CVPR Workshops 2024",
    "https://arxiv.org/abs/2405.18541", "https://github.com/MaxZanella/CLIP-LoRA",
)


class ClipLoRAPredictor(Predictor):
    """A trained CLIP-LoRA as the runner scores it: the merged image encoder, and ``100 cos(f, T_c)`` against the
    class text features of the merged text encoder."""

    changes_image_encoder = True

    def __init__(self, result: ClipLoRAResult, details: dict[str, Any] | None = None) -> None:
        self.result = result
        self.n_trainable = int(result.n_trainable)
        self.details = dict(details or {})
        self._merged_visual = {name: tensor.detach().cpu().clone()
                               for name, tensor in result.backbone.model.visual.named_parameters()
                               if name.endswith(MERGED_SUFFIX)}
        """The merged image encoder's q, k, v weights, the only ones LoRA changes (kept in memory;
        :meth:`state_dict` saves only the adapters)."""

    def image_encoder(self, backbone: Backbone) -> Callable[[Tensor], Tensor]:
        """``backbone``'s image encoder holding the merged weights ``W + s B A`` (put in place unless it is the
        backbone the adapters were merged into)."""
        if backbone.model is not self.result.backbone.model:
            visual = backbone.model.visual
            with torch.no_grad():
                for name, tensor in self._merged_visual.items():
                    visual.get_parameter(name).copy_(tensor)
        return backbone.encode_images

    def logits(self, features: Tensor) -> Tensor:
        return self.result.logits_from_features(features)

    def state_dict(self) -> dict[str, Tensor]:
        """The adapters ``lora.<tower>.<layer>.A|B``; :func:`guidg.clip_lora.load_clip_lora` merges them again."""
        return self.result.state_dict()


def fit_clip_lora(context: FitContext) -> Predictor:
    """The adapters trained on the expert pools of all sources, then merged into the backbone; the last iterate
    is the result."""
    result = train_clip_lora(context.backbone, context.task, context.settings(ClipLoRAConfig), seed=context.seed,
                             num_workers=context.num_workers, run_dir=context.run_dir)
    return ClipLoRAPredictor(result, training_details(result))


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    return ClipLoRAPredictor(load_clip_lora(context.backbone, context.task.class_names, state,
                                            context.settings(ClipLoRAConfig)))


def check_clip_lora(config: MethodConfig, shape: RunShape) -> Iterator[str]:
    """Under the ``full`` protocol there are no shots to count ``iterations_per_shot x shots`` by."""
    if shape.protocol != FEWSHOT and config.section(ClipLoRAConfig).iterations is None:
        yield (f"{ClipLoRAConfig.NAME}.iterations: the {shape.protocol} protocol has no shots to count "
               f"iterations_per_shot x shots by; give --set {ClipLoRAConfig.NAME}.iterations=N")


CLIP_LORA = Method(
    name="clip-lora",
    description="CLIP-LoRA: low-rank adapters on q, k, v of every layer of both encoders, merged",
    citations=(CLIP_LORA_PAPER,),
    sections=(ClipLoRAConfig,),
    trains="LoRA matrices A and B on q, k, v of every attention layer of both encoders",
    trainable_parameters="3 x 2 r d per layer of both encoders (A and B for each of q, k, v)",
    selection="last-step",
    fit=fit_clip_lora,
    load=_load,
    check=check_clip_lora,
)
