"""Predictions against class text features: the predictor of zero-shot CLIP, CoOp, the fine-tuning bases and
GuiDG.

One head (a classifier ``T``, C x D) gives ``100 * f T^T``. Several heads (GuiDG's experts ``T_1 .. T_d``) are
weighed by CMAttn: ``sum_i w_i * 100 * f T_i^T`` (``docs/methods.md``, "CMAttn"). The image features ``f`` come
from the pretrained image encoder, or from the fine-tuned one the predictor carries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from guidg.backbone import Backbone
from guidg.checkpoints import CheckpointError, load_module_state
from guidg.cmattn import CMAttn
from guidg.divergence import check_finite_outputs
from guidg.losses import LOGIT_SCALE, ensemble_logits
from guidg.methods.interface import Predictor

HEADS = "heads"
CMATTN_PREFIX = "cmattn."
VISUAL_PREFIX = "visual."


@torch.no_grad()
def head_logits(features: Tensor, heads: Tensor, cmattn: CMAttn | None, batch_size: int) -> Tensor:
    """Logits (N, C) of features (N, D) against ``heads`` (d, C, D).

    One head: ``100 * f T^T``. Several heads with CMAttn: ``sum_i w_i * 100 * f T_i^T`` with the weights of
    CMAttn computed over consecutive batches of ``batch_size`` rows (with batch routing a row's weights depend
    on the other rows of its batch).
    """
    heads = heads.to(features.device)
    if cmattn is None:
        if heads.shape[0] != 1:
            raise ValueError("several heads need CMAttn to weigh them")
        return check_finite_outputs(LOGIT_SCALE * features @ heads[0].T, "logits")
    cmattn = cmattn.to(features.device).eval()
    chunks = []
    for start in range(0, len(features), batch_size):
        batch = features[start : start + batch_size]
        chunks.append(ensemble_logits(batch, heads, cmattn(batch, heads)))
    return check_finite_outputs(torch.cat(chunks) if chunks else features.new_zeros(0, heads.shape[1]), "logits")


@dataclass
class TextHeadPredictor(Predictor):
    """Class text features as heads, CMAttn when there are several, and optionally a fine-tuned image encoder."""

    heads: Tensor
    """(d, C, D) class text features: d = 1 except for GuiDG, where d is the number of experts."""
    eval_batch_size: int
    """The batches CMAttn's weights are computed over (with batch routing, predictions depend on them)."""
    cmattn: CMAttn | None = None
    visual_state: dict[str, Tensor] | None = None
    """Fine-tuned image-encoder weights; None when the pretrained encoder is used as it is."""
    n_trainable: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.heads = self.heads.detach().float().cpu()

    @property
    def changes_image_encoder(self) -> bool:  # type: ignore[override]
        return self.visual_state is not None

    def image_encoder(self, backbone: Backbone) -> Callable[[Tensor], Tensor]:
        """The backbone's encoder, holding the fine-tuned weights when there are any."""
        if self.visual_state is not None:
            load_module_state(backbone.model.visual, self.visual_state)
        return backbone.encode_images

    def logits(self, features: Tensor) -> Tensor:
        return head_logits(features, self.heads, self.cmattn, self.eval_batch_size)

    def state_dict(self) -> dict[str, Tensor]:
        """``heads``, ``cmattn.*`` and ``visual.*`` as contiguous CPU tensors."""
        state = {HEADS: self.heads.contiguous()}
        if self.cmattn is not None:
            state.update({CMATTN_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.cmattn.state_dict().items()})
        if self.visual_state is not None:
            state.update({VISUAL_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.visual_state.items()})
        return state

    @classmethod
    def from_state(
        cls, state: Mapping[str, Tensor], eval_batch_size: int, routing: str | None = None
    ) -> TextHeadPredictor:
        """The predictor of a :meth:`state_dict`; ``routing`` is CMAttn's when the state holds one."""
        if HEADS not in state:
            raise CheckpointError(f"not a text-head predictor's state: no {HEADS!r} among {sorted(state)[:5]}")
        heads = state[HEADS]
        cmattn_state = {k[len(CMATTN_PREFIX):]: v for k, v in state.items() if k.startswith(CMATTN_PREFIX)}
        visual = {k[len(VISUAL_PREFIX):]: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}
        cmattn = None
        if cmattn_state:
            if routing is None:
                raise CheckpointError("a predictor state with CMAttn needs its routing")
            query = cmattn_state["query_weight"]
            cmattn = CMAttn(heads.shape[-1], heads.shape[1], heads.shape[0], query.shape[0], routing)
            load_module_state(cmattn, cmattn_state)
        return cls(heads, eval_batch_size, cmattn, visual or None)
