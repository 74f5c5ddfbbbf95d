"""MaPLe: multi-modal prompt learning, prompts in the first J layers of both CLIP towers, coupled.

M. U. Khattak, H. Rasheed, M. Maaz, S. Khan and F. S. Khan, "MaPLe: Multi-modal Prompt Learning", CVPR 2023
(arXiv:2210.03117). Reference code: https://github.com/muzairkhattak/multimodal-prompt-learning
(``trainers/maple.py``, ``clip/model.py``, ``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml``), whose
optimiser, schedule, sampling and augmentation come from Dassl (https://github.com/KaiyangZhou/Dassl.pytorch).

The text prompt of class c is ``[SOS] p_1 .. p_n <rest of the words> <name of c> . [EOS]``: the words "a photo
of a {name}." with their first n token embeddings replaced by the learnable ``P_0`` (n, d_t), initialised to
those embeddings ("a photo" for n = 2). At the input of each text layer i = 1 .. J-1 the hidden states at the
same n positions are replaced by a new learnable ``P_i`` (n, d_t), drawn from N(0, 0.02^2). The image tower gets
n tokens of its own in the same layers, no parameters of their own: ``V_i = F_i(P_i)`` with a coupling function
``F_i`` = Linear(d_t, d_v) for each i. ``V_0`` is appended after the class and patch tokens (after the positional
embedding, before ``ln_pre``); at the input of image layer i = 1 .. J-1 the last n hidden states are replaced by
``V_i``. From layer J on, the prompt positions carry on as ordinary tokens. Image features are the class token,
text features the EOS token, as in CLIP; logits are ``exp(logit_scale) cos(image, text)`` with the model's own
learned logit scale (the reference's ``logit_scale.exp()``; 100 for the OpenAI weights). Trained: the P_i and
the F_i, by SGD on the cross-entropy; the encoders are frozen. Nothing is selected: the last epoch is the result.

The towers run block by block here (open_clip's modules, unchanged), with the prompts put in between blocks.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from guidg.backbone import Backbone, TextEncoder
from guidg.checkpoints import fingerprint
from guidg.divergence import check_finite_outputs
from guidg.feature_training import PhaseClock
from guidg.features import encode_views
from guidg.image_pipeline import describe_pipeline, eval_batch_size
from guidg.pooled_training import (
    PooledEpochSampler,
    describe_fingerprint_inputs,
    epoch_steps,
    frozen_parameters,
    source_pools,
    train_steps,
)
from guidg.schedule import constant_warmup_cosine_lambda
from guidg.seeding import generator
from guidg.settings import Range, Section, Words, at_least, positive, setting
from guidg.transforms import eval_transform, prompt_train_transform
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData

METHOD = "maple"

PROMPT_INIT_STD = 0.02
"""Standard deviation of the deeper text prompts' (and a randomly initialised first prompt's) initial values."""

PLACEHOLDER_WORD = "X"
"""Word standing at the first-layer prompt positions of the prompt text when ``ctx_init`` is None."""

TRAIN_CROP_SCALE = (0.08, 1.0)
"""RandomResizedCrop's area range (bicubic, then a horizontal flip): Dassl's ``random_resized_crop`` default."""

class MaPLeError(ImageNetDGError):
    """MaPLe cannot run as configured on this model or task, or a saved state does not fit."""


@dataclass(frozen=True)
class MaPLeConfig(Section):
    """MaPLe's settings: the defaults of the reference configuration ``vit_b16_c2_ep5_batch4_2ctx`` (the
    base-to-novel one, ``configs/trainers/MaPLe/``; :data:`CROSS_DATASET` is the reference's cross-dataset and
    domain-generalisation configuration) and of the Dassl settings it leaves unchanged (``dassl/config/defaults.py``).
    ``depth`` is moreover at most the towers' layers and ``n_ctx`` at most the tokens of ``ctx_init`` (checked
    against the model)."""

    NAME: ClassVar[str] = "maple"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"depth": 2, "epochs": 1, "warmup_epochs": 0, "batch_size": 16, "lr": 0.01},
        "mini": {"depth": 2, "epochs": 10, "batch_size": 8, "lr": 0.01},
    }

    depth: int = setting(9, at_least(1), "J: layers with prompts, the first included (PROMPT_DEPTH); at most the "
                         "layers of either tower")
    n_ctx: int = setting(2, at_least(1), "prompt tokens per layer (N_CTX)")
    ctx_init: str | None = setting(
        "a photo of a", Words(), "the prompt's words; the first-layer prompt starts as the embeddings of their first "
        "n_ctx tokens (CTX_INIT); null: n_ctx placeholders, the prompt drawn from N(0, 0.02^2)")
    lr: float = setting(0.0035, positive(), "SGD learning rate after warm-up (OPTIM.LR)")
    momentum: float = setting(0.9, Range(0.0, 1.0, open_high=True), "SGD momentum (Dassl's; no dampening, no Nesterov)")
    weight_decay: float = setting(5e-4, at_least(0.0), "SGD weight decay on every prompt and coupling (Dassl's)")
    batch_size: int = setting(4, at_least(1), "images per step (DATALOADER.TRAIN_X.BATCH_SIZE)")
    epochs: int = setting(5, at_least(1), "passes over the pooled training images (OPTIM.MAX_EPOCH)")
    warmup_epochs: int = setting(1, at_least(0), "epochs at the constant warmup_lr before the cosine schedule "
                                 "(WARMUP_EPOCH)")
    warmup_lr: float = setting(1e-5, positive(), "learning rate of the warm-up epochs (WARMUP_CONS_LR)")
    checkpoint_every: int = setting(500, at_least(1), "steps between training checkpoints of a run with a run "
                                    "folder (does not change the result)")

    def relations(self) -> Iterator[str]:
        if self.warmup_epochs > self.epochs:
            yield f"warmup_epochs ({self.warmup_epochs}) must be at most epochs ({self.epochs})"


CROSS_DATASET = MaPLeConfig(depth=3, lr=0.0026, epochs=2)
"""The reference's ``vit_b16_c2_ep5_batch4_2ctx_cross_datasets``: what its cross-dataset and domain-generalisation
experiments (trained on ImageNet, tested on its variants) use."""


def _linear(in_features: int, out_features: int, rng: torch.Generator) -> nn.Linear:
    """``nn.Linear``'s own initialisation (weight and bias U(-1/sqrt(in), 1/sqrt(in))), drawn from ``rng``."""
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features)
    bound = in_features ** -0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=rng)
        layer.bias.uniform_(-bound, bound, generator=rng)
    return layer


class MultiModalPrompts(nn.Module):
    """The learnable part of MaPLe: text prompts ``P_0 .. P_{J-1}`` (n, d_t) and couplings ``F_0 .. F_{J-1}``.

    ``ctx`` is P_0, ``deep_text[i - 1]`` is P_i, ``coupling[i]`` is F_i = Linear(d_t, d_v). As in the reference,
    F_0 is drawn on its own and F_1 .. F_{J-1} start as copies of one draw.
    """

    def __init__(self, depth: int, n_ctx: int, text_width: int, vision_width: int, context: Tensor | None,
                 seed: int) -> None:
        """``context`` (n, d_t) is P_0's initial value; None draws it from N(0, 0.02^2). Every draw comes from
        a generator derived from ``seed``. The module is on the CPU, in float32."""
        super().__init__()
        if context is None:
            rng = generator(seed, METHOD, "ctx")
            context = torch.empty(n_ctx, text_width).normal_(0.0, PROMPT_INIT_STD, generator=rng)
        if tuple(context.shape) != (n_ctx, text_width):
            raise MaPLeError(f"the first-layer prompt must be ({n_ctx}, {text_width}), got {tuple(context.shape)}")
        self.ctx = nn.Parameter(context.detach().float().clone())
        self.deep_text = nn.ParameterList([
            nn.Parameter(torch.empty(n_ctx, text_width).normal_(
                0.0, PROMPT_INIT_STD, generator=generator(seed, METHOD, "deep-text", i)))
            for i in range(1, depth)
        ])
        deep = _linear(text_width, vision_width, generator(seed, METHOD, "coupling", "deep"))
        self.coupling = nn.ModuleList(
            [_linear(text_width, vision_width, generator(seed, METHOD, "coupling", 0))]
            + [copy.deepcopy(deep) for _ in range(1, depth)]
        )

    @property
    def depth(self) -> int:
        return len(self.coupling)

    @property
    def n_ctx(self) -> int:
        return int(self.ctx.shape[0])

    def text_prompts(self) -> list[Tensor]:
        """P_0 .. P_{J-1}."""
        return [self.ctx, *self.deep_text]

    def vision_prompts(self) -> list[Tensor]:
        """V_i = F_i(P_i) (n, d_v) for i = 0 .. J-1."""
        return [coupling(prompt) for coupling, prompt in zip(self.coupling, self.text_prompts())]

    @property
    def n_trainable(self) -> int:
        """MaPLe's count: the prompts and the couplings, ``J n d_t + J (d_t d_v + d_v)``."""
        return sum(p.numel() for p in self.parameters())


def run_blocks(transformer: nn.Module, x: Tensor, attn_mask: Tensor | None,
               insert: Callable[[int, Tensor], Tensor]) -> Tensor:
    """``x`` (B, L, W) through the blocks of an open_clip ``Transformer`` one by one, ``x = insert(i, x)`` before
    block i; the same as the transformer's own forward when ``insert`` changes nothing."""
    for index, block in enumerate(transformer.resblocks):
        x = insert(index, x)
        if transformer.batch_first:
            x = block(x, attn_mask=attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def encode_prompted_text(text: TextEncoder, embeddings: Tensor, eos_positions: Tensor, deep_prompts: Sequence[Tensor],
                         start: int = 1) -> Tensor:
    """Unnormalised text features (B, embed_dim), float32, of token embeddings (B, L, width) whose first-layer
    prompt is already in place, with ``deep_prompts[i - 1]`` (n, width) put at positions ``start .. start+n-1``
    of the input of block i (i = 1 .. len(deep_prompts)). With no deep prompts it is :class:`TextEncoder`'s
    forward: the plain text tower."""
    batch, length, _ = embeddings.shape
    if len(deep_prompts) >= len(text.transformer.resblocks):
        raise MaPLeError(f"{len(deep_prompts)} deeper text prompts need more than the tower's "
                         f"{len(text.transformer.resblocks)} layers")
    cast = text.transformer.get_cast_dtype()
    x = embeddings.to(cast) + text.positional_embedding[:length].to(cast)

    def insert(index: int, x: Tensor) -> Tensor:
        if not 1 <= index <= len(deep_prompts):
            return x
        prompt = deep_prompts[index - 1].to(x.dtype).expand(batch, -1, -1)
        return torch.cat([x[:, :start], prompt, x[:, start + prompt.shape[1]:]], dim=1)

    x = run_blocks(text.transformer, x, text.attn_mask[:length, :length], insert)
    x = text.ln_final(x)
    x = x[torch.arange(batch, device=x.device), eos_positions.to(x.device)]
    if isinstance(text.text_projection, nn.Linear):
        x = text.text_projection(x)
    elif text.text_projection is not None:
        x = x @ text.text_projection
    return x.float()


def check_vision_tower(visual: nn.Module) -> VisionTransformer:
    """``visual`` when MaPLe can put prompts into it: open_clip's ViT pooling its class token, without an
    attentional pooler; raises MaPLeError naming what is not so otherwise."""
    if not isinstance(visual, VisionTransformer):
        raise MaPLeError(f"MaPLe puts prompts into open_clip's VisionTransformer; this image tower is a "
                         f"{type(visual).__name__}")
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise MaPLeError(f"MaPLe reads the image feature from the class token; this ViT pools with "
                         f"{'an attentional pooler' if visual.attn_pool is not None else repr(visual.pool_type)}")
    return visual


def encode_prompted_image(visual: VisionTransformer, images: Tensor, prompts: Sequence[Tensor]) -> Tensor:
    """Unnormalised image features (B, output_dim) of preprocessed images, with ``prompts[0]`` (n, width)
    appended after the class and patch tokens (after the positional embedding, before ``ln_pre``) and
    ``prompts[i]`` replacing the last n hidden states at the input of block i (i = 1 .. len(prompts) - 1).
    With no prompts it is open_clip's forward of the tower (class-token pooling)."""
    if len(prompts) > len(visual.transformer.resblocks):
        raise MaPLeError(f"{len(prompts)} image prompts need more than the tower's "
                         f"{len(visual.transformer.resblocks)} layers")
    x = visual.conv1(images)
    batch, width = x.shape[:2]
    x = x.reshape(batch, width, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, -1, -1), x], dim=1)
    x = visual.patch_dropout(x + visual.positional_embedding.to(x.dtype))
    n = int(prompts[0].shape[0]) if prompts else 0
    if prompts:
        x = torch.cat([x, prompts[0].to(x.dtype).expand(batch, -1, -1)], dim=1)
    x = visual.ln_pre(x)

    def insert(index: int, x: Tensor) -> Tensor:
        if not 1 <= index < len(prompts):
            return x
        return torch.cat([x[:, :-n], prompts[index].to(x.dtype).expand(batch, -1, -1)], dim=1)

    x = run_blocks(visual.transformer, x, None, insert)
    pooled = visual.ln_post(x[:, 0])
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled


def prompted_image_features(backbone: Backbone, images: Tensor, vision_prompts: Sequence[Tensor]) -> Tensor:
    """L2-normalised image features (B, D), float32, of preprocessed images through ``backbone``'s image tower
    with the image prompts ``V_0 .. V_{J-1}`` (:meth:`MultiModalPrompts.vision_prompts`) in place."""
    with backbone.autocast():
        features = encode_prompted_image(check_vision_tower(backbone.model.visual), images.to(backbone.device),
                                         vision_prompts)
    return F.normalize(features.float(), dim=-1)


class MaPLeModel(nn.Module):
    """MaPLe on a backbone: the prompts (:attr:`prompts`, the only parameters and state of this module) and the
    class prompts' fixed token embeddings; the backbone's towers are referenced, not owned."""

    def __init__(self, backbone: Backbone, class_names: Sequence[str], config: MaPLeConfig, seed: int) -> None:
        super().__init__()
        text = backbone.text
        visual = check_vision_tower(backbone.model.visual)
        layers = min(len(text.transformer.resblocks), len(visual.transformer.resblocks))
        if config.depth > layers:
            raise MaPLeError(f"{MaPLeConfig.NAME}.depth {config.depth}: this model's towers have "
                             f"{len(text.transformer.resblocks)} (text) and {len(visual.transformer.resblocks)} "
                             f"(image) layers; use at most {layers}")
        if not class_names:
            raise MaPLeError("MaPLe needs at least one class name, got none")
        n = config.n_ctx
        words = config.ctx_init if config.ctx_init is not None else " ".join([PLACEHOLDER_WORD] * n)
        device = text.token_embedding.weight.device
        word_tokens = backbone.tokenizer([words])
        word_count = int(text.pool_positions(word_tokens)[0]) - 1
        if word_count < n:
            raise MaPLeError(f"{MaPLeConfig.NAME}.ctx_init {config.ctx_init!r} has {word_count} tokens, fewer than "
                             f"{MaPLeConfig.NAME}.n_ctx ({n}); use more words or fewer prompt tokens")
        tokens = backbone.tokenizer([f"{words} {name}." for name in class_names])
        if not torch.equal(tokens[:, : 1 + word_count], word_tokens[:, : 1 + word_count].expand(len(class_names), -1)):
            raise MaPLeError(f"the tokenizer does not keep the tokens of {words!r} at the start of every class prompt")
        eos = text.pool_positions(tokens)
        tokens = tokens[:, : int(eos.max()) + 1].to(device)
        with torch.no_grad():
            embeddings = text.embed_tokens(tokens).float()
        self.register_buffer("token_embeddings", embeddings, persistent=False)
        self.register_buffer("eos_positions", eos.to(device), persistent=False)
        context = embeddings[0, 1 : 1 + n].cpu() if config.ctx_init is not None else None
        prompts = MultiModalPrompts(config.depth, n, text.width, visual.transformer.width, context, seed)
        self.prompts = prompts.to(device)
        self.class_names = tuple(class_names)
        self.logit_scale = float(backbone.model.logit_scale.detach().exp())
        """exp of the model's learned logit scale (frozen), what the reference multiplies cosines by."""
        object.__setattr__(self, "_backbone", backbone)

    @property
    def backbone(self) -> Backbone:
        return self._backbone

    def class_prompt_embeddings(self) -> Tensor:
        """Token embeddings (C, L, d_t) of the class prompts with P_0 at positions 1 .. n."""
        n, classes = self.prompts.n_ctx, self.token_embeddings.shape[0]
        ctx = self.prompts.ctx.to(self.token_embeddings.dtype).expand(classes, -1, -1)
        return torch.cat([self.token_embeddings[:, :1], ctx, self.token_embeddings[:, 1 + n:]], dim=1)

    def text_features(self) -> Tensor:
        """L2-normalised text features (C, D), float32, of every class; differentiable in the prompts."""
        with self.backbone.autocast():
            features = encode_prompted_text(self.backbone.text, self.class_prompt_embeddings(), self.eos_positions,
                                            self.prompts.text_prompts()[1:])
        return F.normalize(features.float(), dim=-1)

    def encode_images(self, images: Tensor) -> Tensor:
        """L2-normalised image features (B, D), float32, of preprocessed images through the prompted tower."""
        return prompted_image_features(self.backbone, images, self.prompts.vision_prompts())

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, C): ``logit_scale * cos(image, class text)``."""
        return self.logit_scale * self.encode_images(images) @ self.text_features().T


@dataclass
class MaPLeResult:
    """A trained MaPLe: the prompts on the backbone, and the class text features they give."""

    model: MaPLeModel
    config: MaPLeConfig
    text_features: Tensor
    """(C, D) L2-normalised, float32, on the backbone's device (the text side does not depend on the image)."""
    n_trainable: int
    steps: int = 0
    total_steps: int = 0
    resumed_from: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds of the named phases of training (``training``); the runner scores the sources' validation images."""

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    def image_features(self, images: LabeledImages, *, batch_size: int | None = None, num_workers: int = 0
                       ) -> Tensor:
        """Normalised features (N, D) of ``images`` under the evaluation transform, through the prompted tower."""
        backbone = self.model.backbone
        features = encode_views(backbone, images, eval_transform(backbone.image_size),
                                batch_size=batch_size or eval_batch_size(backbone.device), num_workers=num_workers,
                                encode=self.model.encode_images)[:, 0]
        return check_finite_outputs(features, "image features")

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Logits (N, C) of image features (N, D) of the prompted tower."""
        text = self.text_features.to(features.device)
        return self.model.logit_scale * F.normalize(features.float(), dim=-1) @ text.T

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Logits (B, C) of a batch of preprocessed images (B, 3, H, W)."""
        return self.logits_from_features(self.model.encode_images(images))

    def state_dict(self) -> dict[str, Tensor]:
        """What :func:`load_maple` needs besides the backbone, the class names and the config: the prompts and
        couplings, as contiguous CPU tensors (safetensors-saveable)."""
        return {f"prompts.{k}": v.detach().to("cpu", copy=True).contiguous()
                for k, v in self.model.prompts.state_dict().items()}


def train_maple(
    backbone: Backbone,
    task: TaskData,
    config: MaPLeConfig = MaPLeConfig(),
    *,
    seed: int,
    num_workers: int = 0,
    run_dir: str | os.PathLike[str] | None = None,
    stop_at_step: int | None = None,
) -> MaPLeResult:
    """Train MaPLe's prompts on the pooled training images of ``task``'s sources; the backbone is not changed.

    Reads ``task.expert`` only (the last step is the result; nothing is selected), never
    ``task.test``. Every random draw (initialisation, epoch orders, augmentation) is derived from ``seed``, so
    two CPU runs are bit-identical. With ``run_dir`` the run checkpoints every ``config.checkpoint_every`` steps
    and a rerun resumes; ``stop_at_step`` stops there after saving.
    """
    device = backbone.device
    pools = source_pools(task)
    model = MaPLeModel(backbone, task.class_names, config, seed)
    parameters = dict(model.prompts.named_parameters())
    optimizer = torch.optim.SGD(parameters.values(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, constant_warmup_cosine_lambda(config.epochs, config.warmup_epochs, config.warmup_lr / config.lr))
    sizes = [len(pool) for pool in pools]
    drop_last = sum(sizes) >= config.batch_size  # Dassl drops the incomplete batch unless it is the only one
    total = config.epochs * epoch_steps(sizes, config.batch_size, drop_last)
    sampler = PooledEpochSampler(sizes, config.batch_size, seed, total, purpose=METHOD, drop_last=drop_last)
    transform = prompt_train_transform(backbone.image_size, TRAIN_CROP_SCALE, True)

    def step_loss(step: int, images: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(model(images), labels)

    run_fingerprint = fingerprint(describe_fingerprint_inputs(
        METHOD, seed, config, backbone.spec.describe(), pools, task.class_names))
    clock = PhaseClock(device)
    with clock.phase("training"), frozen_parameters(backbone.model):
        progress = train_steps(
            method=METHOD, pools=pools, transform=transform, sampler=sampler, parameters=parameters,
            optimizer=optimizer, scheduler=scheduler, schedule_unit="epoch", step_loss=step_loss, device=device,
            run_fingerprint=run_fingerprint, run_dir=run_dir, checkpoint_every=config.checkpoint_every,
            stop_at_step=stop_at_step, num_workers=num_workers,
        )
        result = _result(model, config, steps=progress.steps, total_steps=total, resumed_from=progress.resumed_from,
                         history=progress.history, pipeline=describe_pipeline(device))
    result.seconds = dict(clock.seconds)
    return result


def _result(model: MaPLeModel, config: MaPLeConfig, **progress: Any) -> MaPLeResult:
    model.prompts.requires_grad_(False)
    with torch.no_grad():
        text = model.text_features()
    return MaPLeResult(model, config, text, model.prompts.n_trainable, **progress)


def load_maple(backbone: Backbone, class_names: Sequence[str], state: Mapping[str, Tensor], config: MaPLeConfig
               ) -> MaPLeResult:
    """The result saved as ``state`` (:meth:`MaPLeResult.state_dict`) on ``backbone``, the backbone it was
    trained on."""
    model = MaPLeModel(backbone, class_names, config, seed=0)
    prompts = {name[len("prompts."):]: tensor for name, tensor in state.items() if name.startswith("prompts.")}
    expected = model.prompts.state_dict()
    if len(prompts) != len(state) or set(prompts) != set(expected):
        raise MaPLeError(f"the {METHOD} state does not fit depth {config.depth}: expected "
                         f"{sorted('prompts.' + k for k in expected)[:4]}..., found {sorted(state)[:4]}...")
    for name, tensor in prompts.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise MaPLeError(f"{METHOD} tensor prompts.{name}: expected shape {tuple(expected[name].shape)}, "
                             f"found {tuple(tensor.shape)}")
    model.prompts.load_state_dict(dict(prompts))
    return _result(model, config)
