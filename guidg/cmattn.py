"""CMAttn: cross-modal attention that weighs the prompt experts for each image.

Each of H heads maps an image feature to a query and pools each expert's class text features into one key;
the head scores the experts by the cosine of query and key, softmax over experts, and the weights are the
mean of the heads. Routing decides whether a batch shares one weight vector (``batch``) or every image keeps
its own (``sample``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from imagenet_dg.errors import ImageNetDGError

ROUTING_MODES = ("batch", "sample")
"""``batch``: one weight vector per batch, the batch mean of the per-image weights (the reference code, in
training and evaluation). ``sample``: each image its own weights (the paper's equation)."""

_COSINE_EPS = 1e-8
"""Smallest norm a query or key is divided by, so that a zero vector gives cosine 0, not NaN."""

_CLASS_POOLING_NOISE = 0.02
"""Relative spread of the initial class pooling around uniform, so the heads start apart."""


class CMAttnInputError(ImageNetDGError, ValueError):
    """CMAttn was built with, or given, tensors of a shape it does not accept."""


class CMAttn(nn.Module):
    """Weights over ``num_experts`` prompt experts, from image features and the experts' text features.

    Head h scores expert i with ``cos(q_h(f), k_{h,i})`` where ``q_h(f) = W_h f + b_h`` (a D x D affine map)
    and ``k_{h,i} = T_i^T a_h + c_h`` pools the C class text features of expert i (``T_i``, C x D) with a
    learned class weighting ``a_h`` (length C, so the class set is fixed) plus a learned offset ``c_h``.
    A softmax over experts turns each head's scores into weights; the output is the mean over heads, so
    every row sums to 1. There is no temperature.

    Image features and expert text features are detached inside :meth:`forward`: CMAttn never sends
    gradient into the image encoder or the experts; it learns only through the weights it outputs.

    Initialisation: ``W_h`` and ``b_h`` as :class:`torch.nn.Linear` initialises them (uniform in
    ``+-1/sqrt(D)``); ``a_h = (1 + 0.02 * n) / C`` with ``n`` standard normal, i.e. near-uniform class
    pooling so a key starts as (about) the mean class feature of its expert; ``c_h = 0``. Random draws use
    torch's global generator, so ``torch.manual_seed`` before construction makes it reproducible.

    Parameters (for inspection or loading): ``query_weight`` (H, D, D), ``query_bias`` (H, D),
    ``class_pooling`` (H, C), ``key_bias`` (H, D).
    """

    def __init__(
        self, dim: int, num_classes: int, num_experts: int, heads: int = 4, routing: str = "batch"
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("num_classes", num_classes),
            ("num_experts", num_experts),
            ("heads", heads),
        ):
            if value < 1:
                raise CMAttnInputError(f"CMAttn needs {name} >= 1; got {value}")
        if routing not in ROUTING_MODES:
            raise CMAttnInputError(
                f"unknown CMAttn routing {routing!r}; expected one of {', '.join(ROUTING_MODES)}"
            )
        self.dim = dim
        self.num_classes = num_classes
        self.num_experts = num_experts
        self.heads = heads
        self.routing = routing
        self.query_weight = nn.Parameter(torch.empty(heads, dim, dim))
        self.query_bias = nn.Parameter(torch.empty(heads, dim))
        self.class_pooling = nn.Parameter(torch.empty(heads, num_classes))
        self.key_bias = nn.Parameter(torch.empty(heads, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the initial parameters described in the class docstring."""
        bound = 1.0 / math.sqrt(self.dim)
        with torch.no_grad():
            self.query_weight.uniform_(-bound, bound)
            self.query_bias.uniform_(-bound, bound)
            self.class_pooling.normal_(0.0, _CLASS_POOLING_NOISE).add_(1.0).div_(self.num_classes)
            self.key_bias.zero_()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_classes={self.num_classes}, num_experts={self.num_experts}, "
            f"heads={self.heads}, routing={self.routing!r}"
        )

    def per_sample_weights(self, features: Tensor, experts: Tensor) -> Tensor:
        """Each image's own expert weights, shape (B, d), rows summing to 1 (before any batch averaging).

        ``features`` is (B, D) image features (normalised by the caller); ``experts`` is (d, C, D), the
        experts' class text features. Both are detached here.
        """
        self._check_inputs(features, experts)
        dtype = self.query_weight.dtype
        f = features.detach().to(dtype)
        text = experts.detach().to(dtype)
        queries = torch.einsum("hoi,bi->hbo", self.query_weight, f) + self.query_bias[:, None, :]
        keys = torch.einsum("hc,ecd->hed", self.class_pooling, text) + self.key_bias[:, None, :]
        queries = queries / queries.norm(dim=-1, keepdim=True).clamp_min(_COSINE_EPS)
        keys = keys / keys.norm(dim=-1, keepdim=True).clamp_min(_COSINE_EPS)
        cosines = torch.einsum("hbd,hed->hbe", queries, keys)
        return cosines.softmax(dim=-1).mean(dim=0)

    def forward(self, features: Tensor, experts: Tensor) -> Tensor:
        """Expert weights for the batch, shape (B, d), rows summing to 1.

        With routing ``batch`` every row is the batch mean of :meth:`per_sample_weights` (so an image's
        weights depend on its batch-mates); with ``sample`` each row is that image's own weights.
        """
        weights = self.per_sample_weights(features, experts)
        if self.routing == "batch":
            return weights.mean(dim=0, keepdim=True).expand_as(weights)
        return weights

    def _check_inputs(self, features: Tensor, experts: Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.dim or features.shape[0] == 0:
            raise CMAttnInputError(
                f"CMAttn expected image features of shape (B >= 1, {self.dim}); got {tuple(features.shape)}"
            )
        expected = (self.num_experts, self.num_classes, self.dim)
        if tuple(experts.shape) != expected:
            raise CMAttnInputError(
                f"CMAttn expected expert text features of shape (experts, classes, dim) = {expected}; "
                f"got {tuple(experts.shape)}. The number of experts and classes is fixed when CMAttn is "
                "built: build a new one for another task."
            )
