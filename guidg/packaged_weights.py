"""The storage form of the weights shipped with the package: an open_clip state dict whose mostly-zero tables
keep only their non-zero rows.

The tiny CLIP pretrained on the miniature world uses 59 of the tokenizer's 49,408 tokens; the other rows of its
token table are zeros, and stored densely they would be 6.3 of the checkpoint's 6.8 MB. A packed file holds,
for such a table ``name``, ``name.present_rows`` (int64 row numbers) and ``name.rows`` (those rows), and says
which tables it packed in its metadata (:data:`PACKED_KEY`). :func:`unpack` gives back the dense state dict bit
for bit (the zero rows are exactly zero), which open_clip then loads as any checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

import torch
from safetensors import safe_open

PACKED_KEY = "packed_tables"
"""Metadata entry of a packed file: JSON of each table stored by its non-zero rows -> the table's shape."""
ROWS_SUFFIX = ".rows"
PRESENT_SUFFIX = ".present_rows"


def pack(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], tables: Iterable[str]
         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` with each of ``tables`` (2-D) replaced by its non-zero rows and their row numbers."""
    packed = dict(state)
    shapes = {}
    for name in tables:
        table = packed.pop(name)
        present = torch.nonzero(table.ne(0).any(dim=1)).flatten()
        packed[name + PRESENT_SUFFIX] = present.to(torch.int64).contiguous()
        packed[name + ROWS_SUFFIX] = table[present].contiguous()
        shapes[name] = list(table.shape)
    return packed, {**metadata, PACKED_KEY: json.dumps(shapes, sort_keys=True)}


def unpack(packed: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
           ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The dense state dict and metadata that :func:`pack` was given."""
    shapes = json.loads(metadata.get(PACKED_KEY, "{}"))
    parts = {name + suffix for name in shapes for suffix in (ROWS_SUFFIX, PRESENT_SUFFIX)}
    state = {k: v for k, v in packed.items() if k not in parts}
    for name, shape in shapes.items():
        rows = packed[name + ROWS_SUFFIX]
        table = torch.zeros(shape, dtype=rows.dtype)
        table[packed[name + PRESENT_SUFFIX]] = rows
        state[name] = table
    return state, {k: v for k, v in metadata.items() if k != PACKED_KEY}


def read_packed(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The dense state dict and metadata of the packed (or plain) safetensors file at ``path``."""
    with safe_open(str(path), framework="pt") as stored:
        packed = {k: stored.get_tensor(k) for k in stored.keys()}
        metadata = dict(stored.metadata() or {})
    return unpack(packed, metadata)
