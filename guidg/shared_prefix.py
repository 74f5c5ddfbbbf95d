"""The text tower on prompts that share a prefix, computing the prefix once.

CoOp prompts with the class name at the end read ``[SOS] c_1 .. c_M <name> . [EOS]``: the first M + 1
positions are the same for every class. The text transformer is causal, so the hidden states of those
positions are the same for every class too. This module runs them once (batch 1) and runs only the
class-specific positions for the C classes, attending to the shared prefix's keys and values. Several
prefixes (CoCoOp's contexts, one per image) run as one batch, each followed by every class. Classes are
grouped by the length of their own part, so no position after a class's EOS is computed either; or, where
few large operations beat fewer small ones (a GPU), all run in one pass padded to the longest own part. The result
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


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, W) -> (B, H, L, W / H)."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, W / H) -> (B, L, W)."""
    batch, heads, length, head_width = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_width)


def _feed_forward(block: ResidualAttentionBlock, x: Tensor, attended: Tensor) -> Tensor:
    attn: nn.MultiheadAttention = block.attn  # type: ignore[assignment]
    x = x + block.ls_1(attn.out_proj(_merge_heads(attended)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _prefix_pass(text: TextEncoder, prefix: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Run the prefixes (G, P, W) through every block; the keys and values (G, H, P, W / H) of each block."""
    cache = []
    x = prefix
    for block in text.transformer.resblocks:
        attn: nn.MultiheadAttention = block.attn  # type: ignore[assignment]
        q, k, v = (_split_heads(t, attn.num_heads) for t in F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
        cache.append((k, v))
        x = _feed_forward(block, x, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    return cache


def _suffix_pass(text: TextEncoder, suffix: Tensor, cache: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Run class-specific positions (G * C, S, W) through every block, rows g * C .. (g + 1) * C - 1 attending
    to cached prefix g."""
    rows, length, _ = suffix.shape
    prefixes = cache[0][0].shape[0]
    classes = rows // prefixes
    causal = torch.ones(length, length, dtype=torch.bool, device=suffix.device).tril()
    x = suffix
    for block, (k_p, v_p) in zip(text.transformer.resblocks, cache):
        attn: nn.MultiheadAttention = block.attn  # type: ignore[assignment]
        heads = attn.num_heads
        q, k, v = (_split_heads(t, heads) for t in F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
        scale = q.shape[-1] ** -0.5
        # Scores against each shared prefix as one matrix product per prefix and head: the prefix keys are
        # never copied per class.
        q_rows = q.view(prefixes, classes, heads, length, -1).transpose(1, 2)
        to_prefix = q_rows.reshape(prefixes, heads, classes * length, -1) @ k_p.transpose(-1, -2)
        to_prefix = to_prefix.view(prefixes, heads, classes, length, -1).transpose(1, 2)
        to_prefix = to_prefix.reshape(rows, heads, length, -1) * scale
        to_own = (q @ k.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf"))
        weights = torch.cat([to_prefix, to_own], dim=-1).softmax(dim=-1)
        p_len = k_p.shape[2]
        w_rows = weights[..., :p_len].view(prefixes, classes, heads, length, p_len).transpose(1, 2)
        from_prefix = w_rows.reshape(prefixes, heads, classes * length, p_len) @ v_p
        from_prefix = from_prefix.view(prefixes, heads, classes, length, -1).transpose(1, 2)
        attended = from_prefix.reshape(rows, heads, length, -1) + weights[..., p_len:] @ v
        x = _feed_forward(block, x, attended)
    return x


def length_groups(pool_positions: Tensor, prefix_length: int, padded: bool) -> list[tuple[int, Tensor, Tensor]]:
    """How :func:`encode_shared_prefix` batches the classes: (length, rows, last) per group.

    Grouped (``padded`` False): classes of equal own length together, so no position after a class's EOS is
    computed (fewest operations: what a CPU wants). Padded: one group of all classes, each run to the longest
    own length and read at its own EOS (``last``), which the causal mask keeps exact: one pass of large
    operations (what a GPU wants). Computed once per prompt set, so a forward pass never waits on the host.
    """
    own = (pool_positions.cpu() - prefix_length + 1).tolist()
    device = pool_positions.device
    if padded:
        rows = torch.arange(len(own), device=device)
        return [(max(own), rows, torch.tensor([n - 1 for n in own], device=device))]
    groups = []
    for length in sorted(set(own)):
        rows = torch.tensor([i for i, n in enumerate(own) if n == length], device=device)
        groups.append((length, rows, torch.full((len(rows),), length - 1, device=device)))
    return groups


def encode_shared_prefix(
    text: TextEncoder,
    prefix: Tensor,
    suffix: Tensor,
    pool_positions: Tensor,
    groups: list[tuple[int, Tensor, Tensor]] | None = None,
) -> Tensor:
    """Unnormalised text features (C, embed_dim), float32, of the prompts ``prefix + suffix[c]``.

    ``prefix`` is (P, width) token embeddings shared by all prompts, ``suffix`` (C, S, width) the rest of each
    prompt, ``pool_positions`` (C,) the pooled (EOS) position of each prompt, counted from the start of the
    prompt, all at or after P. Equal to ``text(cat(prefix, suffix[c]), pool_positions)`` for every c.
    ``groups`` (from :func:`length_groups`) says how classes are batched; by default, grouped by length.

    A batch of prefixes (G, P, width) gives (G, C, embed_dim): row g holds the prompts ``prefix[g] +
    suffix[c]`` (each prefix runs once, and every class after each of them; CoCoOp's per-image contexts).
    """
    batched = prefix.dim() == 3
    prefixes = prefix if batched else prefix[None]
    count, p_len, s_len = prefixes.shape[0], prefixes.shape[1], suffix.shape[1]
    cast = text.transformer.get_cast_dtype()
    positional = text.positional_embedding.to(cast)
    cache = _prefix_pass(text, prefixes.to(cast) + positional[:p_len])
    x_s = suffix.to(cast) + positional[p_len : p_len + s_len]
    width = x_s.shape[-1]

    def after_each_prefix(rows: Tensor) -> Tensor:
        # (n, L, W) -> (count * n, L, W): the same class positions behind every prefix.
        return rows.expand(count, *rows.shape).reshape(-1, *rows.shape[1:])

    if groups is None:
        groups = length_groups(pool_positions.to(suffix.device), p_len, padded=False)
    if len(groups) == 1 and len(groups[0][1]) == x_s.shape[0]:
        length, _, last = groups[0]
        states = _suffix_pass(text, after_each_prefix(x_s[:, :length]), cache)
        pooled = states[torch.arange(states.shape[0], device=states.device), last.repeat(count)]
        pooled = pooled.view(count, -1, width)
    else:
        pooled = x_s.new_empty(count, x_s.shape[0], width)
        for length, rows, _ in groups:
            states = _suffix_pass(text, after_each_prefix(x_s[rows, :length]), cache)
            pooled = pooled.index_copy(1, rows, states[:, -1].view(count, -1, width))
    if not batched:
        pooled = pooled[0]
    pooled = text.ln_final(pooled)
    projection = text.text_projection
    if isinstance(projection, nn.Linear):
        pooled = projection(pooled)
    elif projection is not None:
        pooled = pooled @ projection
    return pooled.float()
