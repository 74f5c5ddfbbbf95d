"""The text tower on prompts that share a prefix, computing the prefix once.

CoOp prompts with the class name at the end read ``[SOS] c_1 .. c_M <name> . [EOS]``: the first M + 1
positions are the same for every class. The text transformer is causal, so the hidden states of those
positions are the same for every class too. This module runs them once (batch 1) and runs only the
class-specific positions for the C classes, attending to the shared prefix's keys and values. The result
equals the full computation up to floating-point rounding, at a fraction of the cost when C is large.

It reimplements the forward pass of open_clip's standard pre-norm residual attention block from the block's
own weights; :func:`supports_shared_prefix` says whether a text tower is made of such blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import Tensor, nn

from guidg.backbone import TextEncoder


def _standard_block(block: nn.Module) -> bool:
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
        and attn.dropout == 0.0
    )


def supports_shared_prefix(text: TextEncoder) -> bool:
    """True when every block of the text transformer is a standard open_clip residual attention block."""
    blocks = getattr(text.transformer, "resblocks", None)
    return blocks is not None and len(blocks) > 0 and all(_standard_block(b) for b in blocks)


def _heads(x: Tensor, heads: int) -> Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    batch, heads, length, head_width = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_width)


def _block(block: ResidualAttentionBlock, prefix: Tensor, suffix: Tensor) -> tuple[Tensor, Tensor]:
    attn: nn.MultiheadAttention = block.attn  # type: ignore[assignment]
    heads = attn.num_heads
    classes, p_len, s_len = suffix.shape[0], prefix.shape[1], suffix.shape[1]
    q_p, k_p, v_p = F.linear(block.ln_1(prefix), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q_s, k_s, v_s = F.linear(block.ln_1(suffix), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q_p, k_p, v_p = (_heads(t, heads) for t in (q_p, k_p, v_p))
    q_s, k_s, v_s = (_heads(t, heads) for t in (q_s, k_s, v_s))
    out_p = F.scaled_dot_product_attention(q_p, k_p, v_p, is_causal=True)
    keys = torch.cat([k_p.expand(classes, -1, -1, -1), k_s], dim=2)
    values = torch.cat([v_p.expand(classes, -1, -1, -1), v_s], dim=2)
    # Suffix position j sees every prefix position and the suffix positions up to j.
    allowed = torch.ones(s_len, p_len + s_len, dtype=torch.bool, device=suffix.device)
    allowed[:, p_len:] = torch.ones(s_len, s_len, dtype=torch.bool, device=suffix.device).tril()
    out_s = F.scaled_dot_product_attention(q_s, keys, values, attn_mask=allowed)
    prefix = prefix + block.ls_1(attn.out_proj(_merge(out_p)))
    suffix = suffix + block.ls_1(attn.out_proj(_merge(out_s)))
    prefix = prefix + block.ls_2(block.mlp(block.ln_2(prefix)))
    suffix = suffix + block.ls_2(block.mlp(block.ln_2(suffix)))
    return prefix, suffix


def encode_shared_prefix(text: TextEncoder, prefix: Tensor, suffix: Tensor, pool_positions: Tensor) -> Tensor:
    """Unnormalised text features (C, embed_dim), float32, of the prompts ``prefix + suffix[c]``.

    ``prefix`` is (P, width) token embeddings shared by all prompts, ``suffix`` (C, S, width) the rest of each
    prompt, ``pool_positions`` (C,) the pooled (EOS) position of each prompt, counted from the start of the
    prompt, all at or after P. Equal to ``text(cat(prefix, suffix[c]), pool_positions)`` for every c.
    """
    p_len, s_len = prefix.shape[0], suffix.shape[1]
    cast = text.transformer.get_cast_dtype()
    positional = text.positional_embedding.to(cast)
    x_p = (prefix.to(cast) + positional[:p_len])[None]
    x_s = suffix.to(cast) + positional[p_len : p_len + s_len]
    for block in text.transformer.resblocks:
        x_p, x_s = _block(block, x_p, x_s)
    x_s = text.ln_final(x_s)
    rows = torch.arange(x_s.shape[0], device=x_s.device)
    pooled = x_s[rows, pool_positions.to(x_s.device) - p_len]
    projection = text.text_projection
    if isinstance(projection, nn.Linear):
        pooled = projection(pooled)
    elif projection is not None:
        pooled = pooled @ projection
    return pooled.float()
