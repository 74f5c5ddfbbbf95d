"""CoOp prompt learning: context vectors shared by all classes, fed through the frozen CLIP text tower
(``docs/methods.md``, "CoOp").

The prompt of class c is ``[SOS] c_1 .. c_M <name tokens> . [EOS]`` (class position ``end``), or with the name
between the two halves of the context (``middle``) or before it (``front``). Only the M context vectors are
learnable. Every prompt is cut after the longest prompt's pooled (EOS) position: the text transformer is causal,
so the padding after it cannot change the features.

How the text tower runs the C prompts (:data:`TEXT_ENCODINGS`) changes only the cost, never the function:
``full`` (all 77 positions, as the reference code does), ``cut`` (after the longest EOS), ``shared-prefix``
(the class-independent prefix once, then each class grouped by its own length: fewest operations, fastest on a
CPU) and ``shared-prefix-padded`` (the prefix once, then all classes in one padded pass: fewer, larger
operations). :func:`choose_text_encoding` picks one per device, by rule on a CPU, by a quick measurement on a
GPU, and says how it chose.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from guidg.backbone import TextEncoder
from guidg.shared_prefix import encode_shared_prefix, length_groups, supports_shared_prefix
from imagenet_dg.errors import ImageNetDGError

CLASS_POSITIONS = ("end", "middle", "front")
"""Where the class name sits relative to the context vectors."""

CONTEXT_INIT_STD = 0.02
"""Standard deviation of the random context initialisation."""

TEXT_ENCODINGS = ("full", "cut", "shared-prefix", "shared-prefix-padded")
"""Ways of running the prompts through the text tower; all compute the same features."""

SHARED_ENCODINGS = ("shared-prefix", "shared-prefix-padded")

DEVICE_RULES = {"cpu": "shared-prefix"}
"""Text encoding by device type where a rule decides (measured on a 2-core CPU: 26x the plain loop at C = 200)."""

MEASURED_CANDIDATES = ("cut", "shared-prefix", "shared-prefix-padded")
"""Encodings timed where no rule decides (on a GPU the grouped passes' many small kernels can lose to one
large one, and the plain cut can win outright)."""

PLACEHOLDER_WORD = "X"
"""Word whose token id stands at random-initialised context positions of ``token_ids`` (as in CoOp)."""


class PromptError(ImageNetDGError):
    """A prompt learner was asked for something it cannot build."""


def _encoder(tokenizer: object) -> tuple[Callable[[str], list[int]], int, int]:
    encode = getattr(tokenizer, "encode", None)
    sot = getattr(tokenizer, "sot_token_id", None)
    eot = getattr(tokenizer, "eot_token_id", None)
    if not callable(encode) or not isinstance(sot, int) or not isinstance(eot, int):
        raise PromptError(
            f"prompt learning needs a tokenizer with encode(text) -> ids, sot_token_id and eot_token_id "
            f"(open_clip's SimpleTokenizer); got a {type(tokenizer).__name__}"
        )
    return encode, sot, eot


def _layout(
    position: str, sot: int, context: list[int], name: list[int], period: list[int], named_period: list[int], eot: int
) -> tuple[list[int], list[int]]:
    """Token ids of one prompt and the indices in it that hold context vectors.

    ``named_period`` is the name and the period tokenized together, as they are in a plain prompt text.
    """
    m = len(context)
    if position == "end":
        ids = [sot, *context, *named_period, eot]
        slots = list(range(1, 1 + m))
    elif position == "middle":
        half = m // 2
        ids = [sot, *context[:half], *name, *context[half:], *period, eot]
        slots = list(range(1, 1 + half)) + list(range(1 + half + len(name), 1 + m + len(name)))
    else:
        ids = [sot, *name, *context, *period, eot]
        slots = list(range(1 + len(name), 1 + len(name) + m))
    return ids, slots


class PromptLearner(nn.Module):
    """M learnable context vectors, shared by all classes, and the text features of every class prompt.

    The learner's only parameter is ``ctx`` (M, width), fp32. The text encoder is referenced, not owned: it is
    frozen here (``requires_grad`` is switched off on the text tower's parameters, and only those), stays on its
    own device, and is not part of this module's parameters or state dict.
    """

    def __init__(
        self,
        text: TextEncoder,
        tokenizer: object,
        class_names: Sequence[str],
        n_ctx: int = 16,
        init: str | None = None,
        class_position: str = "end",
        generator: torch.Generator | None = None,
        share_prefix: bool = True,
        text_encoding: str | None = None,
    ) -> None:
        """Build prompts for ``class_names``.

        The context is drawn from N(0, 0.02^2) with ``generator`` (a CPU generator), or, when ``init`` is given,
        set to the token embeddings of the words of ``init`` (then M is their number of tokens and ``n_ctx``
        is not used). ``text_encoding`` is one of :data:`TEXT_ENCODINGS`; by default ``shared-prefix`` when
        ``share_prefix`` else ``cut``. A shared encoding on prompts that cannot share a prefix (class name not
        at the end, or a non-standard text tower) runs ``cut``; :attr:`text_encoding` says what runs.
        """
        super().__init__()
        if class_position not in CLASS_POSITIONS:
            raise PromptError(f"class_position must be one of {', '.join(CLASS_POSITIONS)}, got {class_position!r}")
        if len(class_names) == 0:
            raise PromptError("a prompt learner needs at least one class name, got none")
        encode, sot, eot = _encoder(tokenizer)
        if init is not None:
            context_ids = encode(init)
            if not context_ids:
                raise PromptError(f"init={init!r} has no tokens; give words such as 'a photo of a', or None")
        else:
            if n_ctx < 1:
                raise PromptError(f"n_ctx must be at least 1, got {n_ctx}")
            placeholder = encode(PLACEHOLDER_WORD)
            context_ids = placeholder[:1] * n_ctx

        period = encode(".")
        rows: list[list[int]] = []
        slots: list[list[int]] = []
        for name in class_names:
            name_ids = encode(name)
            if not name_ids:
                raise PromptError(f"class name {name!r} has no tokens; every class needs a readable name")
            # The name and the period are tokenized together when adjacent, exactly as in the plain prompt text.
            ids, ctx_slots = _layout(class_position, sot, context_ids, name_ids, period, encode(f"{name}."), eot)
            if len(ids) > text.context_length:
                raise PromptError(
                    f"the prompt of class {name!r} has {len(ids)} tokens with {len(context_ids)} context vectors; "
                    f"the text tower takes at most {text.context_length}: shorten the name or use fewer vectors"
                )
            rows.append(ids)
            slots.append(ctx_slots)

        device = text.token_embedding.weight.device
        full = torch.zeros(len(rows), text.context_length, dtype=torch.long)
        for row, ids in enumerate(rows):
            full[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        eos_positions = text.pool_positions(full)
        if text.pool_type != "last":
            written = torch.tensor([len(ids) - 1 for ids in rows])
            if not torch.equal(eos_positions, written):
                raise PromptError(
                    f"the text tower pools ({text.pool_type!r}) at positions other than the tokenizer's end token "
                    f"(id {eot}); the tokenizer does not belong to this model"
                )
        self.cut_length: int = int(eos_positions.max()) + 1
        self.n_ctx: int = len(context_ids)
        self.class_position = class_position
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.init = init
        self.share_prefix = share_prefix
        self._full_ids = full

        token_ids = full[:, : self.cut_length].to(device)
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("eos_positions", eos_positions.to(device), persistent=False)
        self.register_buffer("ctx_positions", torch.tensor(slots, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("class_index", torch.arange(len(rows), device=device), persistent=False)
        with torch.no_grad():
            # Embeddings of everything but the context (SOS, name, period, EOS, padding); the context rows of
            # this buffer are replaced by ``ctx`` in every forward.
            self.register_buffer("token_embeddings", text.embed_tokens(token_ids).float(), persistent=False)
            if init is not None:
                ctx = text.embed_tokens(torch.tensor(context_ids, device=device)).float().clone()
            else:
                ctx = torch.empty(self.n_ctx, text.width).normal_(0.0, CONTEXT_INIT_STD, generator=generator)
        self.ctx = nn.Parameter(ctx.to(device=device, dtype=torch.float32))
        text.requires_grad_(False)
        object.__setattr__(self, "_text", text)
        self._groups: dict[bool, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        self._requested = text_encoding or ("shared-prefix" if share_prefix else "cut")
        self.set_text_encoding(self._requested)

    def set_text_encoding(self, name: str) -> None:
        """Run the prompts with encoding ``name`` from now on (the features stay the same up to rounding)."""
        if name not in TEXT_ENCODINGS:
            raise PromptError(f"text_encoding must be one of {', '.join(TEXT_ENCODINGS)}, got {name!r}")
        self._requested = name
        if name == "full" and "padding_embeddings" not in self._buffers:
            with torch.no_grad():
                # Token id 0 fills a tokenized prompt after its EOS: the positions the cut leaves out.
                padding = self._full_ids[:, self.cut_length :].to(self.token_embeddings.device)
                self.register_buffer("padding_embeddings", self.text.embed_tokens(padding).float(), persistent=False)

    @property
    def text_encoding(self) -> str:
        """The encoding :meth:`forward` runs (a shared one only where the prompts can share a prefix)."""
        if self._requested in SHARED_ENCODINGS and not self._can_share:
            return "cut"
        return self._requested

    @property
    def _can_share(self) -> bool:
        return self.class_position == "end" and supports_shared_prefix(self.text)

    @property
    def text(self) -> TextEncoder:
        """The frozen text encoder the prompts run through."""
        return self._text

    @property
    def n_trainable(self) -> int:
        """Number of trainable scalars: M x width."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def prompt_embeddings(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (C, cut_length, width) of all class prompts with the current context in place.

        ``ctx`` (M, width) puts that context in place instead; one context per image, (B, M, width), gives the
        prompts of every class for each image, (B, C, cut_length, width).
        """
        ctx = self.ctx if ctx is None else ctx
        classes, slots = self.ctx_positions.shape
        rows = self.class_index[:, None].expand(classes, slots)
        if ctx.dim() == 2:
            values = ctx.to(self.token_embeddings.dtype).unsqueeze(0).expand(classes, -1, -1)
            return self.token_embeddings.index_put((rows, self.ctx_positions), values)
        images = ctx.shape[0]
        base = self.token_embeddings.unsqueeze(0).expand(images, -1, -1, -1).contiguous()
        image = torch.arange(images, device=base.device)[:, None, None]
        values = ctx.to(base.dtype).unsqueeze(1).expand(images, classes, -1, -1)
        return base.index_put((image, rows, self.ctx_positions), values)

    @property
    def shares_prefix(self) -> bool:
        """Whether :meth:`forward` runs the class-independent prefix ([SOS] and the context) only once."""
        return self.text_encoding in SHARED_ENCODINGS

    def forward(self) -> torch.Tensor:
        """L2-normalised text features (C, embed_dim), float32, of all classes at once; differentiable in ctx."""
        encoding = self.text_encoding
        if encoding in SHARED_ENCODINGS:
            start = 1 + self.n_ctx
            padded = encoding == "shared-prefix-padded"
            if padded not in self._groups:
                self._groups[padded] = length_groups(self.eos_positions, start, padded)
            prefix = torch.cat([self.token_embeddings[0, :1], self.ctx.to(self.token_embeddings.dtype)])
            suffix = self.token_embeddings[:, start:]
            features = encode_shared_prefix(self.text, prefix, suffix, self.eos_positions, self._groups[padded])
        elif encoding == "full":
            embeddings = torch.cat([self.prompt_embeddings(), self.padding_embeddings], dim=1)
            features = self.text(embeddings, self.eos_positions)
        else:
            features = self.text(self.prompt_embeddings(), self.eos_positions)
        return F.normalize(features, dim=-1)

    def context_state(self) -> dict[str, torch.Tensor]:
        """What a saved expert needs besides the backbone and class names: the context vectors, on CPU."""
        return {"ctx": self.ctx.detach().cpu().clone()}

    def load_context_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Set the context vectors from a :meth:`context_state` of a learner with the same M and width."""
        if set(state) != {"ctx"} or tuple(state["ctx"].shape) != tuple(self.ctx.shape):
            found = {key: tuple(value.shape) for key, value in state.items()}
            raise PromptError(f"expected a context state {{'ctx': {tuple(self.ctx.shape)}}}, found {found}")
        with torch.no_grad():
            self.ctx.copy_(state["ctx"].to(device=self.ctx.device, dtype=self.ctx.dtype))


def time_text_encoding(
    learner: PromptLearner, name: str, repeats: int = 3, autocast: Callable[[], Any] | None = None
) -> float:
    """Median seconds of one forward and backward pass of ``learner`` with encoding ``name`` (after one
    untimed pass), waiting for the device; the learner's encoding and gradients are restored afterwards.
    ``autocast`` makes the context the passes run in (the backbone's ``autocast``)."""
    previous = learner._requested
    learner.set_text_encoding(name)
    device = learner.ctx.device
    times = []
    try:
        for index in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with autocast() if autocast is not None else contextlib.nullcontext():
                features = learner()
            features.float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index > 0:
                times.append(time.perf_counter() - start)
    finally:
        learner.ctx.grad = None
        learner.set_text_encoding(previous)
    return sorted(times)[len(times) // 2]


def choose_text_encoding(
    learner: PromptLearner, share_prefix: bool = True, autocast: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Set ``learner``'s text encoding to the fastest for its device and say how it was chosen.

    Without ``share_prefix`` the encoding is ``cut`` (the prompts never share a prefix). Where
    :data:`DEVICE_RULES` has the device type, its rule decides (so CPU results repeat exactly); elsewhere each
    of :data:`MEASURED_CANDIDATES` is timed (:func:`time_text_encoding`) and the fastest kept. The returned
    record (``text_encoding``, ``chosen_by``, ``seconds`` when measured) goes into the method's record.
    """
    device = learner.ctx.device.type
    if not share_prefix or not learner._can_share:
        learner.set_text_encoding("cut")
        why = "share_prefix off" if not share_prefix else "prompts cannot share a prefix"
        return {"text_encoding": "cut", "chosen_by": f"rule ({why})"}
    if device in DEVICE_RULES:
        learner.set_text_encoding(DEVICE_RULES[device])
        return {"text_encoding": learner.text_encoding, "chosen_by": f"rule ({device})"}
    seconds = {name: time_text_encoding(learner, name, autocast=autocast) for name in MEASURED_CANDIDATES}
    best = min(seconds, key=seconds.__getitem__)
    learner.set_text_encoding(best)
    return {"text_encoding": best, "chosen_by": f"measured ({device})", "seconds": seconds}
