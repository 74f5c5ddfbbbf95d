"""The base fine-tuning methods (ERM, CLIPood, UEO), each described once, as data.

A base decides three things of the image-encoder fine-tuning (SPEC 6.3): whether the logits carry CLIPood's
margin (``g(f) = f - lambda * T[y]``), whether UEO's entropy term is added to the loss, and how the weights
seen along training are averaged at the end (CLIPood's Beta moving average, or WiSE-FT). The losses, the
fine-tuning loop, the method registry and the command line read :data:`BASES`; adding a base is adding one
entry here (and, for a new kind of term or averaging, the code that computes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from imagenet_dg.errors import ImageNetDGError

if TYPE_CHECKING:
    from guidg.presets import FinetuneConfig

AVERAGINGS = ("beta-moving-average", "wise-ft")
"""``beta-moving-average``: CLIPood's average over every step (``FinetuneConfig.bma_beta``). ``wise-ft``:
interpolation with the pretrained weights (``FinetuneConfig.wise_alpha`` and ``wise_mode``)."""


class UnknownBaseError(ImageNetDGError, ValueError):
    """A base method name that is not registered."""


@dataclass(frozen=True)
class Base:
    """One base fine-tuning method."""

    name: str
    description: str
    margin: bool
    """Logits use CLIPood's margin metric softmax, of size ``FinetuneConfig.clipood_lambda``."""
    entropy_term: bool
    """The loss adds UEO's entropy term, weighed by ``FinetuneConfig.ueo_coef``."""
    averaging: str
    """One of :data:`AVERAGINGS`."""

    def __post_init__(self) -> None:
        if self.averaging not in AVERAGINGS:
            raise ImageNetDGError(f"base {self.name}: averaging {self.averaging!r}; expected one of {AVERAGINGS}")

    def margin_size(self, clipood_lambda: float) -> float:
        """The margin of the logits: ``clipood_lambda`` for a margin base, 0 otherwise."""
        return clipood_lambda if self.margin else 0.0

    def averaging_of(self, config: FinetuneConfig) -> str:
        """How this base's final weights are obtained under ``config``, as recorded (e.g. ``wise-ft end``)."""
        if self.averaging == "beta-moving-average":
            return f"beta-moving-average beta={config.bma_beta}"
        return f"wise-ft {config.wise_mode} alpha={config.wise_alpha}"


BASES: Mapping[str, Base] = MappingProxyType(
    {
        base.name: base
        for base in (
            Base("erm", "cross-entropy, WiSE-FT", margin=False, entropy_term=False, averaging="wise-ft"),
            Base("clipood", "CLIPood: margin metric softmax, Beta moving average", margin=True,
                 entropy_term=False, averaging="beta-moving-average"),
            Base("ueo", "UEO: cross-entropy and entropy term, WiSE-FT", margin=False, entropy_term=True,
                 averaging="wise-ft"),
        )
    }
)


def get_base(name: str) -> Base:
    """The base called ``name``; an error listing the registered ones otherwise."""
    try:
        return BASES[name]
    except (KeyError, TypeError):
        raise UnknownBaseError(f"unknown base method {name!r}; expected one of {', '.join(BASES)}") from None
