"""The method interface: what a method declares (:class:`Method`), what its training gets
(:class:`FitContext`) and what it returns (:class:`Predictor`). ``docs/methods.md``, "The method interface",
says how to add one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import Tensor

from guidg.backbone import Backbone, TowerDepths
from guidg.citations import Citation
from guidg.evaluation import EvalConfig
from guidg.experts import ExpertStore
from guidg.image_pipeline import PipelineConfig
from guidg.model_selection import get_rule
from guidg.settings import MethodConfig, Section
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import TaskData

S = TypeVar("S", bound=Section)

RUN_SECTIONS: tuple[type[Section], ...] = (EvalConfig, PipelineConfig)
"""The sections every run has besides its method's: how predictions are made and how images reach the model."""


class MethodDeclarationError(ImageNetDGError):
    """A method's declaration is incomplete or contradicts itself."""


@dataclass(frozen=True)
class RunShape:
    """What is known of a run before anything is read or loaded: for the checks of :attr:`Method.check`."""

    protocol: str
    """``fewshot`` or ``full``."""
    towers: TowerDepths | None
    """The model's tower depths, from its architecture's config; None where the config is not known locally."""


@dataclass(frozen=True)
class FitContext:
    """Everything a method needs to train on one task."""

    backbone: Backbone
    """The pretrained CLIP; a method that fine-tunes its image encoder may change it in place."""
    task: TaskData
    """The task's images. Train on ``expert`` / ``guide``; select on
    :func:`guidg.model_selection.validation_images`; never read ``test`` (the runner scores it)."""
    config: MethodConfig
    """The run's configuration: exactly the sections the method declares, plus :data:`RUN_SECTIONS`."""
    seed: int
    """The training seed: every random draw derives from it (:mod:`guidg.seeding`)."""
    run_dir: Path | None = None
    """Where resumable training state may be kept (None: nothing is saved)."""
    experts: ExpertStore | None = None
    """Where GuiDG's prompt experts are saved and looked up (None: always trained)."""
    num_workers: int = 0
    """Image-loading processes."""

    def settings(self, kind: type[S]) -> S:
        """The section ``kind`` of the run's configuration."""
        return self.config.section(kind)


class Predictor(ABC):
    """What a method's ``fit`` returns: logits for images, and its trained state as tensors.

    The runner scores a list of images in two steps (:func:`guidg.evaluation.predict`): every image is encoded
    by :meth:`image_encoder` under the evaluation transform, then :meth:`logits` gets the features of all of
    them, in list order. A predictor whose prediction depends on its batch-mates (CMAttn's batch routing)
    splits them into consecutive batches of the run's ``eval.batch_size`` itself.

    Attributes every predictor has: ``n_trainable`` (trainable parameters, counted as the method's paper counts
    them) and ``details`` (JSON-able facts for the record's ``details``: the selected epoch, the training
    history under ``history``, which the record leaves out, and the seconds of named parts of training under
    ``phase_seconds``, which go to the record's ``phase_seconds``).
    """

    changes_image_encoder: ClassVar[bool] = False
    """False: :meth:`image_encoder` is the pretrained encoder as it is, so the features it gives may come from
    a cache shared with other methods. True: the method trained (or wraps) the encoder."""

    n_trainable: int
    details: dict[str, Any]

    def image_encoder(self, backbone: Backbone) -> Callable[[Tensor], Tensor]:
        """What turns a batch of preprocessed images (B, 3, H, W) into the L2-normalised features (B, D) that
        :meth:`logits` takes; called once before a list of images is encoded. The default is the backbone's
        encoder as it is; a method that changes the encoder puts its weights in place here, or returns its own
        forward pass."""
        return backbone.encode_images

    @abstractmethod
    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of the image features (N, D) of :meth:`image_encoder`, in their order."""

    @abstractmethod
    def state_dict(self) -> dict[str, Tensor]:
        """The trained state as named tensors (saved with safetensors); :attr:`Method.load` rebuilds the
        predictor from it."""


@dataclass(frozen=True)
class Method:
    """A registered method: what it is, what it reads and trains, how it selects, and how it trains.

    A method is one module that builds one (or, like the fine-tuning bases, one per variant) of these and is
    listed in :data:`guidg.methods.REGISTERED`. Everything else (presets, the command line's choices and help,
    the leaderboard's row order, README's method table and the settings tables of ``docs/methods.md``) reads
    the declaration.
    """

    name: str
    """Registered name, e.g. ``coop`` or ``guidg+clipood``; the leaderboard's row label."""
    description: str
    """One line for the command line's help and the method table."""
    citations: tuple[Citation, ...]
    sections: tuple[type[Section], ...]
    """The configuration sections ``fit`` reads (shared ones such as ``prompt`` or ``finetune``, and its own);
    :data:`RUN_SECTIONS` are added for every run. A section's defaults are the paper's (or its reference
    code's); its ``PRESETS`` give the other presets' values."""
    trains: str
    """What is trained, for the record and the method table, e.g. ``16 context vectors``."""
    trainable_parameters: str
    """How the method's paper counts its trainable parameters, e.g. ``M x W``; ``n_trainable`` of the
    predictor is that number."""
    selection: str
    """Its model-selection rule, a name of :data:`guidg.model_selection.RULES` (under its defaults)."""
    fit: Callable[[FitContext], Predictor]
    """Train on the context's task; return the predictor."""
    load: Callable[[FitContext, Mapping[str, Tensor]], Predictor]
    """Rebuild the predictor from its :meth:`Predictor.state_dict` (for resuming a run and for exports)."""
    family: str = ""
    """The method as a result record names it (``guidg`` for every GuiDG variant); the name by default."""
    base: str | None = None
    """The base under a method that runs on one (GuiDG); None for the others."""
    routing: Callable[[MethodConfig], str | None] | None = None
    """For a method with CMAttn: its routing under a configuration (recorded, and a row of its own)."""
    selection_under: Callable[[MethodConfig], str] | None = None
    """For a method whose settings choose its rule (CLIP-Adapter's ``checkpoint``): the rule under a
    configuration; :attr:`selection` is the rule under the defaults."""
    check: Callable[[MethodConfig, RunShape], Iterator[str]] | None = None
    """What is wrong with a configuration for a run of this shape (a setting against the model's depth, or one
    a protocol needs), each problem naming the setting; the sweep refuses it before anything is read."""

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)
        get_rule(self.selection)
        if not self.citations:
            raise MethodDeclarationError(f"method {self.name}: cite its paper (and reference code)")
        names: dict[str, type[Section]] = {}
        for kind in (*RUN_SECTIONS, *self.sections):
            if not (isinstance(kind, type) and issubclass(kind, Section)) or not kind.NAME:
                raise MethodDeclarationError(f"method {self.name}: {kind!r} is not a named settings Section")
            if names.get(kind.NAME, kind) is not kind:
                raise MethodDeclarationError(f"method {self.name}: two sections are named {kind.NAME}")
            names[kind.NAME] = kind

    @property
    def all_sections(self) -> tuple[type[Section], ...]:
        """Every section a run of this method has: its own and :data:`RUN_SECTIONS`, without repeats."""
        return tuple(dict.fromkeys((*self.sections, *RUN_SECTIONS)))

    def selection_of(self, config: MethodConfig) -> str:
        """The model-selection rule a run under ``config`` follows (what its record says)."""
        return self.selection if self.selection_under is None else get_rule(self.selection_under(config)).name

    def problems(self, config: MethodConfig, shape: RunShape) -> list[str]:
        """What :attr:`check` finds wrong with ``config`` for a run of ``shape`` (nothing without a check)."""
        return [] if self.check is None else list(self.check(config, shape))

    def routing_of(self, config: MethodConfig) -> str | None:
        """The CMAttn routing this method runs with under ``config``; None for a method without CMAttn."""
        return None if self.routing is None else self.routing(config)
