"""GuiDG on each base: one prompt expert per source domain (step 1), then the image encoder fine-tuned under
the experts' guidance, weighed by CMAttn (step 2) (``docs/methods.md``, "GuiDG").

Registered once per base of :data:`guidg.bases.BASES` as ``guidg+<base>``: the base decides step 2's loss
and weight averaging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from guidg.bases import BASES, Base
from guidg.citations import Citation
from guidg.cmattn import ROUTING_MODES, CMAttn
from guidg.distributed import barrier, current_replica
from guidg.evaluation import EvalConfig
from guidg.experts import expert_summaries, stack_text_features, train_experts
from guidg.finetune import FinetuneConfig, finetune_image_encoder
from guidg.methods.finetuned import visual_parameters
from guidg.methods.interface import FitContext, Method, Predictor
from guidg.methods.text_heads import TextHeadPredictor
from guidg.prompt_training import PromptConfig
from guidg.seeding import derive_seed
from guidg.settings import MethodConfig, OneOf, Section, at_least, setting

FAMILY = "guidg"
"""The method family that runs on top of a base: registered as ``guidg+<base>`` for every base."""

GUIDG_PAPER = Citation(
    "Li et al., Generalizing Vision-Language Models with Dedicated Prompt Guidance, AAAI 2026",
    "https://arxiv.org/abs/2512.02421", "https://github.com/TL-UESTC/GuiDG",
)


@dataclass(frozen=True)
class GuidgConfig(Section):
    """GuiDG's CMAttn (``docs/methods.md``, "CMAttn")."""

    NAME: ClassVar[str] = "guidg"

    routing: str = setting(
        "batch", OneOf(ROUTING_MODES),
        "batch: one weight vector per batch, the batch mean (the reference code); sample: every image its own "
        "(the paper's equation)")
    heads: int = setting(4, at_least(1), "CMAttn's heads H")


def _routing(config: MethodConfig) -> str:
    return config.section(GuidgConfig).routing


def new_cmattn(heads: Tensor, config: GuidgConfig, seed: int) -> CMAttn:
    """CMAttn for ``heads`` (d, C, D) under ``config``, initialised from ``seed`` (the global generator is left
    as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "cmattn-init"))
        return CMAttn(heads.shape[-1], heads.shape[1], heads.shape[0], config.heads, config.routing)


def _fit(base: Base) -> Callable[[FitContext], Predictor]:
    name = f"{FAMILY}+{base.name}"

    def fit(context: FitContext) -> Predictor:
        task = context.task
        replica = current_replica()
        started = time.perf_counter()
        if not replica.is_main and context.experts is not None:
            barrier(replica)  # rank 0 trains and saves the experts; the other ranks then load them
        experts = train_experts(
            context.backbone, task, context.settings(PromptConfig), seed=context.seed,
            store=context.experts, num_workers=context.num_workers,
        )
        if replica.is_main and context.experts is not None:
            barrier(replica)
        experts_seconds = time.perf_counter() - started
        heads = stack_text_features(experts)
        guidance = context.settings(GuidgConfig)
        cmattn = new_cmattn(heads, guidance, context.seed)
        objective = base.objective(context.config)
        started = time.perf_counter()
        result = finetune_image_encoder(
            context.backbone,
            [task.guide[d] for d in task.sources],
            heads,
            context.settings(FinetuneConfig),
            objective,
            seed=context.seed,
            method=name,
            cmattn=cmattn,
            run_dir=context.run_dir,
            num_workers=context.num_workers,
        )
        n_trainable = (
            sum(e.n_trainable for e in experts) + visual_parameters(context)
            + sum(p.numel() for p in cmattn.parameters())
        )
        return TextHeadPredictor(
            heads, context.settings(EvalConfig).batch_size, cmattn, result.visual_state, n_trainable,
            {"experts": dict(expert_summaries(experts)), "routing": guidance.routing, "history": result.history,
             "steps": result.steps, "averaging": objective.describe_averaging(),
             "phase_seconds": {"experts": experts_seconds, "finetune": time.perf_counter() - started}},
        )

    return fit


def _load(context: FitContext, state: Mapping[str, Tensor]) -> Predictor:
    return TextHeadPredictor.from_state(state, context.settings(EvalConfig).batch_size,
                                        context.settings(GuidgConfig).routing)


def guided_method(base: Base) -> Method:
    """GuiDG on ``base``."""
    return Method(
        name=f"{FAMILY}+{base.name}",
        description=f"GuiDG on {base.name} ({base.description})",
        citations=(GUIDG_PAPER, *base.citations),
        sections=(PromptConfig, FinetuneConfig, GuidgConfig, *base.sections),
        trains="one prompt expert per source (step 1), then the image encoder and CMAttn (step 2)",
        trainable_parameters="d x M x W (the experts) + all image-encoder parameters + H (D^2 + 2 D + C) (CMAttn)",
        selection="source-validation-epoch-then-last-step",
        fit=_fit(base),
        load=_load,
        family=FAMILY,
        base=base.name,
        routing=_routing,
    )


GUIDED: Mapping[str, Method] = {name: guided_method(base) for name, base in BASES.items()}
"""GuiDG on every base, by base name."""
