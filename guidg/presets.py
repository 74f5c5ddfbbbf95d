"""The named presets: which values every configuration section takes in each.

A preset is a name, a description, and optionally the preset it is based on. Its values are declared by the
sections themselves (``PRESETS`` of each :class:`~guidg.settings.Section`, beside every setting's default,
which is the paper's or its reference code's value), so a method's own section carries its presets with it.
``paper`` is the defaults (the reference scripts of the standard DG suites); ``paper-imagenet-dg`` and
``paper-imagenet-dg-i`` those of ImageNet-DG (step-2 batch 12 per domain; prompt batch 8 on task ``i``);
``smoke`` is a seconds-long CPU run of the tiny model for tests; ``mini`` the embedded default: the tiny CLIP
pretrained on the miniature world (``--pretrained mini``) trained on the miniature benchmark in seconds per run,
with prompts that start from "a photo of a". Where the defaults depart from the reference code:
``docs/methods.md``, "Where this implementation departs from the reference code".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from guidg.methods import METHODS, all_sections
from guidg.settings import MethodConfig, Section
from imagenet_dg.errors import ImageNetDGError


@dataclass(frozen=True)
class Preset:
    """A named set of values: every section's defaults, changed by the ``PRESETS`` entries of this preset and
    of the one it is ``based_on`` (applied first)."""

    name: str
    description: str
    based_on: str | None = None


PRESETS: Mapping[str, Preset] = MappingProxyType({preset.name: preset for preset in (
    Preset("paper", "the paper's reference scripts for the standard DG suites (every default)"),
    Preset("paper-imagenet-dg", "the reference scripts for ImageNet-DG", based_on="paper"),
    Preset("paper-imagenet-dg-i", "the reference scripts for ImageNet-DG's task i", based_on="paper-imagenet-dg"),
    Preset("smoke", "a seconds-long CPU run of the tiny model, for tests"),
    Preset("mini", "the embedded default: the tiny CLIP on the miniature benchmark, seconds per run"),
)})


class PresetError(ImageNetDGError):
    """A preset that does not exist, or a section's values for one that does not."""


def lineage(name: str) -> tuple[str, ...]:
    """The presets whose values preset ``name`` takes, the first applied first (``name`` last)."""
    chain = []
    current: str | None = name
    while current is not None:
        chain.append(current)
        current = _preset(current).based_on
    return tuple(reversed(chain))


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def section_in_preset(kind: type[Section], name: str) -> Section:
    """The values of section ``kind`` in preset ``name``."""
    unknown = sorted(set(kind.PRESETS) - set(PRESETS))
    if unknown:
        raise PresetError(f"section {kind.NAME} gives values for unknown preset(s) {', '.join(unknown)}; "
                          f"expected {', '.join(PRESETS)}")
    values: dict[str, object] = {}
    for step in lineage(name):
        values.update(kind.PRESETS.get(step, {}))
    return kind(**values)


def get_preset(name: str) -> MethodConfig:
    """Preset ``name``: every section of every registered method (and of every run) with that preset's values."""
    _preset(name)
    return MethodConfig(section_in_preset(kind, name) for kind in all_sections())


def method_config(method: str, preset: str, changes: Mapping[str, Mapping[str, object]] | None = None) -> MethodConfig:
    """The configuration of a run of ``method`` under ``preset``: its sections and the run's, with the values of
    ``changes`` (``{section: {key: value}}``) to the sections it has (the others are not its)."""
    declared = METHODS[method]
    config = MethodConfig(section_in_preset(kind, preset) for kind in declared.all_sections)
    own = {section: values for section, values in (changes or {}).items() if section in config.names}
    return config.replace(**own) if own else config


def presets_changing(kind: type[Section], key: str) -> Sequence[tuple[str, object]]:
    """(preset, value) for every preset in which ``kind.key`` is not its default, in preset order."""
    default = getattr(kind(), key)
    found = []
    for name in PRESETS:
        value = getattr(section_in_preset(kind, name), key)
        if value != default:
            found.append((name, value))
    return found
