"""Zero-shot classification with text prompts: a text classifier per class, logits = 100 x cosine
(``docs/methods.md``, "Zero-shot CLIP")."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from guidg.backbone import Backbone
from imagenet_dg.errors import ImageNetDGError

class TemplateSetError(ImageNetDGError):
    """A zero-shot classifier was asked for a template set that is not defined."""


def photo_of_a(name: str) -> str:
    """The single CLIP prompt: ``"a photo of a {name}."``."""
    return f"a photo of a {name}."


TEMPLATE_SETS: Mapping[str, tuple[Callable[[str], str], ...]] = MappingProxyType(
    {
        "single": (photo_of_a,),
        "ensemble": tuple(OPENAI_IMAGENET_TEMPLATES),
    }
)
"""Named prompt template sets: ``single`` and the 80-template OpenAI ImageNet ``ensemble``."""


def zeroshot_classifier(
    backbone: Backbone, class_names: Sequence[str], templates: str = "single", batch_size: int = 256
) -> torch.Tensor:
    """Text classifier (C, D), float32, rows L2-normalised, in the order of ``class_names``.

    Each template's text features are normalised, averaged over the templates of a class and normalised again.
    Texts are encoded ``batch_size`` at a time, without gradients.
    """
    if templates not in TEMPLATE_SETS:
        raise TemplateSetError(f"unknown template set {templates!r}; expected one of {', '.join(TEMPLATE_SETS)}")
    if len(class_names) == 0:
        raise TemplateSetError("a zero-shot classifier needs at least one class name, got none")
    if batch_size < 1:
        raise TemplateSetError(f"batch_size must be at least 1, got {batch_size}")
    chosen = TEMPLATE_SETS[templates]
    texts = [template(name) for name in class_names for template in chosen]
    with torch.no_grad():
        features = torch.cat(
            [backbone.encode_texts(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
        )
    per_class = features.reshape(len(class_names), len(chosen), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)

