"""The base fine-tuning methods (ERM, UEO, CLIPood), each described once, as data, with their settings.

A base decides three things of the image-encoder fine-tuning (``docs/methods.md``, "Fine-tuning bases"):
whether the logits carry CLIPood's margin (``g(f) = f - lambda * T[y]``, of size ``clipood.margin``), whether
UEO's entropy term is added to the loss (weighed by ``ueo.entropy_weight``), and how the weights seen along
training are averaged at the end (CLIPood's Beta moving average, ``clipood.bma_beta``, or WiSE-FT,
``wise_ft.alpha`` and ``wise_ft.mode``). The losses, the fine-tuning loop, the method registry and the
command line read :data:`BASES`, in the order of the paper's tables; adding a base is adding one entry here
(and, for a new kind of term or averaging, its setting section and the code that computes it).

This module imports no deep-learning library, so the command line reads it without loading one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from guidg.citations import Citation
from guidg.settings import MethodConfig, OneOf, Range, Section, at_least, positive, setting
from imagenet_dg.errors import ImageNetDGError

BETA_MOVING_AVERAGE = "beta-moving-average"
WISE_FT = "wise-ft"
AVERAGINGS = (BETA_MOVING_AVERAGE, WISE_FT)
"""``beta-moving-average``: CLIPood's average over every step (``clipood.bma_beta``). ``wise-ft``:
interpolation with the pretrained weights (``wise_ft.alpha`` and ``wise_ft.mode``)."""

WISE_FT_MODES = ("end", "per-epoch")
"""``end``: interpolate once, after training. ``per-epoch``: after every epoch write the interpolation back
into the live weights, so training restarts from it (the reference code)."""


DOMAINBED = Citation(
    "Gulrajani and Lopez-Paz, In Search of Lost Domain Generalization, ICLR 2021 (ERM)",
    "https://arxiv.org/abs/2007.01434", "https://github.com/facebookresearch/DomainBed",
)
WISE_FT_PAPER = Citation(
    "Wortsman et al., Robust Fine-Tuning of Zero-Shot Models, CVPR 2022 (WiSE-FT)",
    "https://arxiv.org/abs/2109.01903", "https://github.com/mlfoundations/wise-ft",
)
CLIPOOD_PAPER = Citation(
    "Shu et al., CLIPood: Generalizing CLIP to Out-of-Distributions, ICML 2023",
    "https://arxiv.org/abs/2302.00864", "https://github.com/thuml/CLIPood",
)
UEO_PAPER = Citation(
    "Liang et al., Realistic Unsupervised CLIP Fine-tuning with Universal Entropy Optimization, ICML 2024 (UEO)",
    "https://arxiv.org/abs/2308.12919", "https://github.com/tim-learn/UEO",
)


class UnknownBaseError(ImageNetDGError, ValueError):
    """A base method name that is not registered."""


@dataclass(frozen=True)
class ClipoodConfig(Section):
    """CLIPood: the margin metric softmax and the Beta moving average (``docs/methods.md``, "CLIPood")."""

    NAME: ClassVar[str] = "clipood"

    margin: float = setting(0.3, at_least(0.0), "lambda of the margin metric softmax, g(f) = f - lambda T[y]")
    bma_beta: float = setting(
        0.1, positive(), "beta of the Beta moving average's weights (the reference script; the appendix says 0.5)")


@dataclass(frozen=True)
class UeoConfig(Section):
    """UEO's entropy term (``docs/methods.md``, "UEO")."""

    NAME: ClassVar[str] = "ueo"

    entropy_weight: float = setting(
        0.01, at_least(0.0), "weight of the entropy term (the reference code's; the appendix says 0.1)")


@dataclass(frozen=True)
class WiseFTConfig(Section):
    """WiSE-FT, the weight averaging of the bases that report it (``docs/methods.md``, "WiSE-FT")."""

    NAME: ClassVar[str] = "wise_ft"

    alpha: float = setting(0.5, Range(0.0, 1.0), "weight of the fine-tuned weights: (1 - alpha) pre + alpha fine")
    mode: str = setting("end", OneOf(WISE_FT_MODES), "end: once after training; per-epoch: written back each epoch")


@dataclass(frozen=True)
class Objective:
    """What a base makes of the fine-tuning under one configuration: the loss and the weight averaging."""

    base: str
    margin: float
    """CLIPood's margin lambda; 0 for a base without a margin."""
    entropy_weight: float
    """Weight of UEO's entropy term; 0 for a base without it."""
    averaging: str
    """One of :data:`AVERAGINGS`."""
    bma_beta: float | None = None
    """With ``beta-moving-average``: its beta."""
    wise_alpha: float | None = None
    """With ``wise-ft``: its alpha."""
    wise_mode: str | None = None
    """With ``wise-ft``: one of :data:`WISE_FT_MODES`."""

    def __post_init__(self) -> None:
        if self.averaging == BETA_MOVING_AVERAGE and self.bma_beta is None:
            raise ImageNetDGError("a Beta moving average needs its beta")
        if self.averaging == WISE_FT and (self.wise_alpha is None or self.wise_mode not in WISE_FT_MODES):
            raise ImageNetDGError(f"WiSE-FT needs alpha and a mode in {WISE_FT_MODES}, got {self.wise_mode!r}")
        if self.averaging not in AVERAGINGS:
            raise ImageNetDGError(f"averaging {self.averaging!r}; expected one of {', '.join(AVERAGINGS)}")

    def describe_averaging(self) -> str:
        """The weight averaging as recorded, e.g. ``wise-ft end alpha=0.5``."""
        if self.averaging == BETA_MOVING_AVERAGE:
            return f"{BETA_MOVING_AVERAGE} beta={self.bma_beta}"
        return f"{WISE_FT} {self.wise_mode} alpha={self.wise_alpha}"


@dataclass(frozen=True)
class Base:
    """One base fine-tuning method."""

    name: str
    description: str
    margin: bool
    """Logits use CLIPood's margin metric softmax, of size ``clipood.margin``."""
    entropy_term: bool
    """The loss adds UEO's entropy term, weighed by ``ueo.entropy_weight``."""
    averaging: str
    """One of :data:`AVERAGINGS`."""
    citations: tuple[Citation, ...]
    """Its papers and reference code."""

    def __post_init__(self) -> None:
        if self.averaging not in AVERAGINGS:
            raise ImageNetDGError(f"base {self.name}: averaging {self.averaging!r}; expected one of {AVERAGINGS}")

    @property
    def sections(self) -> tuple[type[Section], ...]:
        """The setting sections this base reads."""
        kinds: list[type[Section]] = []
        if self.margin or self.averaging == BETA_MOVING_AVERAGE:
            kinds.append(ClipoodConfig)
        if self.entropy_term:
            kinds.append(UeoConfig)
        if self.averaging == WISE_FT:
            kinds.append(WiseFTConfig)
        return tuple(kinds)

    def margin_size(self, clipood_lambda: float) -> float:
        """The margin of the logits: ``clipood_lambda`` for a margin base, 0 otherwise."""
        return clipood_lambda if self.margin else 0.0

    def objective(self, config: MethodConfig) -> Objective:
        """The loss and averaging of this base under ``config`` (which holds :attr:`sections`)."""
        clipood = config.section(ClipoodConfig) if ClipoodConfig in self.sections else None
        margin = clipood.margin if self.margin and clipood is not None else 0.0
        entropy_weight = config.section(UeoConfig).entropy_weight if self.entropy_term else 0.0
        if self.averaging == BETA_MOVING_AVERAGE:
            return Objective(self.name, margin, entropy_weight, self.averaging,
                             bma_beta=config.section(ClipoodConfig).bma_beta)
        wise = config.section(WiseFTConfig)
        return Objective(self.name, margin, entropy_weight, self.averaging, wise_alpha=wise.alpha,
                         wise_mode=wise.mode)


BASES: Mapping[str, Base] = MappingProxyType(
    {
        base.name: base
        for base in (
            Base("erm", "cross-entropy, WiSE-FT", margin=False, entropy_term=False, averaging=WISE_FT,
                 citations=(DOMAINBED, WISE_FT_PAPER)),
            Base("ueo", "UEO: cross-entropy and entropy term, WiSE-FT", margin=False, entropy_term=True,
                 averaging=WISE_FT, citations=(UEO_PAPER, WISE_FT_PAPER)),
            Base("clipood", "CLIPood: margin metric softmax, Beta moving average", margin=True,
                 entropy_term=False, averaging=BETA_MOVING_AVERAGE, citations=(CLIPOOD_PAPER,)),
        )
    }
)


def get_base(name: str) -> Base:
    """The base called ``name``; an error listing the registered ones otherwise."""
    try:
        return BASES[name]
    except (KeyError, TypeError):
        raise UnknownBaseError(f"unknown base method {name!r}; expected one of {', '.join(BASES)}") from None
