"""The frozen-encoder baselines: a classifier (or cache) trained on the pretrained encoder's image features.

``linear-probe``, ``clip-adapter``, ``tip-adapter`` and ``tip-adapter-f`` (``docs/methods.md``,
"Frozen-encoder baselines"); their training is in :mod:`guidg.linear_probe`, :mod:`guidg.clip_adapter` and
:mod:`guidg.tip_adapter`.
The image encoder is never changed, so their features may come from the cache shared with other methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from guidg.citations import Citation
from guidg.clip_adapter import ClipAdapterConfig, TrainedClipAdapter, train_clip_adapter
from guidg.feature_training import FeaturePredictor
from guidg.linear_probe import LinearProbe, LinearProbeConfig, train_linear_probe
from guidg.methods.coop import COOP_PAPER
from guidg.methods.interface import FitContext, Method, Predictor
from guidg.methods.zeroshot import CLIP
from guidg.settings import MethodConfig, Section
from guidg.tip_adapter import (
    TipAdapter,
    TipAdapterConfig,
    TipAdapterFConfig,
    train_tip_adapter,
    train_tip_adapter_f,
)

CLIP_ADAPTER_PAPER = Citation(
    "Gao et al., CLIP-Adapter: Better Vision-Language Models with Feature Adapters, IJCV 2024",
    "https://arxiv.org/abs/2110.04544", "https://github.com/gaopengcuhk/CLIP-Adapter",
)
TIP_ADAPTER_PAPER = Citation(
    "Zhang et al., Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification, ECCV 2022",
    "https://arxiv.org/abs/2207.09519", "https://github.com/gaopengcuhk/Tip-Adapter",
)


class FeatureMethodPredictor(Predictor):
    """A trained frozen-encoder method as the runner scores it: its logits of the pretrained encoder's features,
    its parameter count, and its training record as ``details`` (the record's ``seconds`` as ``phase_seconds``)."""

    def __init__(self, trained: FeaturePredictor) -> None:
        self.trained = trained
        self.n_trainable = int(trained.n_trainable)
        record: dict[str, Any] = dict(trained.record)
        seconds = record.pop("seconds", {})
        self.details = {**record, "phase_seconds": dict(seconds)}

    def logits(self, features: Tensor) -> Tensor:
        return self.trained.logits(features)

    def state_dict(self) -> dict[str, Tensor]:
        return self.trained.state_dict()


def _method(
    name: str,
    description: str,
    citations: tuple[Citation, ...],
    config: type[Section],
    train: Callable[..., FeaturePredictor],
    restore: Callable[[Mapping[str, Tensor]], FeaturePredictor],
    *,
    trains: str,
    trainable_parameters: str,
    selection: str,
    selection_under: Callable[[MethodConfig], str] | None = None,
) -> Method:
    def fit(context: FitContext) -> Predictor:
        return FeatureMethodPredictor(train(context.backbone, context.task, context.settings(config),
                                            seed=context.seed, num_workers=context.num_workers))

    def load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
        return FeatureMethodPredictor(restore(state))

    return Method(name=name, description=description, citations=citations, sections=(config,), trains=trains,
                  trainable_parameters=trainable_parameters, selection=selection, fit=fit, load=load,
                  selection_under=selection_under)


def _clip_adapter_selection(config: MethodConfig) -> str:
    """``last-step`` for the last epoch's adapter (the reference), ``source-validation-epoch`` for the best."""
    return "source-validation-epoch" if config.section(ClipAdapterConfig).checkpoint == "best" else "last-step"


def _tip_adapter_selection(config: MethodConfig) -> str:
    """``source-validation-grid`` when alpha and beta are searched, ``none`` when they are fixed."""
    return "source-validation-grid" if config.section(TipAdapterConfig).search else "none"


def _tip_adapter_f_selection(config: MethodConfig) -> str:
    """The kept keys by ``source-validation-epoch`` (``checkpoint = best``) or the last epoch's, then alpha and
    beta by ``source-validation-grid`` unless they are fixed."""
    settings = config.section(TipAdapterFConfig)
    return {(True, True): "source-validation-epoch-then-grid", (True, False): "source-validation-epoch",
            (False, True): "source-validation-grid", (False, False): "last-step"}[
        (settings.checkpoint == "best", settings.search)]


LINEAR_PROBE = _method(
    "linear-probe", "linear probe: L2 logistic regression on frozen image features, C searched on source validation",
    (CLIP, COOP_PAPER), LinearProbeConfig, train_linear_probe, LinearProbe.from_state_dict,
    trains="a linear classifier (weights and biases) on the image features",
    trainable_parameters="C x D + C (classes x feature width, and biases)",
    selection="source-validation-grid",
)

CLIP_ADAPTER = _method(
    "clip-adapter", "CLIP-Adapter: a residual bottleneck MLP on the frozen image features",
    (CLIP_ADAPTER_PAPER,), ClipAdapterConfig, train_clip_adapter, TrainedClipAdapter.from_state_dict,
    trains="the two linear layers of the visual adapter",
    trainable_parameters="2 x D x D / reduction (the adapter's two bias-free layers)",
    selection="last-step",
    selection_under=_clip_adapter_selection,
)

TIP_ADAPTER = _method(
    "tip-adapter", "Tip-Adapter: a training-free key-value cache of the training shots' features",
    (TIP_ADAPTER_PAPER,), TipAdapterConfig, train_tip_adapter, TipAdapter.from_state_dict,
    trains="nothing (the cache is built, alpha and beta searched)",
    trainable_parameters="0",
    selection="source-validation-grid",
    selection_under=_tip_adapter_selection,
)

TIP_ADAPTER_F = _method(
    "tip-adapter-f", "Tip-Adapter-F: Tip-Adapter with its cache keys fine-tuned",
    (TIP_ADAPTER_PAPER,), TipAdapterFConfig, train_tip_adapter_f, TipAdapter.from_state_dict,
    trains="the cache's keys",
    trainable_parameters="NK x D (keys x feature width)",
    selection="source-validation-epoch-then-grid",
    selection_under=_tip_adapter_f_selection,
)
