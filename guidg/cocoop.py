"""CoCoOp: conditional prompt learning on the frozen CLIP encoders, with a prompt context for each image.

K. Zhou, J. Yang, C. C. Loy and Z. Liu, "Conditional Prompt Learning for Vision-Language Models", CVPR 2022
(arXiv:2203.05557). Reference code: https://github.com/KaiyangZhou/CoOp (``trainers/cocoop.py``,
``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml``), whose optimiser, schedule and augmentation
come from Dassl (https://github.com/KaiyangZhou/Dassl.pytorch, ``dassl/config/defaults.py``, ``dassl/optim``).

CoOp learns M context vectors v_1 .. v_M shared by all classes (:class:`guidg.prompts.PromptLearner`). CoCoOp
adds a Meta-Net h = Linear(D, D / 16) - ReLU - Linear(D / 16, W) of the image's L2-normalised feature f (D: the
image feature's size, W: the text tower's width) and shifts every context vector by it: for image x the prompt
of class c is ``[SOS] v_1 + h(f) .. v_M + h(f) <name of c> . [EOS]``, its L2-normalised text feature t_c(x)
comes out of the frozen text tower, and the logits are ``100 f . t_c(x)``. Trained: the context and the Meta-Net.

Each image needs its own C text features, so a batch of B images is B x C prompts. They go through the text
tower in passes of at most ``max_sequences`` prompts, ``eval_max_sequences`` without gradients (:func:`chunk_plan`:
several images with all classes, or one image with a slice of the classes), so memory stays bounded whatever the
number of classes, in training and in evaluation alike. A training step of more than one pass does not keep each
pass's activations for the backward pass but recomputes them there (activation checkpointing). With the class
name last, the prefix ([SOS] and the image's context) runs once per image and only the class positions run per
class (:func:`guidg.shared_prefix.encode_shared_prefix`).

The image encoder is frozen, so the features of ``cached_views`` augmented views of every training image are
computed once (:func:`guidg.features.encode_views`) and epoch e trains on view ``e mod cached_views``: with as
many views as epochs (the default) every epoch sees a fresh augmentation of every image, as the reference code
has by augmenting each step. The epoch kept is the one with the best accuracy on the sources' validation images,
evaluated every ``eval_every`` epochs and after the last; the target's test images are never read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from guidg.backbone import Backbone, TextEncoder
from guidg.divergence import EpochSteps
from guidg.evaluation import accuracy, image_features
from guidg.feature_training import PhaseClock
from guidg.features import encode_views
from guidg.image_pipeline import describe_pipeline, eval_batch_size
from guidg.losses import LOGIT_SCALE
from guidg.model_selection import pooled_validation_images
from guidg.prompts import CLASS_POSITIONS, DEVICE_RULES, SHARED_ENCODINGS, PromptLearner
from guidg.schedule import constant_warmup_cosine_lambda
from guidg.seeding import derive_seed, generator
from guidg.settings import (
    OneOf,
    Ordered,
    Range,
    Section,
    Words,
    at_least,
    positive,
    setting,
)
from guidg.shared_prefix import encode_shared_prefix, length_groups
from guidg.transforms import eval_transform, prompt_train_transform
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData

logger = logging.getLogger(__name__)

METHOD = "cocoop"

GPU_TEXT_ENCODING = "shared-prefix-padded"
"""Text encoding where :data:`guidg.prompts.DEVICE_RULES` has no rule (a GPU): the prefix once per image, all
classes in one padded pass of large operations."""


class CoCoOpError(ImageNetDGError):
    """A CoCoOp setting, state or input is not what the method can use."""


@dataclass(frozen=True)
class CoCoOpConfig(Section):
    """CoCoOp's settings, with the defaults of the reference configuration ``vit_b16_c4_ep10_batch1_ctxv1``
    (16 shots) and of the Dassl settings it leaves unchanged (``docs/methods.md``, "CoCoOp")."""

    NAME: ClassVar[str] = "cocoop"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"lr": 0.02, "batch_size": 8, "epochs": 2, "eval_every": 1, "cached_views": 1},
        "mini": {"epochs": 2, "eval_every": 1, "cached_views": 2},
    }

    n_ctx: int = setting(4, at_least(1), "context vectors M without ctx_init (then drawn from N(0, 0.02^2))")
    ctx_init: str | None = setting(
        "a photo of a", Words(), "words whose token embeddings initialise the context (M: their token count); "
        "null draws it")
    class_position: str = setting("end", OneOf(CLASS_POSITIONS), "where the class name stands in the prompt")
    meta_reduction: int = setting(16, at_least(1), "the Meta-Net's hidden width is D // meta_reduction")
    lr: float = setting(0.002, positive(), "SGD learning rate after warm-up")
    momentum: float = setting(0.9, Range(0.0, 1.0, open_high=True), "SGD momentum (no dampening, no Nesterov)")
    weight_decay: float = setting(5e-4, at_least(0.0), "SGD weight decay on the context and the Meta-Net")
    batch_size: int = setting(1, at_least(1), "images per step")
    epochs: int = setting(10, at_least(1), "passes over the training shots")
    warmup_epochs: int = setting(1, at_least(0), "epochs at the constant warmup_lr before the cosine schedule")
    warmup_lr: float = setting(1e-5, positive(), "learning rate of the warm-up epochs")
    eval_every: int = setting(5, at_least(1), "epochs between selection evaluations (and after the last)")
    crop_scale: tuple[float, float] = setting(
        (0.08, 1.0), Ordered(Range(0.0, 1.0, open_low=True)), "RandomResizedCrop's area range (bicubic)")
    flip: bool = setting(True, None, "random horizontal flips")
    cached_views: int = setting(
        10, at_least(0), "augmented views per training image encoded once (epoch e uses view e mod cached_views); "
        "0 encodes every batch afresh")
    share_prefix: bool = setting(
        True, None, "run the class-independent prefix once per image (exact: attention is causal)")
    max_sequences: int = setting(
        512, at_least(1), "most (image, class) prompts in one pass with gradients (about 1.2 MiB a prompt for "
        "ViT-B/16 in fp32); a step of more passes recomputes them in the backward pass")
    eval_max_sequences: int = setting(
        4096, at_least(1), "most prompts in one pass without gradients (about 0.1 MiB a prompt for ViT-B/16)")

    def relations(self) -> Iterator[str]:
        if self.warmup_epochs > self.epochs:
            yield f"warmup_epochs ({self.warmup_epochs}) must be at most epochs ({self.epochs})"


class MetaNet(nn.Module):
    """CoCoOp's Meta-Net: ``h(f) = W_2 ReLU(W_1 f + b_1) + b_2``, from an image feature (B, D) to the shift
    (B, W) added to every context vector. The hidden width is ``D // reduction``."""

    def __init__(
        self, in_features: int, out_features: int, reduction: int = 16, generator: torch.Generator | None = None
    ) -> None:
        """Weights and biases drawn as ``nn.Linear`` draws them, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from
        ``generator`` (a CPU generator); the module is on the CPU."""
        super().__init__()
        hidden = in_features // reduction
        if hidden < 1:
            raise CoCoOpError(
                f"cocoop.meta_reduction {reduction}: the Meta-Net's hidden width {in_features} // {reduction} is 0; "
                f"use a reduction of at most {in_features}"
            )
        self.linear1 = nn.utils.skip_init(nn.Linear, in_features, hidden)
        self.linear2 = nn.utils.skip_init(nn.Linear, hidden, out_features)
        with torch.no_grad():
            for layer in (self.linear1, self.linear2):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear2(F.relu(self.linear1(features)))


def chunk_plan(images: int, classes: int, max_sequences: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """How the prompts of ``images`` images x ``classes`` classes are split into passes of at most
    ``max_sequences`` prompts: ``(first image, end image, [(first class, end class), ...])`` per group of images.

    With C <= ``max_sequences``, each group holds ``max_sequences // C`` images (the last group fewer) and one
    pass of all classes; otherwise each image is its own group, its classes cut into the fewest passes of
    near-equal size. (:class:`ConditionalPrompts` counts the classes in the order of their prompts' lengths.)
    """
    if max_sequences < 1:
        raise CoCoOpError(f"max_sequences must be at least 1, got {max_sequences}")
    if classes <= max_sequences:
        per = max_sequences // classes
        return [(start, min(start + per, images), [(0, classes)]) for start in range(0, images, per)]
    passes = math.ceil(classes / max_sequences)
    size = math.ceil(classes / passes)
    ranges = [(start, min(start + size, classes)) for start in range(0, classes, size)]
    return [(image, image + 1, ranges) for image in range(images)]


def text_encoding_for(device: torch.device, share_prefix: bool) -> tuple[str, str]:
    """The text encoding CoCoOp asks for on ``device``, and why: ``cut`` without ``share_prefix``; else the rule
    of :data:`guidg.prompts.DEVICE_RULES` (the CPU's grouped passes), or :data:`GPU_TEXT_ENCODING`."""
    if not share_prefix:
        return "cut", "rule (share_prefix off)"
    if device.type in DEVICE_RULES:
        return DEVICE_RULES[device.type], f"rule ({device.type})"
    return GPU_TEXT_ENCODING, f"rule ({device.type}: one padded pass)"


class ConditionalPrompts(nn.Module):
    """CoCoOp's prompt learner: CoOp's context (M, W) and the Meta-Net, giving each image its own class prompts.

    The parameters are ``prompts.ctx`` (a :class:`~guidg.prompts.PromptLearner`, whose token layout and text
    encoding it uses) and ``meta_net``; the frozen text encoder is referenced, not owned. The context is drawn
    (or initialised from ``init``) with the generator ``(seed, "context-init")`` and the Meta-Net with
    ``(seed, "meta-net-init")``.
    """

    def __init__(
        self,
        text: TextEncoder,
        tokenizer: object,
        class_names: Sequence[str],
        image_dim: int,
        *,
        n_ctx: int = 4,
        init: str | None = "a photo of a",
        class_position: str = "end",
        meta_reduction: int = 16,
        seed: int = 0,
        text_encoding: str = "shared-prefix",
        max_sequences: int = 512,
        eval_max_sequences: int = 4096,
    ) -> None:
        super().__init__()
        self.prompts = PromptLearner(
            text, tokenizer, class_names, n_ctx=n_ctx, init=init, class_position=class_position,
            generator=generator(seed, "context-init"), text_encoding=text_encoding,
        )
        device = self.prompts.ctx.device
        self.meta_net = MetaNet(image_dim, text.width, meta_reduction, generator(seed, "meta-net-init")).to(device)
        for bound in (max_sequences, eval_max_sequences):
            chunk_plan(1, 1, bound)  # refuses a bound below 1 now, not at the first step
        self.max_sequences = max_sequences
        """Most prompts in one pass while gradients are recorded."""
        self.eval_max_sequences = eval_max_sequences
        """Most prompts in one pass without gradients."""
        # Passes take the classes in the order of their prompts' lengths, so a pass holds few length groups
        # (the shared prefix's grouped passes stay large) and a padded pass pads little.
        order = torch.argsort(self.prompts.eos_positions, stable=True)
        self.register_buffer("class_order", order, persistent=False)
        self.register_buffer("_class_place", torch.argsort(order), persistent=False)
        self._chunks: dict[tuple[int, int, bool], tuple[Tensor, list[tuple[int, Tensor, Tensor]]]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.prompts.class_names)

    @property
    def n_trainable(self) -> int:
        """Trainable scalars as the paper counts them: M W (context) + the Meta-Net's weights and biases."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def text_encoding(self) -> str:
        """The encoding that runs (a shared one only where the prompts can share a prefix)."""
        return self.prompts.text_encoding

    def contexts(self, features: Tensor) -> Tensor:
        """The context of each image (B, M, W): ``v_m + h(f)`` for every m, from L2-normalised features (B, D)."""
        shift = self.meta_net(features)
        return self.prompts.ctx.unsqueeze(0) + shift.unsqueeze(1)

    def _chunk(self, start: int, stop: int, padded: bool) -> tuple[Tensor, list[tuple[int, Tensor, Tensor]]]:
        """The classes at places start .. stop - 1 of :attr:`class_order` and, for the shared prefix, how they
        are batched (:func:`length_groups` of their own prompts)."""
        key = (start, stop, padded)
        if key not in self._chunks:
            classes = self.class_order[start:stop]
            groups = length_groups(self.prompts.eos_positions[classes], 1 + self.prompts.n_ctx, padded)
            self._chunks[key] = (classes, groups)
        return self._chunks[key]

    def _encode(self, contexts: Tensor, start: int, stop: int) -> Tensor:
        """Unnormalised text features (G, stop - start, E) of the classes at places start .. stop - 1 of
        :attr:`class_order`, after each of the contexts (G, M, W)."""
        prompts = self.prompts
        encoding = prompts.text_encoding
        classes, groups = self._chunk(start, stop, encoding == "shared-prefix-padded")
        if encoding in SHARED_ENCODINGS:
            begin = 1 + prompts.n_ctx
            embeddings = prompts.token_embeddings
            sos = embeddings[0, :1].expand(contexts.shape[0], 1, -1)
            prefix = torch.cat([sos, contexts.to(embeddings.dtype)], dim=1)
            suffix = embeddings[classes, begin:]
            return encode_shared_prefix(prompts.text, prefix, suffix, prompts.eos_positions[classes], groups)
        if encoding != "cut":
            raise CoCoOpError(
                f"CoCoOp runs the text encodings {', '.join(SHARED_ENCODINGS)} and cut, not {encoding!r}"
            )
        rows = prompts.prompt_embeddings(contexts)[:, classes]
        images = rows.shape[0]
        eos = prompts.eos_positions[classes].repeat(images)
        features = prompts.text(rows.reshape(images * len(classes), *rows.shape[2:]), eos)
        return features.view(images, len(classes), -1)

    def _group_text(self, contexts: Tensor, ranges: list[tuple[int, int]], recompute: bool) -> Tensor:
        parts = [
            checkpoint(self._encode, contexts, start, stop, use_reentrant=False) if recompute
            else self._encode(contexts, start, stop)
            for start, stop in ranges
        ]
        text = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return F.normalize(text[:, self._class_place], dim=-1)

    def _plan(self, images: int) -> tuple[list[tuple[int, int, list[tuple[int, int]]]], bool]:
        training = torch.is_grad_enabled()
        plan = chunk_plan(images, self.num_classes, self.max_sequences if training else self.eval_max_sequences)
        # Several passes whose activations would all be kept for one backward pass: recompute them there.
        recompute = training and sum(len(ranges) for _, _, ranges in plan) > 1
        return plan, recompute

    def text_features(self, features: Tensor) -> Tensor:
        """L2-normalised text features (B, C, E), float32, of every class prompt of each image, from the images'
        L2-normalised features (B, D); differentiable in the context and the Meta-Net."""
        plan, recompute = self._plan(len(features))
        if not plan:
            return features.new_zeros(0, self.num_classes, self.prompts.text.embed_dim)
        contexts = self.contexts(features)
        return torch.cat([self._group_text(contexts[a:b], ranges, recompute) for a, b, ranges in plan])

    def forward(self, features: Tensor) -> Tensor:
        """Logits (B, C) ``100 f_b . t_c(x_b)`` of L2-normalised image features (B, D); text features are made
        one group of images at a time, so evaluating many images keeps only one group's in memory."""
        plan, recompute = self._plan(len(features))
        # The Meta-Net runs on all images at once: its result is then the same however the images are grouped.
        contexts = self.contexts(features)
        logits = []
        for first, end, ranges in plan:
            text = self._group_text(contexts[first:end], ranges, recompute)
            logits.append(LOGIT_SCALE * torch.einsum("bd,bcd->bc", features[first:end].float(), text))
        if not logits:
            return features.new_zeros(0, self.num_classes)
        return torch.cat(logits)

    def trained_state(self) -> dict[str, Tensor]:
        """The trained tensors on the CPU: ``ctx`` (M, W) and ``meta_net.<linear1|linear2>.<weight|bias>``."""
        state = {"ctx": self.prompts.ctx.detach().cpu().clone()}
        state.update({f"meta_net.{k}": v.detach().cpu().clone() for k, v in self.meta_net.state_dict().items()})
        return state

    def load_trained_state(self, state: Mapping[str, Tensor]) -> None:
        """Set the context and the Meta-Net from a :meth:`trained_state` of a learner of the same shapes."""
        expected = {key: tuple(value.shape) for key, value in self.trained_state().items()}
        found = {key: tuple(value.shape) for key, value in state.items()}
        if found != expected:
            raise CoCoOpError(f"a CoCoOp state must hold {expected}; found {found}")
        with torch.no_grad():
            self.prompts.ctx.copy_(state["ctx"])
            meta = {key.removeprefix("meta_net."): value for key, value in state.items() if key != "ctx"}
            self.meta_net.load_state_dict(meta)


@dataclass
class CoCoOpResult:
    """A trained CoCoOp: the learner (on the backbone's frozen encoders), and what its record keeps."""

    learner: ConditionalPrompts
    backbone: Backbone
    best_epoch: int | None = None
    best_accuracy: float | None = None
    """Accuracy in percent on the sources' validation images of the kept epoch; None without such images."""
    history: list[dict[str, float]] = field(default_factory=list)
    text_encoding: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds of training's phases: ``encode_views`` (the cached features) and ``train``."""

    @property
    def n_trainable(self) -> int:
        """M W + D (D / 16) + D / 16 + (D / 16) W + W: the context and the Meta-Net's weights and biases."""
        return self.learner.n_trainable

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """Logits (N, C) of L2-normalised image features (N, D) (e.g. :func:`guidg.evaluation.image_features`)."""
        with self.backbone.autocast():
            return self.learner(features.to(self.backbone.device)).float()

    def predict(self, images: LabeledImages, num_workers: int = 0) -> Tensor:
        """Logits (N, C) of ``images`` under the evaluation transform, in their order."""
        return self.logits(image_features(self.backbone, images, num_workers=num_workers))

    def state_dict(self) -> dict[str, Tensor]:
        """The trained tensors, contiguous on the CPU (safetensors-saveable); :func:`load_cocoop` reads them."""
        return self.learner.trained_state()

    def record(self) -> dict[str, Any]:
        """What a result record keeps: the kept epoch and its selection accuracy, the history, the text encoding
        and the image pipeline."""
        return {
            "best_epoch": self.best_epoch, "select_accuracy": self.best_accuracy, "history": self.history,
            "text_encoding": self.text_encoding, "pipeline": self.pipeline, "n_trainable": self.n_trainable,
        }


def build_learner(
    backbone: Backbone, class_names: Sequence[str], config: CoCoOpConfig, seed: int
) -> ConditionalPrompts:
    """The CoCoOp learner of ``config`` for ``class_names`` on ``backbone``, initialised from ``seed``."""
    encoding, _ = text_encoding_for(backbone.device, config.share_prefix)
    return ConditionalPrompts(
        backbone.text, backbone.tokenizer, class_names, backbone.embed_dim, n_ctx=config.n_ctx,
        init=config.ctx_init, class_position=config.class_position, meta_reduction=config.meta_reduction,
        seed=seed, text_encoding=encoding, max_sequences=config.max_sequences,
        eval_max_sequences=config.eval_max_sequences,
    )


def load_cocoop(
    backbone: Backbone, class_names: Sequence[str], config: CoCoOpConfig, state: Mapping[str, Tensor]
) -> CoCoOpResult:
    """A CoCoOp for ``class_names`` with the trained tensors ``state`` (a :meth:`CoCoOpResult.state_dict`)."""
    learner = build_learner(backbone, class_names, config, seed=0)
    learner.load_trained_state(state)
    return CoCoOpResult(learner, backbone)


def _pooled(pools: Mapping[str, LabeledImages], order: Sequence[str]) -> LabeledImages:
    return LabeledImages.concat([pools[d] for d in order])


def train_cocoop(
    backbone: Backbone, task: TaskData, config: CoCoOpConfig, *, seed: int, num_workers: int = 0
) -> CoCoOpResult:
    """Train CoCoOp on the sources' training images of ``task`` (``task.expert`` of every source, pooled in
    source order); keep the epoch with the best accuracy on their validation images (:func:`guidg.model_selection.pooled_validation_images`),
    the first such epoch on ties, or the last epoch when there are none. ``task.test`` is never read.

    SGD on the cross-entropy of the logits, ``batch_size`` images a step; the learning rate is constant within
    an epoch (:func:`guidg.schedule.constant_warmup_cosine_lambda`).
    """
    device = backbone.device
    train = _pooled(task.expert, task.sources)
    select = pooled_validation_images(task)
    if len(train) == 0:
        raise CoCoOpError(f"task {task.name}: the sources {', '.join(task.sources)} have no training images")
    learner = build_learner(backbone, task.class_names, config, seed)
    requested, chosen_by = text_encoding_for(device, config.share_prefix)
    if learner.text_encoding != requested:
        chosen_by = "rule (prompts cannot share a prefix)"
    text_record = {"text_encoding": learner.text_encoding, "chosen_by": chosen_by}
    transform = prompt_train_transform(backbone.image_size, config.crop_scale, config.flip)
    labels = torch.tensor(train.labels, dtype=torch.long, device=device)
    clock = PhaseClock(device)
    cached = select_features = select_labels = None
    with clock.phase("encode_views"):
        if config.cached_views > 0:
            cached = encode_views(
                backbone, train, transform, views=config.cached_views, seed=seed,
                batch_size=eval_batch_size(device), num_workers=num_workers,
            )
        if len(select) > 0:
            select_features = encode_views(
                backbone, select, eval_transform(backbone.image_size), batch_size=eval_batch_size(device),
                num_workers=num_workers,
            )[:, 0]
            select_labels = torch.tensor(select.labels, dtype=torch.long, device=device)

    optimizer = torch.optim.SGD(
        learner.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    schedule = constant_warmup_cosine_lambda(config.epochs, config.warmup_epochs, config.warmup_lr / config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    best_state, best_epoch, best_accuracy = learner.trained_state(), config.epochs, None
    history: list[dict[str, float]] = []
    step = 0
    with clock.phase("train"):
        for epoch in tqdm(range(config.epochs), desc=METHOD, unit="epoch", disable=None, leave=False):
            order = torch.randperm(len(train), generator=generator(seed, "epoch", epoch)).to(device)
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            steps = EpochSteps(METHOD, step)
            for start in range(0, len(train), config.batch_size):
                batch = order[start : start + config.batch_size]
                if cached is not None:
                    features = cached[batch, epoch % cached.shape[1]]
                else:
                    features = encode_views(
                        backbone, train.select(batch.tolist()), transform,
                        seed=derive_seed(seed, "augment", epoch, start), batch_size=config.batch_size,
                        num_workers=num_workers,
                    )[:, 0]
                with backbone.autocast():
                    logits = learner(features)
                steps.take(F.cross_entropy(logits.float(), labels[batch]), optimizer)
            step = steps.step
            record["loss"] = steps.finish()  # checked before the epoch's record and any selection
            scheduler.step()
            last = epoch + 1 == config.epochs
            if select_features is not None and ((epoch + 1) % config.eval_every == 0 or last):
                with torch.no_grad(), backbone.autocast():
                    score = accuracy(learner(select_features), select_labels)
                record["select_accuracy"] = score
                if best_accuracy is None or score > best_accuracy:
                    best_accuracy, best_epoch, best_state = score, epoch + 1, learner.trained_state()
            elif select_features is None and last:
                best_state = learner.trained_state()
            history.append(record)
            logger.debug("%s: epoch %d loss %.4f", METHOD, epoch + 1, record["loss"])
    learner.load_trained_state(best_state)
    return CoCoOpResult(
        learner, backbone, best_epoch, best_accuracy, history, text_record, describe_pipeline(device),
        dict(clock.seconds),
    )

