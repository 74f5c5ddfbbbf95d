"""Seeds derived from names: every random draw of a run is a pure function of the run seed and its place.

Deriving seeds from (run seed, purpose, step, slot) rather than consuming one generator in sequence makes a
draw independent of everything drawn before it: a resumed run draws what an uninterrupted one would, and
the number of data-loading workers changes nothing.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed determined by ``parts`` (their ``str``), stable across processes and machines."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    """A CPU torch generator seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))
