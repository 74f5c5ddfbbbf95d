"""Every hyperparameter of the methods, declared once, with the defaults of the paper's reference setup.

A preset is a named :class:`MethodConfig` instance. ``paper`` reproduces the reference scripts for the
standard DG suites, ``paper-imagenet-dg`` and ``paper-imagenet-dg-i`` those of ImageNet-DG (step-2 batch 12 per
domain; prompt batch 8 on task ``i``), ``smoke`` is a seconds-long CPU run of the tiny model for tests, and
``mini`` the embedded default: the tiny CLIP pretrained on the miniature world (``--pretrained mini``) trained
on the miniature benchmark in seconds per run, with prompts that start from "a photo of a". Deviations from
the reference code are the decisions of SPEC section 8 (fp32 master weights, seed honoured, WiSE-FT once at the
end, target scored once). A configuration also carries its :class:`PipelineConfig`, the speed settings it runs
with (every preset has the exact defaults).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from imagenet_dg.errors import ImageNetDGError
from guidg.image_cache import DECODERS


@dataclass(frozen=True)
class PromptConfig:
    """CoOp prompt learning: the step-1 experts of GuiDG and the CoOp baseline (SPEC 6.1)."""

    n_ctx: int = 16
    ctx_init: str | None = None
    """Words to initialise the context from (e.g. "a photo of a"); None draws N(0, 0.02^2)."""
    class_position: str = "end"
    lr: float = 1e-4
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 31
    schedule_steps: int = 31 * 400
    """Length of the cosine schedule in steps; the reference's 31 x 400 barely decays over a few-shot run."""
    eval_every: int = 5
    """Epochs between checkpoint-selection evaluations on the guide pool."""
    crop_scale: tuple[float, float] = (0.7, 1.0)
    flip: bool = True
    cached_views: int = 8
    """Augmented views per image whose features are computed once (the image encoder is frozen); 0 encodes
    every batch afresh, as the reference does."""
    share_prefix: bool = True
    """Compute the text tower on the class-independent prompt prefix once (exact: attention is causal)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of the image encoder: GuiDG step 2 and the ERM / CLIPood / UEO baselines (SPEC 6.3)."""

    batch_per_domain: int = 16
    lr: float = 5e-6
    weight_decay: float = 0.1
    epochs: int = 10
    steps_per_epoch: int = 400
    warmup_steps: int = 0
    clipood_lambda: float = 0.3
    ueo_coef: float = 0.01
    bma_beta: float = 0.1
    """Beta of CLIPood's Beta moving average (the reference script; the appendix says 0.5)."""
    wise_alpha: float = 0.5
    wise_mode: str = "end"
    """"end": interpolate once after training; "per-epoch": write it back after every epoch (the reference)."""
    randaugment: bool = True
    routing: str = "batch"
    """CMAttn routing: "batch" (the reference code) or "sample" (the paper's equation)."""
    heads: int = 4
    checkpoint_every: int = 400
    """Steps between resumable training checkpoints."""


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are made."""

    batch_size: int = 36
    """Evaluation batch; with batch routing a prediction depends on its batch-mates, so it is recorded."""
    templates: str = "single"
    """Zero-shot text templates: "single" ("a photo of a {name}.") or "ensemble" (the 80 ImageNet ones)."""


AUGMENT_PLACES = ("workers", "device")


@dataclass(frozen=True)
class PipelineConfig:
    """How images reach the model and how the image encoder runs: settings for speed, not of the method.

    The defaults are the exact path (Pillow decoding, augmentation in the loader processes, the encoder run as
    written). The others are faster on some machines and change results in the last bits, so they are part of a
    run's identity and recorded; a run with the defaults keeps the folder it had before these settings existed.
    """

    decoder: str = "pil"
    """Decoding of the decoded-image cache: "pil" (exactly as the files are read otherwise) or "nvjpeg" (JPEGs
    decoded and resized on the GPU by ``torchvision.io.decode_jpeg``; CUDA only; not bit-identical to Pillow)."""
    augment_on: str = "workers"
    """Where step 2's RandAugment runs: "workers" (the loader processes) or "device" (on the run's device, each
    image under its own seed, so the same operations as in the workers). For machines with few CPU cores per
    GPU; step 1's random crops stay in the workers."""
    compile: bool = False
    """Run the image encoder through ``torch.compile`` (step 2 and evaluation): the first batches compile."""

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ImageNetDGError(f"pipeline.decoder {self.decoder!r}: expected one of {', '.join(DECODERS)}")
        if self.augment_on not in AUGMENT_PLACES:
            raise ImageNetDGError(
                f"pipeline.augment_on {self.augment_on!r}: expected one of {', '.join(AUGMENT_PLACES)}"
            )
        if not isinstance(self.compile, bool):
            raise ImageNetDGError(f"pipeline.compile {self.compile!r}: expected true or false")

    def is_default(self) -> bool:
        """Whether every setting is the exact default path."""
        return self == PipelineConfig()


@dataclass(frozen=True)
class MethodConfig:
    """All hyperparameters of one run, and the pipeline settings it runs with."""

    prompt: PromptConfig = field(default_factory=PromptConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of every value."""
        return dataclasses.asdict(self)

    def replace(self, **sections: Mapping[str, Any]) -> MethodConfig:
        """A copy with some values changed, e.g. ``replace(finetune={"lr": 1e-5})``."""
        changed = {}
        for name, values in sections.items():
            if name not in ("prompt", "finetune", "eval", "pipeline"):
                raise ImageNetDGError(
                    f"unknown configuration section {name!r}; expected prompt, finetune, eval or pipeline"
                )
            try:
                changed[name] = dataclasses.replace(getattr(self, name), **values)
            except TypeError as error:
                raise ImageNetDGError(f"configuration section {name}: {error}") from None
        return dataclasses.replace(self, **changed)


PAPER = MethodConfig()

PRESETS: Mapping[str, MethodConfig] = MappingProxyType(
    {
        "paper": PAPER,
        "paper-imagenet-dg": PAPER.replace(finetune={"batch_per_domain": 12}),
        "paper-imagenet-dg-i": PAPER.replace(prompt={"batch_size": 8}, finetune={"batch_per_domain": 12}),
        "smoke": MethodConfig(
            prompt=PromptConfig(
                n_ctx=4, lr=2e-2, batch_size=16, epochs=10, schedule_steps=200, eval_every=5, cached_views=2
            ),
            finetune=FinetuneConfig(
                batch_per_domain=8, lr=3e-3, weight_decay=0.0, epochs=4, steps_per_epoch=25, checkpoint_every=25
            ),
            eval=EvalConfig(batch_size=36),
        ),
        "mini": MethodConfig(
            prompt=PromptConfig(
                n_ctx=4, ctx_init="a photo of a", lr=2e-2, batch_size=32, epochs=10, schedule_steps=100,
                eval_every=5, cached_views=2,
            ),
            finetune=FinetuneConfig(
                batch_per_domain=16, lr=1e-3, weight_decay=0.1, epochs=3, steps_per_epoch=90, checkpoint_every=90
            ),
            eval=EvalConfig(batch_size=36),
        ),
    }
)


def get_preset(name: str) -> MethodConfig:
    """The preset called ``name``; a clear error listing the known presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ImageNetDGError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
