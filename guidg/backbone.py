"""The CLIP backbone: an open_clip model with its tokenizer and evaluation transform, and its text tower in pieces.

Weights are always kept in fp32; on CUDA the forward passes run under bf16 autocast (``docs/methods.md``,
"Where this implementation departs from the reference code"). The text
tower is exposed as a :class:`TextEncoder` that accepts token embeddings instead of token ids, which is what
prompt learning needs (``docs/methods.md``, "CoOp").
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from safetensors.torch import save_file
from torch import nn

from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.hashing import file_sha256
from guidg.packaged_weights import read_packed

TINY_MODEL = "imagenet-dg-tiny"
"""A registered open_clip architecture small enough for tests (32 px ViT, 2+2 layers of width 64)."""

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
"""Folder of open_clip architecture configs shipped with this package."""

PACKAGED_WEIGHTS_DIR = Path(__file__).parent / "weights"
"""Folder of the weights shipped with this package."""


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped in the package under a pretrained tag of one architecture."""

    file: str
    """File name inside :data:`PACKAGED_WEIGHTS_DIR` (an open_clip state dict as safetensors)."""
    synthetic: bool
    """True when the weights were trained on synthetic pictures only and model nothing real."""
    description: str

    @property
    def path(self) -> Path:
        return PACKAGED_WEIGHTS_DIR / self.file


PACKAGED: dict[tuple[str, str], PackagedWeights] = {
    (TINY_MODEL, "mini"): PackagedWeights(
        file="imagenet-dg-tiny-mini.safetensors",
        synthetic=True,
        description="synthetic-world weights: the tiny CLIP pretrained contrastively on captioned pictures "
        "(photographs, sketches, cartoons, clipart, paintings) of the miniature world (imagenet_dg.world) by "
        "guidg.world_pretraining; not a model of real images",
    ),
}
"""(architecture, pretrained tag) -> the packaged weights it names: ``imagenet-dg-tiny`` / ``mini``."""

PROMPTABLE_POOL_TYPES = ("argmax", "eos", "last")
"""Text pooling rules under which the pooled position is known from the token ids alone."""


class BackboneError(ImageNetDGError):
    """A backbone could not be built or cannot be used the way it was asked to."""


def register_model_configs() -> None:
    """Make the architectures in :data:`MODEL_CONFIG_DIR` known to open_clip. Calling it again does nothing."""
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass(frozen=True)
class TowerDepths:
    """The number of transformer layers of an architecture's towers, read from its open_clip config before any
    weights are loaded; ``vision`` is None for an image tower that is not a transformer (a ResNet)."""

    text: int | None
    vision: int | None


def tower_depths(arch: str) -> TowerDepths | None:
    """The tower depths of open_clip architecture ``arch``; None when its config is not known locally (an
    ``hf-hub:`` model, say), in which case what depends on them is checked when the model is built."""
    register_model_configs()
    config = open_clip.get_model_config(arch)
    if not config:
        return None
    vision = config.get("vision_cfg", {}).get("layers")
    text = config.get("text_cfg", {}).get("layers")
    return TowerDepths(text if isinstance(text, int) else None, vision if isinstance(vision, int) else None)


@dataclass(frozen=True)
class BackboneSpec:
    """Which CLIP model to load: an open_clip architecture name and where its weights come from."""

    arch: str = "ViT-B-16"
    """An open_clip architecture config name (``open_clip.list_models()``, plus :data:`TINY_MODEL`)."""
    pretrained: str | None = "openai"
    """An open_clip pretrained tag for ``arch``, a local checkpoint file (``.safetensors``, or ``.pt``/``.bin``
    read with ``torch.load(weights_only=True)``), or None for random weights. A file carries no activation
    setting: OpenAI weights given as a file need the ``-quickgelu`` variant of the architecture."""
    init_seed: int = 0
    """Seed of the random initialisation when ``pretrained`` is None, so random-weight runs repeat exactly."""

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise BackboneError(f"the model (--model) must be an open_clip architecture name, got {self.arch!r}")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained):
            raise BackboneError(
                f"the weights (--pretrained) must be a pretrained tag, a checkpoint file path or none, "
                f"got {self.pretrained!r}"
            )

    def pretrained_kind(self) -> str:
        """``"random"``, ``"tag"``, ``"packaged"`` (a tag of :data:`PACKAGED`) or ``"file"``; a tag wins over a
        file of the same name, as in open_clip.

        Raises BackboneError when ``pretrained`` is neither a known tag of ``arch`` nor an existing file.
        """
        if self.pretrained is None:
            return "random"
        if (self.arch, self.pretrained) in PACKAGED:
            return "packaged"
        if open_clip.get_pretrained_cfg(self.arch, self.pretrained):
            return "tag"
        if os.path.isfile(self.pretrained):
            return "file"
        tags = open_clip.list_pretrained_tags_by_model(self.arch) + [t for a, t in PACKAGED if a == self.arch]
        raise BackboneError(
            f"pretrained={self.pretrained!r} is neither a pretrained tag of {self.arch!r} "
            f"(known tags: {', '.join(tags) if tags else 'none'}) nor an existing checkpoint file; "
            f"give a known tag, the path of a checkpoint file, or None for random weights"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able record of this spec; a local checkpoint file is identified by its SHA-256."""
        kind = self.pretrained_kind()
        record = {
            "arch": self.arch,
            "pretrained": self.pretrained,
            "pretrained_kind": kind,
            "pretrained_sha256": _checkpoint_sha256(self.pretrained) if kind == "file" else None,
        }
        if kind == "random":
            record["init_seed"] = self.init_seed
        if kind == "packaged":
            packaged = PACKAGED[(self.arch, self.pretrained)]
            record["pretrained_sha256"] = _checkpoint_sha256(str(_packaged_path(packaged)))
            record["synthetic"] = packaged.synthetic
            record["description"] = packaged.description
        return record

    def synthetic(self) -> bool:
        """Whether the weights are synthetic-world weights (trained on no real image)."""
        packaged = PACKAGED.get((self.arch, self.pretrained)) if self.pretrained is not None else None
        return bool(packaged and packaged.synthetic)


def _packaged_path(packaged: PackagedWeights) -> Path:
    if not packaged.path.is_file():
        raise BackboneError(
            f"the packaged weights {packaged.path} are missing; expected them installed with the package "
            f"(reinstall it, or rebuild them with 'python -m guidg.world_pretraining --out {packaged.path}')"
        )
    return packaged.path


@contextlib.contextmanager
def _checkpoint_file(spec: BackboneSpec, kind: str) -> Iterator[str | None]:
    """What open_clip's ``pretrained`` is given: the tag or file as named, or for packaged weights a dense
    checkpoint unpacked from their storage form (:mod:`guidg.packaged_weights`) into a temporary file, so
    they take open_clip's loading path like any checkpoint."""
    if kind != "packaged":
        yield spec.pretrained
        return
    state, _ = read_packed(_packaged_path(PACKAGED[(spec.arch, str(spec.pretrained))]))
    with tempfile.TemporaryDirectory(prefix="imagenet-dg-weights-") as folder:
        dense = os.path.join(folder, "checkpoint.safetensors")
        save_file(state, dense)
        yield dense


def _checkpoint_sha256(path: str) -> str:
    stat = os.stat(path)
    return _cached_sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time too, so a replaced file is hashed again.
    return file_sha256(path)


TINY_SPEC = BackboneSpec(arch=TINY_MODEL, pretrained=None)
"""The tiny random-weight backbone, for tests and smoke runs."""


def _text_tower(model: nn.Module) -> tuple[nn.Module, str, int | None]:
    """The module holding the text-tower pieces of ``model``, its pool type and its EOS id.

    Raises BackboneError naming the reason when the tower cannot be driven with token embeddings.
    """
    name = type(model).__name__
    if isinstance(model, open_clip.CLIP):
        tower, pool_type, eos_id = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    else:
        tower = getattr(model, "text", None)
        if not isinstance(tower, TextTransformer):
            raise BackboneError(
                f"the text tower of this {name} is a {type(tower).__name__}, not open_clip's TextTransformer "
                f"(for example a Hugging Face text model): prompt learning needs a tower driven by token "
                f"embeddings with a causal mask; use an architecture with open_clip's own text transformer"
            )
        if tower.cls_emb is not None:
            raise BackboneError(
                f"the text tower of this {name} appends a class token (CoCa-style) and pools it: the pooled "
                f"position does not follow the prompt's EOS token; use a CLIP architecture"
            )
        pool_type, eos_id = tower.pool_type, tower.eos_id
    if getattr(tower, "attn_mask", None) is None:
        raise BackboneError(
            f"the text tower of this {name} uses bidirectional (non-causal) attention: every position sees the "
            f"padding after the prompt, so prompts cannot be cut to their length and context tokens have no fixed "
            f"meaning; use an architecture with a causal text transformer (e.g. the OpenAI CLIP models)"
        )
    if pool_type not in PROMPTABLE_POOL_TYPES:
        raise BackboneError(
            f"the text tower of this {name} pools with {pool_type!r}; expected one of "
            f"{', '.join(PROMPTABLE_POOL_TYPES)}, which pick one position of the token sequence"
        )
    return tower, pool_type, eos_id


class TextEncoder(nn.Module):
    """The CLIP text tower in pieces, for prompt learning.

    It shares (does not copy) the token embedding, positional embedding, transformer, final LayerNorm and
    projection of the model it is built from, so it always computes with the model's current weights.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        tower, self.pool_type, self.eos_id = _text_tower(model)
        self.token_embedding: nn.Embedding = tower.token_embedding
        self.positional_embedding: nn.Parameter = tower.positional_embedding
        self.transformer: nn.Module = tower.transformer
        self.ln_final: nn.Module = tower.ln_final
        self.text_projection: nn.Parameter | nn.Linear | None = tower.text_projection
        # Referenced, not registered as a child: for a CLIP model the tower is the whole model, and registering
        # it would make the image tower part of this module. The causal mask is read from it at every call so
        # that it follows the model across .to(device).
        object.__setattr__(self, "_mask_owner", tower)
        self.context_length: int = int(self.positional_embedding.shape[0])
        self.width: int = int(self.transformer.width)
        if isinstance(self.text_projection, nn.Linear):
            self.embed_dim: int = int(self.text_projection.out_features)
        elif self.text_projection is not None:
            self.embed_dim = int(self.text_projection.shape[1])
        else:
            self.embed_dim = self.width

    @property
    def attn_mask(self) -> torch.Tensor:
        """The model's additive causal mask, (context_length, context_length)."""
        return self._mask_owner.attn_mask

    def pool_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the position the model pools for each row of ``tokens`` (B, L), by the model's own rule."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, width) of token ids (B, L)."""
        return self.token_embedding(tokens.to(self.token_embedding.weight.device))

    def forward(self, embeddings: torch.Tensor, eos_positions: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features (B, embed_dim), float32, of token embeddings (B, L, width).

        Adds the first L positional embeddings, runs the causal transformer with the mask cut to L x L, applies
        the final LayerNorm, takes position ``eos_positions[b]`` of row b and projects it. With the full-length
        embeddings of token ids this is exactly open_clip's ``encode_text``.
        """
        batch, length, width = embeddings.shape
        if length > self.context_length or width != self.width:
            raise BackboneError(
                f"text embeddings must be (batch, length <= {self.context_length}, {self.width}), "
                f"got {tuple(embeddings.shape)}"
            )
        cast_dtype = self.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        # open_clip's Transformer takes (batch, length, width) whatever its batch_first, and transposes inside.
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(batch, device=x.device), eos_positions.to(x.device)]
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return x.float()

    def encode_tokens(self, tokens: torch.Tensor, cut: bool = True) -> torch.Tensor:
        """open_clip's ``encode_text`` (unnormalised, float32) of token ids (B, L).

        With ``cut`` the sequence is first cut after the last pooled position of the batch: the attention is
        causal, so later positions cannot influence the pooled ones and the result is the same.
        """
        tokens = tokens.to(self.token_embedding.weight.device)
        positions = self.pool_positions(tokens)
        if cut and tokens.shape[0] > 0:
            tokens = tokens[:, : int(positions.max()) + 1]
        return self(self.embed_tokens(tokens), positions)


def _embed_dim(model: nn.Module) -> int:
    output_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if isinstance(output_dim, int):
        return output_dim
    with torch.no_grad():
        size = _image_size(model)
        device = next(model.parameters()).device
        return int(model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1])


def _image_size(model: nn.Module) -> int:
    size = open_clip.get_model_preprocess_cfg(model).get("size")
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise BackboneError(f"expected a square image input, the model takes {tuple(size)}")
        size = size[0]
    if not isinstance(size, int):
        raise BackboneError(f"the model does not declare its input image size (found {size!r})")
    return size


COMPILE_BACKEND = "inductor"
"""The ``torch.compile`` backend of ``pipeline.compile``: torch's default, which generates Triton kernels on a
GPU and C++ on a CPU (it needs a C++ compiler there)."""


class Backbone:
    """An open_clip CLIP model with its tokenizer and eval transform, on one device."""

    def __init__(
        self,
        model: open_clip.CLIP | open_clip.CustomTextCLIP,
        tokenizer: Callable[..., torch.Tensor],
        eval_transform: Callable[[Any], torch.Tensor],
        device: torch.device,
        spec: BackboneSpec,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eval_transform = eval_transform
        self.device = device
        self.spec = spec
        self.embed_dim: int = _embed_dim(model)
        self.image_size: int = _image_size(model)
        self.image_encoder: nn.Module = model.visual
        """What computes image features: ``model.visual``, or its ``torch.compile`` wrapper (same parameters)
        after :meth:`compile_image_encoder`."""
        self.compile_backend: str | Callable[..., Any] | None = None
        """The ``torch.compile`` backend of :attr:`image_encoder`, or None when it runs as written."""

    def compile_image_encoder(self, backend: str | Callable[..., Any] | None = None) -> None:
        """Route every image-feature computation (evaluation, feature caching, fine-tuning) through
        ``torch.compile(model.visual)``. The wrapper shares the encoder's parameters, so optimisers, weight
        averaging and state dicts see the same tensors; the first batches of each shape and mode compile.
        ``backend`` defaults to :data:`COMPILE_BACKEND`."""
        backend = COMPILE_BACKEND if backend is None else backend
        self.image_encoder = torch.compile(self.model.visual, backend=backend)
        self.compile_backend = backend

    @functools.cached_property
    def text(self) -> TextEncoder:
        """The text tower in pieces, for prompt learning; built on first use, so that models whose text tower
        cannot be prompted still serve zero-shot classification and image fine-tuning."""
        return TextEncoder(self.model)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA; on other devices nothing changes and computation stays fp32."""
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 features (B, embed_dim) of preprocessed images (B, 3, H, W)."""
        with self.autocast():
            features = self.image_encoder(images.to(self.device, non_blocking=True))
        return F.normalize(features.float(), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised float32 features (N, embed_dim) of texts, tokenized with the model's tokenizer."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self.autocast():
            features = self.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """Build the model of ``spec`` with fp32 weights on ``device``, in eval mode.

    Weights named by a tag must be available (in the local cache, or downloadable); otherwise BackboneError
    says so; there is no silent fallback to random weights. For a tag whose weights were trained with QuickGELU
    (the OpenAI ones) the model is built with QuickGELU, as those weights require.
    """
    register_model_configs()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"device {device}: no CUDA GPU is visible to PyTorch on this machine; use the CPU")
    if ":" in spec.arch or open_clip.get_model_config(spec.arch) is None:
        raise BackboneError(
            f"unknown architecture {spec.arch!r}: expected an open_clip config name (see open_clip.list_models(); "
            f"{TINY_MODEL!r} for the tiny test model), with the weights given by --pretrained"
        )
    kind = spec.pretrained_kind()
    tag_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained) if kind == "tag" else {}
    named = str(_packaged_path(PACKAGED[(spec.arch, str(spec.pretrained))])) if kind == "packaged" else spec.pretrained
    try:
        with _checkpoint_file(spec, kind) as weights, torch.random.fork_rng(devices=[]):
            # Random weights are drawn on the CPU from a fixed seed, whatever ran before, on every device.
            torch.default_generator.manual_seed(spec.init_seed)
            model, _, eval_transform = open_clip.create_model_and_transforms(
                spec.arch,
                pretrained=weights,
                precision="fp32",
                device=device,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                weights_only=True,
            )
    except Exception as exc:
        if kind == "tag":
            raise BackboneError(
                f"could not load the pretrained weights {spec.pretrained!r} of {spec.arch!r} ({exc}); they are not "
                f"in the local cache and could not be downloaded. Cache them beforehand (open_clip keeps them in "
                f"the Hugging Face cache under HF_HOME; HF_HUB_OFFLINE=1 then uses it without network) or give a "
                f"checkpoint file as --pretrained"
            ) from exc
        if kind in ("file", "packaged"):
            raise BackboneError(
                f"could not load the checkpoint file {named} into {spec.arch!r} ({exc}); expected an "
                f"open_clip state dict of this architecture (.safetensors, or .pt/.bin readable with "
                f"torch.load(weights_only=True))"
            ) from exc
        raise BackboneError(f"could not build the architecture {spec.arch!r}: {exc}") from exc
    model.eval()
    tokenizer = open_clip.get_tokenizer(spec.arch)
    return Backbone(model, tokenizer, eval_transform, device, spec)
