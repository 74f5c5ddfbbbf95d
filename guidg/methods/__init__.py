"""The methods, registered by name: one module per method, each declaring a :class:`Method`.

Registered, in the order of the leaderboard's rows (the paper's tables): ``zeroshot``, ``zeroshot-ensemble``,
``linear-probe``, ``coop``, ``cocoop``, ``maple``, ``clip-adapter``, ``tip-adapter``, ``tip-adapter-f``,
``clip-lora``, then every base of :data:`guidg.bases.BASES` alone and with GuiDG on top (``erm``, ``guidg+erm``,
``ueo``, ``guidg+ueo``, ``clipood``, ``guidg+clipood``).

The contract (:mod:`guidg.methods.interface`; ``docs/methods.md``, "The method interface"):

- A method is a module that builds a :class:`Method`: its ``name``, a one-line ``description`` and its
  ``citations`` (paper and reference code), the configuration ``sections`` its ``fit`` reads (shared ones
  such as :class:`~guidg.prompt_training.PromptConfig` or :class:`~guidg.finetune.FinetuneConfig`, and its own
  :class:`~guidg.settings.Section` with each setting's default, type and allowed values, and the presets'
  values in ``PRESETS``), what it ``trains`` and how its paper counts ``trainable_parameters``, its
  model-selection rule (``selection``, a name of :data:`guidg.model_selection.RULES`), and two functions:
  ``fit(context: FitContext) -> Predictor`` and ``load(context: FitContext, state) -> Predictor``.
- A :class:`Predictor` gives ``logits(features)`` for the features its ``image_encoder(backbone)`` makes of
  a batch of images (the pretrained encoder by default, so a frozen-encoder method can be scored from cached
  features), has ``n_trainable`` and ``details``, and saves its trained tensors with ``state_dict()``
  (safetensors; ``load`` rebuilds it) for resuming a run and for exports.
- Adding a method: its module, its entry in :data:`REGISTERED` below, its test, and its section of
  ``docs/methods.md``. The presets, the command line's ``--method`` choices and help, ``imagenet-dg settings``,
  the leaderboard's row order and README's method table all read the declaration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from torch import Tensor

from guidg.backbone import Backbone
from guidg.bases import BASES
from guidg.citations import Citation
from guidg.experts import ExpertStore
from guidg.methods.clip_lora import CLIP_LORA
from guidg.methods.cocoop import COCOOP
from guidg.methods.coop import COOP
from guidg.methods.feature_methods import (
    CLIP_ADAPTER,
    LINEAR_PROBE,
    TIP_ADAPTER,
    TIP_ADAPTER_F,
)
from guidg.methods.finetuned import FINETUNED
from guidg.methods.guidg import FAMILY as GUIDG
from guidg.methods.guidg import GUIDED
from guidg.methods.interface import RUN_SECTIONS, FitContext, Method, Predictor
from guidg.methods.maple import MAPLE
from guidg.methods.zeroshot import ZEROSHOT, ZEROSHOT_ENSEMBLE
from guidg.settings import MethodConfig, Section
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import TaskData

__all__ = [
    "GUIDG", "METHODS", "REGISTERED", "RUN_SECTIONS", "Citation", "FitContext", "Method", "Predictor",
    "all_sections", "families_with_base", "fit_method", "get_method", "load_method", "resolve_method",
]

REGISTERED: tuple[Method, ...] = (
    ZEROSHOT,
    ZEROSHOT_ENSEMBLE,
    LINEAR_PROBE,
    COOP,
    COCOOP,
    MAPLE,
    CLIP_ADAPTER,
    TIP_ADAPTER,
    TIP_ADAPTER_F,
    CLIP_LORA,
    *(method for base in BASES for method in (FINETUNED[base], GUIDED[base])),
)
"""Every method, in the leaderboard's row order."""

METHODS: Mapping[str, Method] = MappingProxyType({method.name: method for method in REGISTERED})
"""Every method by name."""


def all_sections() -> tuple[type[Section], ...]:
    """Every configuration section of every registered method, then those of every run, each once, in the order
    of first use."""
    kinds: dict[str, type[Section]] = {}
    for kind in (*(k for method in METHODS.values() for k in method.sections), *RUN_SECTIONS):
        if kinds.setdefault(kind.NAME, kind) is not kind:
            raise ImageNetDGError(f"two different configuration sections are named {kind.NAME}")
    return tuple(kinds.values())


def get_method(name: str) -> Method:
    """The method called ``name``; a clear error listing the registered ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ImageNetDGError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None


def families_with_base() -> tuple[str, ...]:
    """Method families that run on a base and take ``--base`` (``guidg``)."""
    return tuple(dict.fromkeys(m.family for m in METHODS.values() if m.base is not None))


def resolve_method(name: str, base: str | None) -> Method:
    """The registered method meant by ``name`` and an optional ``base``: ``guidg`` with ``base`` ``clipood``
    is ``guidg+clipood``. A base given to a method that runs on none, or a family named without its base, is
    an error that says what to give."""
    families = families_with_base()
    if base is not None and base not in BASES:
        raise ImageNetDGError(f"unknown base method {base!r}; expected one of {', '.join(BASES)}")
    if name in families:
        if base is None:
            raise ImageNetDGError(
                f"method {name} runs on a base method: give --base {'|'.join(BASES)} "
                f"(or name it {', '.join(f'{name}+{b}' for b in BASES)})"
            )
        return get_method(f"{name}+{base}")
    method = get_method(name)
    if base is not None:
        if method.base is not None and method.base == base:
            return method
        raise ImageNetDGError(
            f"method {name} has no base, but --base {base} was given; --base applies only to "
            f"{', '.join(families)} (remove --base, or use --method {' or '.join(families)})"
        )
    return method


def _context(
    method: Method, backbone: Backbone, task: TaskData, config: MethodConfig, seed: int,
    run_dir: str | os.PathLike[str] | None, experts: ExpertStore | None, num_workers: int,
) -> FitContext:
    return FitContext(backbone, task, config.only(method.all_sections), seed,
                      Path(run_dir) if run_dir is not None else None, experts, num_workers)


def fit_method(
    name: str,
    backbone: Backbone,
    task: TaskData,
    config: MethodConfig,
    *,
    seed: int,
    run_dir: str | os.PathLike[str] | None = None,
    experts: ExpertStore | None = None,
    num_workers: int = 0,
) -> Predictor:
    """Train method ``name`` on ``task`` under ``config`` (which holds at least the method's sections; the
    method sees only those). A method that fine-tunes the image encoder leaves its weights in ``backbone``."""
    method = get_method(name)
    return method.fit(_context(method, backbone, task, config, seed, run_dir, experts, num_workers))


def load_method(
    name: str, backbone: Backbone, task: TaskData, config: MethodConfig, state: Mapping[str, Tensor], *, seed: int
) -> Predictor:
    """The predictor of method ``name`` rebuilt from its saved ``state`` (:meth:`Predictor.state_dict`)."""
    method = get_method(name)
    return method.load(_context(method, backbone, task, config, seed, None, None, 0), state)
