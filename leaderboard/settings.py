"""A run's settings against its preset: which resolved values make a leaderboard row of its own.

A record keeps the preset it was run with (``preset``) and the whole resolved configuration (``config``, after
every ``--set``). A setting is a dotted name, ``section.key`` (``finetune.lr``). The settings of a record that
differ from its preset's, or that the preset does not have, name its row: ``clipood (finetune.lr=1e-5)``. A setting
the preset has and the record lacks is left out (it did not exist when the run was made). When this version does
not know the record's preset, the records of the would-be row are compared with each other instead, and each is
labelled with its values of the settings on which they differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from guidg.presets import get_preset
from imagenet_dg.errors import ImageNetDGError

ROUTING_SETTING = "finetune.routing"
"""The setting a routing row already names in its label (``(sample routing)``), so it is not repeated."""
NOT_RECORDED = "not recorded"

Settings = tuple[tuple[str, str], ...]
"""Changed settings as (dotted name, value as text), sorted by name: part of a row's identity."""


def preset_config(name: str) -> dict[str, Any] | None:
    """The resolved configuration of the preset called ``name``, in the JSON form a record keeps it; None when
    this version has no preset of that name. The one place the leaderboard reads the presets."""
    try:
        config = get_preset(name)
    except ImageNetDGError:
        return None
    return json.loads(json.dumps(config.to_dict()))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"finetune": {"lr": 1e-5}}`` as ``{"finetune.lr": 1e-5}`` (nested mappings joined by dots)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def setting_text(value: Any) -> str:
    """A value as ``--set`` takes it: ``1e-5``, ``true``, ``null``, ``0.5,1.0`` for a list, text as it is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: f"e{'' if m.group(1) == '+' else '-'}{m.group(2)}", repr(value))
    if isinstance(value, (list, tuple)):
        return ",".join(setting_text(v) for v in value)
    return str(value)


def changed_settings(config: Mapping[str, Any], preset: Mapping[str, Any], *, routed: bool = False) -> Settings:
    """The settings of ``config`` whose value differs from ``preset``'s, or that ``preset`` lacks; with
    ``routed`` the routing, which the row names already, is left out."""
    ours, theirs = flatten(config), flatten(preset)
    changed = [(name, setting_text(value)) for name, value in ours.items()
               if (name not in theirs or theirs[name] != value) and not (routed and name == ROUTING_SETTING)]
    return tuple(sorted(changed))


def differing_settings(configs: Sequence[Mapping[str, Any]], *, routed: bool = False) -> list[Settings]:
    """For records with no known preset: each configuration's values of the settings on which ``configs``
    differ among themselves (a setting absent from one is ``not recorded`` there)."""
    flat = [flatten(c) for c in configs]
    names = sorted({n for f in flat for n in f})
    missing = object()
    differing = [n for n in names if not (routed and n == ROUTING_SETTING)
                 and any(f.get(n, missing) != flat[0].get(n, missing) for f in flat[1:])]
    return [tuple((n, setting_text(f[n]) if n in f else NOT_RECORDED) for n in differing) for f in flat]


def settings_text(settings: Settings) -> str:
    """``finetune.lr=1e-5, prompt.n_ctx=4`` (empty for none)."""
    return ", ".join(f"{name}={value}" if value != NOT_RECORDED else f"{name} {NOT_RECORDED}"
                     for name, value in settings)
