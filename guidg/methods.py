"""The methods, registered by name: zero-shot, CoOp, ERM (+WiSE-FT), CLIPood, UEO, and GuiDG on each base.

The fine-tuning baselines and GuiDG's variants are registered once per base of :data:`guidg.bases.BASES`:
``erm``, ``clipood``, ``ueo`` alone, and ``guidg+erm``, ``guidg+clipood``, ``guidg+ueo``.

Every method is a function from a :class:`FitContext` (backbone, task data, hyperparameters, seed, where to
keep state) to a :class:`TrainedMethod`, which holds the trained state, predicts logits for images and
reports its number of trainable parameters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData
from guidg.backbone import Backbone
from guidg.bases import BASES
from guidg.checkpoints import load_module_state
from guidg.cmattn import CMAttn
from guidg.distributed import barrier, current_replica
from guidg.evaluation import head_logits, image_features
from guidg.experts import ExpertStore, expert_summaries, stack_text_features, train_experts
from guidg.finetune import finetune_image_encoder
from guidg.presets import MethodConfig
from guidg.prompt_training import train_prompt
from guidg.zeroshot import zeroshot_classifier


@dataclass(frozen=True)
class FitContext:
    """Everything a method needs to train on one task."""

    backbone: Backbone
    task: TaskData
    config: MethodConfig
    seed: int
    run_dir: Path | None = None
    """Where resumable training state is kept (None: nothing is saved)."""
    experts: ExpertStore | None = None
    """Where prompt experts are saved and looked up (None: always trained)."""
    num_workers: int = 0


@dataclass
class TrainedMethod:
    """A trained method: heads, optional CMAttn and fine-tuned image encoder, and how it was obtained."""

    method: str
    heads: Tensor
    """(d, C, D) class text features: d = 1 except for GuiDG, where d is the number of experts."""
    cmattn: CMAttn | None
    visual_state: dict[str, Tensor] | None
    """Fine-tuned image-encoder weights; None when the pretrained encoder is used as it is."""
    n_trainable: int
    eval_batch_size: int
    record: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Tensor]:
        """The trained state as flat tensors (``heads``, ``cmattn.*``, ``visual.*``)."""
        state = {"heads": self.heads}
        if self.cmattn is not None:
            state.update({f"cmattn.{k}": v for k, v in self.cmattn.state_dict().items()})
        if self.visual_state is not None:
            state.update({f"visual.{k}": v for k, v in self.visual_state.items()})
        return state

    def apply_to(self, backbone: Backbone) -> None:
        """Put the fine-tuned image encoder (if any) into ``backbone``."""
        if self.visual_state is not None:
            load_module_state(backbone.model.visual, self.visual_state)

    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of image features (N, D) in the given order (see :func:`head_logits`)."""
        return head_logits(features, self.heads, self.cmattn, self.eval_batch_size)

    def predict(self, backbone: Backbone, images: LabeledImages, num_workers: int = 0) -> Tensor:
        """Logits (N, C) of ``images``, with this method's image encoder put into ``backbone``."""
        self.apply_to(backbone)
        return self.logits(image_features(backbone, images, num_workers=num_workers))


def _pooled(pools: Mapping[str, LabeledImages], order: tuple[str, ...]) -> LabeledImages:
    return LabeledImages.concat([pools[d] for d in order])


def _visual_parameters(backbone: Backbone) -> int:
    return sum(p.numel() for p in backbone.model.visual.parameters())


def _zeroshot(templates: str | None) -> Callable[[FitContext], TrainedMethod]:
    def fit(context: FitContext) -> TrainedMethod:
        chosen = templates or context.config.eval.templates
        with torch.no_grad():
            classifier = zeroshot_classifier(context.backbone, context.task.class_names, chosen)
        return TrainedMethod(
            "zeroshot" if templates is None else f"zeroshot-{templates}",
            classifier.float().cpu()[None],
            None,
            None,
            0,
            context.config.eval.batch_size,
            {"templates": chosen},
        )

    return fit


def fit_coop(context: FitContext) -> TrainedMethod:
    """CoOp: one prompt learned on the expert pools of all sources, selected on their validation data."""
    task = context.task
    result = train_prompt(
        context.backbone,
        task.class_names,
        _pooled(task.expert, task.sources),
        _pooled(task.validation, task.sources),  # source-only selection data
        context.config.prompt,
        seed=context.seed,
        method="coop",
        num_workers=context.num_workers,
    )
    return TrainedMethod(
        "coop", result.text_features[None], None, None, result.n_trainable, context.config.eval.batch_size,
        {"best_epoch": result.best_epoch, "select_accuracy": result.best_accuracy, "history": result.history,
         "text_encoding": result.text_encoding},
    )


def _finetuned(base: str) -> Callable[[FitContext], TrainedMethod]:
    def fit(context: FitContext) -> TrainedMethod:
        task = context.task
        with torch.no_grad():
            classifier = zeroshot_classifier(context.backbone, task.class_names, "single").float()
        result = finetune_image_encoder(
            context.backbone,
            [task.guide[d] for d in task.sources],
            classifier[None],
            context.config.finetune,
            base=base,
            guided=False,
            seed=context.seed,
            method=base,
            run_dir=context.run_dir,
            num_workers=context.num_workers,
        )
        return TrainedMethod(
            base, classifier.cpu()[None], None, result.visual_state, _visual_parameters(context.backbone),
            context.config.eval.batch_size, {"history": result.history, "steps": result.steps},
        )

    return fit


def _guided(base: str) -> Callable[[FitContext], TrainedMethod]:
    def fit(context: FitContext) -> TrainedMethod:
        task = context.task
        replica = current_replica()
        started = time.perf_counter()
        if not replica.is_main and context.experts is not None:
            barrier(replica)  # rank 0 trains and saves the experts; the other ranks then load them
        experts = train_experts(
            context.backbone, task, context.config.prompt, seed=context.seed,
            store=context.experts,
            num_workers=context.num_workers,
        )
        if replica.is_main and context.experts is not None:
            barrier(replica)
        experts_seconds = time.perf_counter() - started
        heads = stack_text_features(experts)
        started = time.perf_counter()
        result = finetune_image_encoder(
            context.backbone,
            [task.guide[d] for d in task.sources],
            heads,
            context.config.finetune,
            base=base,
            guided=True,
            seed=context.seed,
            method=f"guidg+{base}",
            run_dir=context.run_dir,
            num_workers=context.num_workers,
        )
        config = context.config.finetune
        cmattn = CMAttn(heads.shape[-1], heads.shape[1], heads.shape[0], config.heads, config.routing)
        load_module_state(cmattn, result.cmattn_state or {})
        n_trainable = (
            sum(e.n_trainable for e in experts)
            + _visual_parameters(context.backbone)
            + sum(p.numel() for p in cmattn.parameters())
        )
        return TrainedMethod(
            f"guidg+{base}", heads, cmattn, result.visual_state, n_trainable, context.config.eval.batch_size,
            {"experts": dict(expert_summaries(experts)), "routing": config.routing, "history": result.history,
             "steps": result.steps,
             "phase_seconds": {"experts": experts_seconds, "finetune": time.perf_counter() - started}},
        )

    return fit


@dataclass(frozen=True)
class MethodSpec:
    """A registered method."""

    name: str
    """Registered name, e.g. ``zeroshot``, ``clipood`` or ``guidg+clipood``."""
    fit: Callable[[FitContext], TrainedMethod]
    description: str
    trains_image_encoder: bool
    family: str = ""
    """The method as a result record names it (``guidg`` for every GuiDG variant); the name by default."""
    base: str | None = None
    """The base under a method that runs on one (GuiDG); None for the others."""
    routes: bool = False
    """Whether CMAttn routes between heads (its routing is then part of the result)."""

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)


GUIDG = "guidg"
"""The method family that runs on top of a base: registered as ``guidg+<base>`` for every base."""


def _registered() -> tuple[MethodSpec, ...]:
    fixed = (
        MethodSpec("zeroshot", _zeroshot(None), "CLIP zero-shot, templates from the eval config", False),
        MethodSpec("zeroshot-ensemble", _zeroshot("ensemble"), "CLIP zero-shot, 80 ImageNet templates", False),
        MethodSpec("coop", fit_coop, "CoOp: one prompt learned on the pooled sources", False),
    )
    alone = tuple(
        MethodSpec(base.name, _finetuned(base.name), f"fine-tuned image encoder, {base.description}", True)
        for base in BASES.values()
    )
    guided = tuple(
        MethodSpec(f"{GUIDG}+{base.name}", _guided(base.name), f"GuiDG on {base.name} ({base.description})", True,
                   family=GUIDG, base=base.name, routes=True)
        for base in BASES.values()
    )
    return fixed + alone + guided


METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in _registered()})


def get_method(name: str) -> MethodSpec:
    """The method called ``name``; a clear error listing the registered ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ImageNetDGError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None


def families_with_base() -> tuple[str, ...]:
    """Method families that run on a base and take ``--base`` (``guidg``)."""
    return tuple(dict.fromkeys(spec.family for spec in METHODS.values() if spec.base is not None))


def resolve_method(name: str, base: str | None) -> MethodSpec:
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
    spec = get_method(name)
    if base is not None:
        if spec.base is not None and spec.base == base:
            return spec
        raise ImageNetDGError(
            f"method {name} has no base, but --base {base} was given; --base applies only to "
            f"{', '.join(families)} (remove --base, or use --method {' or '.join(families)})"
        )
    return spec


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
) -> TrainedMethod:
    """Train method ``name`` on ``task``; the backbone's image encoder holds the method's weights afterwards."""
    spec = get_method(name)
    context = FitContext(
        backbone, task, config, seed, Path(run_dir) if run_dir is not None else None, experts, num_workers
    )
    return spec.fit(context)
