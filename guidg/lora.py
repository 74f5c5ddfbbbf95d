"""Low-rank adapters on the query, key and value projections of every attention layer of both CLIP towers.

Each ``nn.MultiheadAttention`` of open_clip's ``ResidualAttentionBlock`` packs the three projections in one
``in_proj_weight`` (3d, d): rows ``[0, d)`` make the queries, ``[d, 2d)`` the keys, ``[2d, 3d)`` the values.
:class:`LoRAAttention` wraps one such layer without changing it: for each third ``i`` it holds ``A_i`` (r, d)
and ``B_i`` (d, r) and computes

    q = W_q x + b_q + s * B_q A_q dropout_q(x)        (and likewise k, v)

with ``s`` the scaling of :data:`SCALING_RULES`, then the layer's own attention and output projection. The
dropout (independent masks for q, k and v) acts on the adapter's input only and only in training; without it
the layer equals one whose weight is ``W + s B A`` on each third, which is what :func:`merge_lora` writes into
``in_proj_weight`` before handing the original layer back, so a merged model is a plain open_clip model.

:func:`apply_lora` wraps every block of the text and image towers; :func:`remove_lora` undoes it unmerged.
This is the adapter of CLIP-LoRA (M. Zanella and I. Ben Ayed, "Low-Rank Few-Shot Adaptation of
Vision-Language Models", CVPR Workshops 2024; https://github.com/MaxZanella/CLIP-LoRA, ``loralib/layers.py``
``PlainMultiheadAttentionLoRA`` and ``LinearLoRA``), see ``docs/methods.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from imagenet_dg.errors import ImageNetDGError

SCALING_RULES = ("alpha/sqrt(r)", "alpha/r")
"""How the adapter's output is scaled: ``alpha / sqrt(r)`` (what the CLIP-LoRA reference code computes, in
``loralib/layers.py``, where ``alpha / r`` is commented out) or ``alpha / r`` (the LoRA paper's)."""

QKV = ("q", "k", "v")
"""The thirds of ``in_proj_weight``, in their order there."""


class LoRAError(ImageNetDGError):
    """Low-rank adapters cannot be put on this model, or were asked for something they do not do."""


def lora_scaling(alpha: float, rank: int, rule: str) -> float:
    """The factor ``s`` of ``W + s B A`` under ``rule`` (one of :data:`SCALING_RULES`)."""
    if rule == "alpha/sqrt(r)":
        return alpha / math.sqrt(rank)
    if rule == "alpha/r":
        return alpha / rank
    raise LoRAError(f"unknown LoRA scaling rule {rule!r}; expected one of {', '.join(SCALING_RULES)}")


def _additive_mask(mask: Tensor | None, batch: int, heads: int, length: int, source: int, dtype: torch.dtype
                   ) -> Tensor | None:
    """``nn.MultiheadAttention``'s ``attn_mask`` (True or -inf: not attended) as an additive float mask that
    broadcasts over (batch, heads, length, source), for ``scaled_dot_product_attention``."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    mask = mask.to(dtype)
    if mask.ndim == 3:
        return mask.view(batch, heads, length, source)
    return mask


class LoRAAttention(nn.Module):
    """An ``nn.MultiheadAttention`` (self-attention with packed projections) plus low-rank adapters on q, k, v.

    Called as the layer it wraps is called by open_clip's blocks (``(query, key, value, need_weights=False,
    attn_mask=...)``, returning ``(output, None)``). The wrapped layer is the child ``base``; its weights are
    left as they are. ``lora_A`` (3, r, d) holds ``A_q, A_k, A_v``, ``lora_B`` (3, d, r) holds ``B_q, B_k, B_v``.
    """

    def __init__(
        self, base: nn.MultiheadAttention, rank: int, alpha: float, dropout: float,
        scaling_rule: str = SCALING_RULES[0], generator: torch.Generator | None = None,
    ) -> None:
        """``A`` is drawn as ``nn.Linear`` draws its weight (kaiming-uniform with a = sqrt(5), i.e.
        U(-1/sqrt(d), 1/sqrt(d))) from ``generator`` (a CPU generator), ``B`` is zero, so the wrapped layer
        starts out computing exactly what it computed before."""
        super().__init__()
        if not isinstance(base, nn.MultiheadAttention):
            raise LoRAError(f"LoRA wraps nn.MultiheadAttention layers; got a {type(base).__name__}")
        if base.in_proj_weight is None or not base._qkv_same_embed_dim:
            raise LoRAError("LoRA needs the packed in_proj_weight of a self-attention layer (kdim = vdim = embed_dim)")
        if base.bias_k is not None or base.add_zero_attn:
            raise LoRAError("LoRA does not support attention layers with bias_k/bias_v or add_zero_attn")
        if rank < 1:
            raise LoRAError(f"the LoRA rank must be at least 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise LoRAError(f"the LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.scaling = lora_scaling(alpha, rank, scaling_rule)
        width = base.embed_dim
        weight = base.in_proj_weight
        bound = 1.0 / math.sqrt(width)
        a = torch.empty(3, rank, width).uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(3, width, rank, device=weight.device, dtype=weight.dtype))
        self.dropout_generator: torch.Generator | None = None
        """Where the dropout masks are drawn from (a generator on the layer's device); None: torch's own."""
        self.train(base.training)  # a layer wrapped in an evaluating model evaluates too

    @property
    def width(self) -> int:
        return int(self.base.embed_dim)

    def delta_weight(self) -> Tensor:
        """``s * [B_q A_q; B_k A_k; B_v A_v]`` (3d, d): what the adapters add to ``in_proj_weight``."""
        return self.scaling * torch.cat([self.lora_B[i] @ self.lora_A[i] for i in range(3)])

    def merged_weight(self) -> Tensor:
        """``in_proj_weight + delta_weight()``: the weight of a plain layer computing what this one computes
        without dropout."""
        return self.base.in_proj_weight + self.delta_weight()

    def _dropped(self, x: Tensor) -> Tensor:
        if not self.training or self.dropout == 0.0:
            return x
        if self.dropout_generator is None:
            return F.dropout(x, self.dropout, training=True)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.dropout, generator=self.dropout_generator)
        return x * keep / (1.0 - self.dropout)

    def _project(self, x: Tensor, third: int) -> Tensor:
        base, width = self.base, self.width
        rows = slice(third * width, (third + 1) * width)
        bias = base.in_proj_bias[rows] if base.in_proj_bias is not None else None
        plain = F.linear(x, base.in_proj_weight[rows], bias)
        low_rank = F.linear(F.linear(self._dropped(x), self.lora_A[third]), self.lora_B[third])
        return plain + self.scaling * low_rank

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        need_weights: bool = False, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, None]:
        """The attention output (same layout as the inputs: ``batch_first`` or not, as the wrapped layer) and
        None in place of attention weights. ``attn_mask`` is read as ``nn.MultiheadAttention`` reads it: (L, S)
        or (batch * heads, L, S), True or -inf where a position may not attend."""
        if key_padding_mask is not None or need_weights:
            raise LoRAError("LoRAAttention takes no key_padding_mask and returns no attention weights")
        base = self.base
        if not base.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = (self._project(t, i) for i, t in enumerate((query, key, value)))
        batch, length, width = q.shape
        source, heads = k.shape[1], base.num_heads
        head_width = width // heads
        q, k, v = (t.reshape(batch, -1, heads, head_width).transpose(1, 2) for t in (q, k, v))
        mask = _additive_mask(attn_mask, batch, heads, length, source, q.dtype)
        # The attention dropout of the wrapped layer (0 in every open_clip model) draws from torch's generator.
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=base.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        out = F.linear(out.transpose(1, 2).reshape(batch, length, width), base.out_proj.weight, base.out_proj.bias)
        if not base.batch_first:
            out = out.transpose(0, 1)
        return out, None

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:.4g}, dropout={self.dropout}"


def attention_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The residual attention blocks of both towers of an open_clip CLIP model, by name: ``text.<i>`` for the
    text transformer's blocks, then ``visual.<i>`` for the image transformer's, each in layer order.

    Raises LoRAError when a tower is not an open_clip transformer (a ResNet or timm image tower, a Hugging
    Face text tower) or its blocks do not use ``nn.MultiheadAttention``.
    """
    if isinstance(model, open_clip.CLIP):
        text = model.transformer
    elif isinstance(getattr(model, "text", None), TextTransformer):
        text = model.text.transformer
    else:
        raise LoRAError(f"the text tower of this {type(model).__name__} is not open_clip's transformer; "
                        "LoRA on q, k, v needs open_clip's own text transformer")
    visual = getattr(getattr(model, "visual", None), "transformer", None)
    if visual is None or not hasattr(visual, "resblocks"):
        raise LoRAError(f"the image tower of this {type(model).__name__} is not open_clip's VisionTransformer "
                        "(a ResNet or timm tower); LoRA on q, k, v needs a ViT tower")
    blocks = {f"text.{i}": b for i, b in enumerate(text.resblocks)}
    blocks.update({f"visual.{i}": b for i, b in enumerate(visual.resblocks)})
    for name, block in blocks.items():
        if not isinstance(getattr(block, "attn", None), (nn.MultiheadAttention, LoRAAttention)):
            raise LoRAError(f"block {name} computes attention with a {type(getattr(block, 'attn', None)).__name__}, "
                            "not nn.MultiheadAttention (a custom block type); LoRA cannot wrap it")
    return blocks


def lora_layers(model: nn.Module) -> dict[str, LoRAAttention]:
    """The adapters currently on ``model``, by block name (empty when none are)."""
    return {name: b.attn for name, b in attention_blocks(model).items() if isinstance(b.attn, LoRAAttention)}


def apply_lora(
    model: nn.Module, rank: int, alpha: float, dropout: float, scaling_rule: str = SCALING_RULES[0],
    seed_generator: torch.Generator | None = None,
) -> dict[str, LoRAAttention]:
    """Wrap the attention of every block of both towers in a :class:`LoRAAttention`, in the order of
    :func:`attention_blocks`, drawing each ``A`` from ``seed_generator`` in that order. The model's own
    parameters keep their ``requires_grad`` (freeze them to train the adapters alone). Returns the adapters by
    block name.

    Raises LoRAError when the model already carries adapters.
    """
    blocks = attention_blocks(model)
    if any(isinstance(b.attn, LoRAAttention) for b in blocks.values()):
        raise LoRAError("this model already carries LoRA adapters; merge or remove them first")
    layers = {}
    for name, block in blocks.items():
        layers[name] = LoRAAttention(block.attn, rank, alpha, dropout, scaling_rule, seed_generator)
        block.attn = layers[name]
    return layers


def merge_lora(model: nn.Module) -> dict[str, LoRAAttention]:
    """Write ``W + s B A`` into each wrapped layer's ``in_proj_weight`` and put the plain layer back, so that
    ``model`` is again a plain open_clip model (its state dict has open_clip's keys) computing what the adapted
    one computed in evaluation. Returns the adapters that were merged (their ``A`` and ``B`` are kept)."""
    layers = lora_layers(model)
    blocks = attention_blocks(model)
    with torch.no_grad():
        for name, layer in layers.items():
            layer.base.in_proj_weight.copy_(layer.merged_weight())
            blocks[name].attn = layer.base
    return layers


def remove_lora(model: nn.Module) -> dict[str, LoRAAttention]:
    """Put every wrapped layer back unchanged (the adapters are dropped, not merged); returns them."""
    layers = lora_layers(model)
    blocks = attention_blocks(model)
    for name, layer in layers.items():
        blocks[name].attn = layer.base
    return layers


def set_dropout_generator(layers: Mapping[str, LoRAAttention], generator: torch.Generator | None) -> None:
    """Draw every adapter's dropout masks from ``generator`` (on the adapters' device) from now on."""
    for layer in layers.values():
        layer.dropout_generator = generator


def lora_parameters(layers: Mapping[str, LoRAAttention]) -> dict[str, nn.Parameter]:
    """The trainable tensors by name: ``<block>.A`` (3, r, d) and ``<block>.B`` (3, d, r) of each adapter."""
    found = {}
    for name, layer in layers.items():
        found[f"{name}.A"] = layer.lora_A
        found[f"{name}.B"] = layer.lora_B
    return found


def lora_state(layers: Mapping[str, LoRAAttention]) -> dict[str, Tensor]:
    """The adapters' ``A`` and ``B`` (named as :func:`lora_parameters`), detached copies on the CPU."""
    return {name: p.detach().to("cpu", copy=True) for name, p in lora_parameters(layers).items()}


def load_lora_state(layers: Mapping[str, LoRAAttention], state: Mapping[str, Tensor]) -> None:
    """Set the adapters' ``A`` and ``B`` from a :func:`lora_state` of adapters of the same shapes."""
    parameters = lora_parameters(layers)
    if set(state) != set(parameters):
        missing, extra = sorted(set(parameters) - set(state)), sorted(set(state) - set(parameters))
        raise LoRAError(f"the LoRA state does not fit these adapters: missing {missing[:4]}, unexpected {extra[:4]}")
    with torch.no_grad():
        for name, parameter in parameters.items():
            if tuple(state[name].shape) != tuple(parameter.shape):
                raise LoRAError(f"LoRA tensor {name}: expected shape {tuple(parameter.shape)}, "
                                f"found {tuple(state[name].shape)}")
            parameter.copy_(state[name].to(device=parameter.device, dtype=parameter.dtype))


def lora_parameter_count(layers: Mapping[str, LoRAAttention]) -> int:
    """CLIP-LoRA's count of trainable parameters: ``3 * 2 * r * d`` per adapted layer (one (r, d) and one
    (d, r) matrix for each of q, k, v), summed over the layers of both towers, each with its own width d."""
    return sum(3 * 2 * layer.rank * layer.width for layer in layers.values())
