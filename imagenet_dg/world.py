"""A miniature synthetic world: named concepts drawn in named domain styles, deterministic from a seed.

It stands in for the real image domains wherever no real data may be used (tests, the embedded default, the
miniature suites, the pretraining of the tiny CLIP). A concept (a class) is a structure: a silhouette made of
parts with fixed proportions (a quadruped's body, legs and neck; a fish's body and tail; a house's walls and
roof), an accent part, a few inner details and usual colours. A style (a domain) is a way of drawing it:
photographs with lit, textured surroundings; pencil sketches; flat renditions (cartoon, clipart, graffiti,
stickers, paintings, tattoos, toys); corrupted, occluded, colour-cast photographs like ImageNet-A; camera-trap
frames from fixed locations (and from a trail camera anywhere). Colour and texture change with the style, the
structure does not, so that what a model learns about the structure transfers across styles while what it
learns about colour does not always.

The one public drawing function is :func:`draw`. :data:`CONCEPTS` lists the concept names, :data:`STYLES` the
style names (with the standard suites' domain names among them).
"""

from __future__ import annotations

import colorsys
import functools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from imagenet_dg.errors import ImageNetDGError

_SUPERSAMPLE = 4
_Point = tuple[float, float]


class WorldError(ImageNetDGError):
    """The world was asked to draw something it does not know."""


# ---------------------------------------------------------------------------------------------------------
# Concepts: parts in unit coordinates (x to the right, y down, the figure inside [-1, 1]^2).


@dataclass(frozen=True)
class _Part:
    """A filled polygon, or a stroke (an open polyline) of a given width, in one colour role."""

    points: tuple[_Point, ...]
    width: float = 0.0
    """0 for a filled polygon; otherwise the stroke width in unit coordinates."""
    role: str = "main"
    """``main`` (the body colour), ``accent`` (a second colour) or ``detail`` (dark inner lines)."""


def _ellipse(cx: float, cy: float, rx: float, ry: float, role: str = "main", n: int = 20) -> _Part:
    return _Part(tuple((cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n))
                       for k in range(n)), role=role)


def _poly(points: Sequence[_Point], role: str = "main") -> _Part:
    return _Part(tuple(points), role=role)


def _stroke(points: Sequence[_Point], width: float, role: str = "main") -> _Part:
    return _Part(tuple(points), width=width, role=role)


def _box(x0: float, y0: float, x1: float, y1: float, role: str = "main") -> _Part:
    return _Part(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), role=role)


def _legs(xs: Sequence[float], top: float, bottom: float, width: float, role: str = "main") -> list[_Part]:
    return [_stroke([(x, top), (x + 0.03, bottom)], width, role) for x in xs]


@dataclass(frozen=True)
class Concept:
    """A class of the world: its structure and its usual colours."""

    name: str
    parts: tuple[_Part, ...]
    colour: tuple[float, float, float]
    """Usual RGB colour (0..1) of the main parts."""
    accent: tuple[float, float, float]
    """Usual RGB colour of the accent parts."""
    any_colour: bool = False
    """The concept comes in any colour (a bathing suit, a house): photos draw a random hue."""
    pattern: str | None = None
    """``spots`` or ``stripes`` in the accent colour over the main parts, or None."""


def _concepts() -> dict[str, Concept]:
    c: list[Concept] = [
        Concept("tench", (
            _ellipse(0.05, 0, 0.72, 0.3),
            _poly([(-0.6, 0), (-1.0, -0.38), (-0.95, 0), (-1.0, 0.38)]),
            _poly([(-0.15, -0.24), (0.1, -0.48), (0.3, -0.25)], "accent"),
            _poly([(0.0, 0.25), (0.15, 0.42), (0.25, 0.26)], "accent"),
            _ellipse(0.55, -0.06, 0.05, 0.05, "detail"),
        ), (0.42, 0.47, 0.24), (0.3, 0.33, 0.16)),
        Concept("goldfish", (
            _ellipse(0.15, 0, 0.45, 0.38),
            _poly([(-0.25, 0), (-0.95, -0.7), (-0.7, 0)], "accent"),
            _poly([(-0.25, 0), (-0.95, 0.7), (-0.7, 0)], "accent"),
            _poly([(0.05, -0.33), (0.25, -0.62), (0.35, -0.33)], "accent"),
            _ellipse(0.42, -0.08, 0.06, 0.06, "detail"),
        ), (1.0, 0.55, 0.1), (1.0, 0.75, 0.35)),
        Concept("stingray", (
            _poly([(0, -0.7), (0.85, -0.05), (0.2, 0.45), (0, 0.5), (-0.2, 0.45), (-0.85, -0.05)]),
            _stroke([(0, 0.45), (0.04, 0.75), (0.0, 1.0)], 0.06),
            _ellipse(-0.15, -0.3, 0.05, 0.05, "detail"), _ellipse(0.15, -0.3, 0.05, 0.05, "detail"),
        ), (0.5, 0.45, 0.4), (0.3, 0.27, 0.24), pattern="spots"),
        Concept("American robin", (
            _ellipse(-0.05, 0.15, 0.52, 0.38),
            _ellipse(0.45, -0.3, 0.24, 0.24),
            _poly([(-0.45, 0.05), (-1.0, -0.15), (-0.95, 0.2)]),
            _ellipse(0.2, 0.22, 0.3, 0.26, "accent"),
            _poly([(0.66, -0.36), (0.95, -0.28), (0.66, -0.2)], "accent"),
            *_legs([0.0, 0.15], 0.5, 0.9, 0.04, "detail"),
            _ellipse(0.5, -0.35, 0.05, 0.05, "detail"),
        ), (0.38, 0.33, 0.3), (0.88, 0.38, 0.12)),
        Concept("bald eagle", (
            _poly([(-1, -0.25), (-0.3, 0.0), (0, -0.1), (0.3, 0.0), (1, -0.25), (0.65, 0.25), (0, 0.2),
                   (-0.65, 0.25)]),
            _ellipse(0, 0.15, 0.18, 0.42),
            _ellipse(0, -0.32, 0.17, 0.17, "accent"),
            _poly([(-0.16, 0.55), (0.16, 0.55), (0.22, 0.9), (-0.22, 0.9)], "accent"),
            _poly([(-0.05, -0.22), (0.05, -0.22), (0, -0.1)], "detail"),
        ), (0.3, 0.2, 0.12), (0.96, 0.95, 0.92)),
        Concept("newt", (
            _ellipse(0, 0, 0.55, 0.13),
            _ellipse(0.62, 0, 0.2, 0.14),
            _poly([(-0.5, -0.09), (-1.0, 0.06), (-0.5, 0.1)]),
            *[_stroke([(x, 0), (x + 0.12, s * 0.38)], 0.07) for x in (-0.3, 0.3) for s in (-1, 1)],
            _ellipse(0.7, -0.05, 0.04, 0.04, "detail"),
        ), (0.82, 0.42, 0.14), (0.25, 0.15, 0.08), pattern="spots"),
        Concept("mud turtle", (
            *[_ellipse(sx * 0.45, sy * 0.42, 0.16, 0.13, "accent") for sx in (-1, 1) for sy in (-1, 1)],
            _ellipse(0.8, 0, 0.2, 0.15, "accent"),
            _poly([(-0.6, -0.06), (-0.85, 0), (-0.6, 0.06)], "accent"),
            _ellipse(0, 0, 0.65, 0.46),
            _stroke([(-0.3, -0.35), (-0.15, 0), (-0.3, 0.35)], 0.04, "detail"),
            _stroke([(0.3, -0.35), (0.15, 0), (0.3, 0.35)], 0.04, "detail"),
            _stroke([(-0.15, 0), (0.15, 0)], 0.04, "detail"),
        ), (0.33, 0.33, 0.2), (0.55, 0.5, 0.32)),
        Concept("Indian cobra", (
            _stroke([(-0.35, 0.95), (0.3, 0.8), (0.35, 0.45), (-0.15, 0.25), (0.0, -0.2)], 0.17),
            _ellipse(0, -0.5, 0.36, 0.46),
            _ellipse(0, -0.5, 0.16, 0.3, "accent"),
            _ellipse(-0.07, -0.72, 0.04, 0.04, "detail"), _ellipse(0.07, -0.72, 0.04, 0.04, "detail"),
        ), (0.62, 0.48, 0.26), (0.85, 0.75, 0.5)),
        Concept("black swan", (
            _ellipse(-0.15, 0.45, 0.62, 0.3),
            _poly([(-0.75, 0.3), (-1.0, 0.1), (-0.6, 0.45)]),
            _stroke([(0.3, 0.35), (0.45, 0.0), (0.28, -0.4), (0.42, -0.72)], 0.12),
            _ellipse(0.47, -0.74, 0.13, 0.1),
            _poly([(0.56, -0.78), (0.85, -0.68), (0.56, -0.66)], "accent"),
        ), (0.08, 0.08, 0.1), (0.85, 0.1, 0.1)),
        Concept("flamingo", (
            _ellipse(-0.1, -0.1, 0.45, 0.24),
            _stroke([(0.25, -0.2), (0.42, -0.45), (0.2, -0.7), (0.35, -0.92)], 0.08),
            _ellipse(0.42, -0.92, 0.1, 0.08),
            _poly([(0.48, -0.95), (0.68, -0.8), (0.5, -0.86)], "accent"),
            _stroke([(-0.1, 0.1), (-0.08, 1.0)], 0.045),
            _stroke([(0.0, 0.1), (0.25, 0.4), (-0.05, 0.5)], 0.045),
        ), (0.96, 0.46, 0.6), (0.1, 0.1, 0.1)),
        Concept("Persian cat", (
            _poly([(-0.68, -0.1), (-0.6, -0.92), (-0.15, -0.5)]),
            _poly([(0.68, -0.1), (0.6, -0.92), (0.15, -0.5)]),
            _ellipse(0, 0.12, 0.72, 0.62),
            _ellipse(-0.28, 0.0, 0.12, 0.09, "accent"), _ellipse(0.28, 0.0, 0.12, 0.09, "accent"),
            _poly([(-0.08, 0.22), (0.08, 0.22), (0, 0.32)], "detail"),
            _stroke([(0.15, 0.35), (0.75, 0.25)], 0.025, "detail"),
            _stroke([(-0.15, 0.35), (-0.75, 0.25)], 0.025, "detail"),
        ), (0.86, 0.8, 0.7), (0.35, 0.6, 0.35)),
        Concept("one-piece bathing suit", (
            _poly([(-0.45, -0.95), (-0.32, -0.95), (-0.22, -0.45), (0.22, -0.45), (0.32, -0.95), (0.45, -0.95),
                   (0.5, -0.2), (0.42, 0.4), (0.12, 0.92), (-0.12, 0.92), (-0.42, 0.4), (-0.5, -0.2)]),
            _stroke([(-0.42, 0.05), (0.42, 0.05)], 0.1, "accent"),
        ), (0.1, 0.35, 0.85), (0.95, 0.95, 0.95), any_colour=True),
        Concept("dog", (
            _ellipse(-0.05, 0.0, 0.5, 0.22),
            _ellipse(0.58, -0.3, 0.2, 0.17),
            _poly([(0.7, -0.35), (0.95, -0.25), (0.72, -0.18)]),
            *_legs([-0.42, -0.25, 0.2, 0.35], 0.1, 0.65, 0.1),
            _stroke([(-0.5, -0.05), (-0.75, -0.45)], 0.07),
            _poly([(0.48, -0.42), (0.42, -0.1), (0.56, -0.38)], "accent"),
            _ellipse(0.62, -0.36, 0.035, 0.035, "detail"),
        ), (0.62, 0.42, 0.22), (0.35, 0.22, 0.12)),
        Concept("elephant", (
            _ellipse(-0.12, -0.05, 0.6, 0.4),
            _ellipse(0.52, -0.25, 0.28, 0.28),
            _stroke([(0.75, -0.15), (0.88, 0.3), (0.82, 0.75)], 0.13),
            *_legs([-0.55, -0.3, 0.1, 0.3], 0.2, 0.85, 0.17),
            _ellipse(0.38, -0.2, 0.2, 0.28, "accent"),
            _poly([(0.72, -0.05), (0.95, 0.05), (0.75, 0.05)], "detail"),
        ), (0.55, 0.55, 0.58), (0.45, 0.45, 0.5)),
        Concept("giraffe", (
            _ellipse(-0.25, 0.1, 0.4, 0.2),
            _stroke([(0.05, 0.0), (0.42, -0.82)], 0.13),
            _ellipse(0.52, -0.88, 0.16, 0.09),
            *_legs([-0.55, -0.4, -0.05, 0.1], 0.2, 1.0, 0.06),
            _stroke([(0.45, -0.95), (0.42, -1.05)], 0.03, "detail"),
        ), (0.92, 0.76, 0.36), (0.52, 0.28, 0.1), pattern="spots"),
        Concept("guitar", (
            _ellipse(0, 0.45, 0.42, 0.4),
            _ellipse(0, -0.05, 0.32, 0.3),
            _box(-0.07, -1.0, 0.07, -0.25, "accent"),
            _box(-0.11, -1.0, 0.11, -0.85, "accent"),
            _ellipse(0, 0.15, 0.11, 0.11, "detail"),
            _box(-0.15, 0.58, 0.15, 0.64, "detail"),
        ), (0.78, 0.52, 0.26), (0.24, 0.15, 0.1)),
        Concept("horse", (
            _ellipse(-0.05, -0.05, 0.48, 0.21),
            _stroke([(0.3, -0.1), (0.55, -0.58)], 0.17),
            _stroke([(0.5, -0.62), (0.88, -0.45)], 0.13),
            *_legs([-0.4, -0.28, 0.18, 0.3], 0.05, 0.9, 0.075),
            _stroke([(-0.5, -0.1), (-0.72, 0.45)], 0.08, "accent"),
            _stroke([(0.28, -0.22), (0.48, -0.68)], 0.06, "accent"),
        ), (0.5, 0.28, 0.12), (0.15, 0.1, 0.06)),
        Concept("house", (
            _box(-0.6, -0.1, 0.6, 0.8),
            _poly([(-0.82, -0.08), (0, -0.85), (0.82, -0.08)], "accent"),
            _box(-0.12, 0.35, 0.12, 0.8, "detail"),
            _box(-0.45, 0.05, -0.22, 0.28, "detail"), _box(0.22, 0.05, 0.45, 0.28, "detail"),
        ), (0.88, 0.82, 0.66), (0.62, 0.2, 0.14), any_colour=True),
        Concept("person", (
            _ellipse(0, -0.76, 0.17, 0.17, "accent"),
            _poly([(-0.24, -0.55), (0.24, -0.55), (0.2, 0.15), (-0.2, 0.15)]),
            _stroke([(-0.22, -0.5), (-0.42, -0.05), (-0.45, 0.2)], 0.1),
            _stroke([(0.22, -0.5), (0.42, -0.05), (0.45, 0.2)], 0.1),
            _stroke([(-0.12, 0.1), (-0.18, 0.95)], 0.12, "accent"),
            _stroke([(0.12, 0.1), (0.18, 0.95)], 0.12, "accent"),
        ), (0.2, 0.35, 0.75), (0.9, 0.72, 0.58), any_colour=True),
        # The classes of the other miniature suites (VLCS, OfficeHome, TerraIncognita, DomainNet), each named
        # as its class folder reads in a prompt (imagenet_dg.suites.prompt_name).
        Concept("bird", (
            _ellipse(-0.05, 0.0, 0.42, 0.3),
            _ellipse(0.38, -0.32, 0.2, 0.19),
            _poly([(0.55, -0.36), (0.8, -0.3), (0.55, -0.25)], "detail"),
            _poly([(-0.4, 0.05), (-0.95, 0.4), (-0.85, 0.5), (-0.35, 0.22)]),
            _poly([(-0.3, -0.12), (0.2, -0.18), (0.1, 0.12), (-0.45, 0.2)], "accent"),
            *_legs([0.0, 0.12], 0.28, 0.55, 0.035, "detail"),
            _stroke([(-0.7, 0.58), (0.7, 0.52)], 0.06, "detail"),
            _ellipse(0.42, -0.36, 0.04, 0.04, "detail"),
        ), (0.22, 0.42, 0.78), (0.92, 0.9, 0.84)),
        Concept("car", (
            _poly([(-0.95, 0.0), (-0.5, -0.05), (-0.3, -0.42), (0.35, -0.42), (0.6, -0.05), (0.95, 0.02),
                   (0.95, 0.4), (-0.95, 0.4)]),
            _poly([(-0.25, -0.35), (0.0, -0.35), (0.0, -0.08), (-0.42, -0.08)], "accent"),
            _poly([(0.08, -0.35), (0.3, -0.35), (0.48, -0.08), (0.08, -0.08)], "accent"),
            _ellipse(-0.55, 0.42, 0.2, 0.2, "detail"), _ellipse(0.55, 0.42, 0.2, 0.2, "detail"),
        ), (0.8, 0.12, 0.1), (0.65, 0.82, 0.95), any_colour=True),
        Concept("chair", (
            _box(-0.45, -0.95, -0.28, 0.05),
            _box(-0.45, -0.02, 0.5, 0.14),
            _box(-0.4, -0.85, -0.3, -0.1, "accent"),
            _stroke([(-0.4, 0.14), (-0.44, 0.95)], 0.09), _stroke([(0.45, 0.14), (0.5, 0.95)], 0.09),
            _stroke([(-0.2, 0.14), (-0.12, 0.8)], 0.06), _stroke([(0.25, 0.14), (0.3, 0.8)], 0.06),
            _box(-0.4, 0.0, 0.45, 0.06, "accent"),
        ), (0.55, 0.34, 0.16), (0.72, 0.2, 0.18)),
        Concept("cat", (
            _ellipse(-0.1, 0.1, 0.45, 0.2),
            _ellipse(0.45, -0.2, 0.2, 0.18),
            _poly([(0.3, -0.3), (0.32, -0.55), (0.45, -0.36)]), _poly([(0.5, -0.36), (0.6, -0.56), (0.64, -0.3)]),
            _stroke([(-0.52, 0.05), (-0.8, -0.2), (-0.75, -0.6)], 0.06),
            *_legs([-0.4, -0.28, 0.12, 0.25], 0.2, 0.7, 0.07),
            _ellipse(0.5, -0.24, 0.035, 0.035, "detail"),
        ), (0.88, 0.52, 0.2), (0.55, 0.28, 0.08), pattern="stripes"),
        Concept("coyote", (
            _ellipse(-0.1, 0.0, 0.46, 0.2),
            _poly([(0.3, -0.12), (0.5, -0.42), (0.95, -0.3), (0.55, -0.12)]),
            _poly([(0.42, -0.35), (0.45, -0.68), (0.56, -0.38)]),
            *_legs([-0.42, -0.3, 0.12, 0.24], 0.1, 0.75, 0.06),
            _poly([(-0.52, -0.08), (-0.9, 0.35), (-0.75, 0.48), (-0.5, 0.12)], "accent"),
            _ellipse(0.6, -0.32, 0.03, 0.03, "detail"),
        ), (0.62, 0.55, 0.42), (0.82, 0.76, 0.64)),
        Concept("Alarm Clock", (
            _ellipse(-0.42, -0.62, 0.2, 0.15), _ellipse(0.42, -0.62, 0.2, 0.15),
            _stroke([(-0.45, 0.5), (-0.65, 0.9)], 0.07), _stroke([(0.45, 0.5), (0.65, 0.9)], 0.07),
            _ellipse(0, 0.05, 0.62, 0.62),
            _ellipse(0, 0.05, 0.48, 0.48, "accent"),
            _stroke([(0, 0.05), (0, -0.3)], 0.05, "detail"), _stroke([(0, 0.05), (0.25, 0.15)], 0.05, "detail"),
        ), (0.85, 0.15, 0.15), (0.96, 0.95, 0.9), any_colour=True),
        Concept("Desk Lamp", (
            _ellipse(-0.3, 0.82, 0.45, 0.1),
            _stroke([(-0.3, 0.8), (-0.05, 0.0), (0.3, -0.55)], 0.07),
            _poly([(0.05, -0.75), (0.5, -0.9), (0.85, -0.2), (0.55, -0.35)]),
            _ellipse(0.62, -0.36, 0.12, 0.1, "accent"),
            _ellipse(-0.05, 0.0, 0.06, 0.06, "detail"),
        ), (0.15, 0.5, 0.3), (1.0, 0.92, 0.55), any_colour=True),
        Concept("Mug", (
            _stroke([(0.4, -0.35), (0.82, -0.3), (0.85, 0.2), (0.4, 0.3)], 0.12),
            _poly([(-0.55, -0.6), (0.45, -0.6), (0.4, 0.7), (-0.5, 0.7)]),
            _ellipse(-0.05, -0.6, 0.5, 0.1, "accent"),
            _box(-0.52, -0.1, 0.43, 0.02, "detail"),
        ), (0.92, 0.9, 0.86), (0.35, 0.2, 0.1), any_colour=True),
        Concept("TV", (
            _box(-0.9, -0.7, 0.9, 0.45),
            _box(-0.78, -0.6, 0.78, 0.35, "accent"),
            _stroke([(0, 0.45), (0, 0.7)], 0.12),
            _box(-0.4, 0.68, 0.4, 0.78),
            _ellipse(0.7, 0.4, 0.04, 0.03, "detail"),
        ), (0.14, 0.14, 0.16), (0.3, 0.5, 0.85)),
        Concept("ToothBrush", (
            _stroke([(-0.85, 0.7), (0.45, -0.45)], 0.13),
            _poly([(0.38, -0.52), (0.6, -0.72), (0.9, -0.42), (0.68, -0.22)], "accent"),
            *[_stroke([(0.48 + 0.09 * k, -0.62 + 0.09 * k), (0.3 + 0.09 * k, -0.8 + 0.09 * k)], 0.04, "detail")
              for k in range(4)],
        ), (0.2, 0.6, 0.9), (0.95, 0.95, 0.95), any_colour=True),
        Concept("The Eiffel Tower", (
            _poly([(-0.6, 0.95), (-0.08, -0.7), (0.08, -0.7), (0.6, 0.95), (0.35, 0.95), (0.0, 0.45),
                   (-0.35, 0.95)]),
            _stroke([(0, -0.7), (0, -1.0)], 0.04),
            _box(-0.38, 0.32, 0.38, 0.4, "accent"), _box(-0.22, -0.15, 0.22, -0.08, "accent"),
            _stroke([(-0.3, 0.3), (0.15, -0.1)], 0.03, "detail"), _stroke([(0.3, 0.3), (-0.15, -0.1)], 0.03, "detail"),
        ), (0.45, 0.36, 0.26), (0.62, 0.52, 0.36)),
        Concept("airplane", (
            _ellipse(0, 0, 0.9, 0.13),
            _poly([(-0.1, 0.0), (0.25, 0.0), (-0.2, 0.75), (-0.4, 0.75)]),
            _poly([(-0.1, 0.0), (0.25, 0.0), (-0.2, -0.55), (-0.35, -0.55)]),
            _poly([(-0.7, -0.05), (-0.85, -0.5), (-0.95, -0.5), (-0.9, 0.0)], "accent"),
            *[_ellipse(0.2 + 0.14 * k, -0.03, 0.03, 0.03, "detail") for k in range(4)],
        ), (0.9, 0.9, 0.93), (0.12, 0.3, 0.72)),
        Concept("t-shirt", (
            _poly([(-0.3, -0.8), (-0.95, -0.45), (-0.75, -0.05), (-0.5, -0.2), (-0.5, 0.9), (0.5, 0.9),
                   (0.5, -0.2), (0.75, -0.05), (0.95, -0.45), (0.3, -0.8), (0.15, -0.65), (-0.15, -0.65)]),
            _stroke([(-0.3, -0.78), (0.0, -0.6), (0.3, -0.78)], 0.06, "accent"),
        ), (0.9, 0.2, 0.25), (0.95, 0.95, 0.95), any_colour=True),
        Concept("teddy-bear", (
            _ellipse(-0.32, -0.78, 0.15, 0.15), _ellipse(0.32, -0.78, 0.15, 0.15),
            _ellipse(0, 0.3, 0.45, 0.5),
            _ellipse(-0.5, 0.15, 0.16, 0.28), _ellipse(0.5, 0.15, 0.16, 0.28),
            _ellipse(-0.3, 0.8, 0.2, 0.16), _ellipse(0.3, 0.8, 0.2, 0.16),
            _ellipse(0, -0.5, 0.36, 0.33),
            _ellipse(0, -0.38, 0.15, 0.11, "accent"), _ellipse(0, 0.35, 0.25, 0.3, "accent"),
            _ellipse(-0.13, -0.58, 0.04, 0.04, "detail"), _ellipse(0.13, -0.58, 0.04, 0.04, "detail"),
        ), (0.7, 0.48, 0.26), (0.92, 0.82, 0.62)),
        Concept("zigzag", (
            _stroke([(-0.95, 0.3), (-0.55, -0.4), (-0.2, 0.3), (0.2, -0.4), (0.55, 0.3), (0.95, -0.4)], 0.16),
            _stroke([(-0.95, 0.65), (-0.55, -0.05), (-0.2, 0.65), (0.2, -0.05), (0.55, 0.65), (0.95, -0.05)], 0.07,
                    "accent"),
        ), (0.15, 0.45, 0.85), (0.95, 0.7, 0.1), any_colour=True),
    ]
    return {concept.name: concept for concept in c}


CONCEPTS: Mapping[str, Concept] = MappingProxyType(_concepts())
"""Concept name -> its structure and colours: the twelve miniature ImageNet classes (by their readable
names), then every class of the miniature standard suites (PACS, VLCS, OfficeHome, TerraIncognita,
DomainNet) by the name its prompt says (the class folder with ``_`` read as a space)."""


# ---------------------------------------------------------------------------------------------------------
# Placing and rasterising a concept.


@dataclass(frozen=True)
class _Pose:
    cx: float
    cy: float
    scale: float
    angle: float
    flip: bool
    warp: tuple[float, float, float, float, float]
    """Amplitude, phases and frequencies of a smooth wobble of every point (an unsteady hand, a soft body)."""

    def place(self, points: np.ndarray, factor: float) -> np.ndarray:
        """Unit-coordinate points (N x 2) moved into the image, in pixels times ``factor``."""
        x, y = points[:, 0], points[:, 1]
        amplitude, p1, p2, f1, f2 = self.warp
        if amplitude:
            x, y = x + amplitude * np.sin(f1 * y + p1), y + amplitude * np.sin(f2 * x + p2)
        if self.flip:
            x = -x
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return np.stack([factor * (self.cx + self.scale * (cos * x - sin * y)),
                         factor * (self.cy + self.scale * (sin * x + cos * y))], axis=1)


def _pose(rng: np.random.Generator, size: int, *, scale: tuple[float, float] = (0.28, 0.36),
          shift: float = 0.1, max_angle: float = 12.0, wobble: float = 0.03, centre_y: float = 0.5) -> _Pose:
    return _Pose(
        cx=size * (0.5 + rng.uniform(-shift, shift)),
        cy=size * (centre_y + rng.uniform(-shift, shift)),
        scale=size * rng.uniform(*scale),
        angle=math.radians(rng.uniform(-max_angle, max_angle)),
        flip=bool(rng.integers(2)),
        warp=(wobble, *rng.uniform(0, 2 * math.pi, 2), *rng.uniform(2.0, 4.0, 2)),
    )


@functools.lru_cache(maxsize=64)
def _points_of(parts: tuple[_Part, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """All points of ``parts`` in one array, and where each part's points end."""
    ends = tuple(int(n) for n in np.cumsum([len(p.points) for p in parts]))
    return np.asarray([q for p in parts for q in p.points], dtype=np.float64).reshape(-1, 2), ends


_ROLE_COLOUR = {"main": (255, 0, 0), "accent": (0, 255, 0), "detail": (0, 0, 255)}


def _rasterise(parts: tuple[_Part, ...], pose: _Pose, size: int, *, line: float = 0.0,
               by_role: bool = False) -> np.ndarray:
    """Coverage (size x size, 0..1) of ``parts``: filled, or only their outlines ``line`` pixels wide.

    With ``by_role`` the parts are painted in order on one canvas, one channel per colour role, and the
    coverage of each role comes back as size x size x 3 (main, accent, detail), summing to at most 1.
    """
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB" if by_role else "L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if parts:
        allpoints, ends = _points_of(parts)
        placed = pose.place(allpoints, _SUPERSAMPLE).tolist()
    start = 0
    for part, end in zip(parts, ends if parts else ()):
        points = [tuple(q) for q in placed[start:end]]
        start = end
        fill = _ROLE_COLOUR[part.role] if by_role else 255
        if part.width:
            width = max(1, round(part.width * pose.scale * _SUPERSAMPLE))
            if line:
                _outline_stroke(draw, points, width, max(1, round(line * _SUPERSAMPLE)), fill)
            else:
                draw.line(points, fill=fill, width=width, joint="curve")
                for x, y in (points[0], points[-1]):
                    draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=fill)
        elif line:
            draw.line([*points, points[0]], fill=fill, width=max(1, round(line * _SUPERSAMPLE)), joint="curve")
        else:
            draw.polygon(points, fill=fill)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _outline_stroke(draw: ImageDraw.ImageDraw, points: list[_Point], width: int, line: int,
                    fill: int | tuple[int, int, int]) -> None:
    """The two edges of a thick stroke, as a pencil draws a leg or a neck."""
    half = width / 2
    for side in (-1, 1):
        edge = []
        for k, (x, y) in enumerate(points):
            (x0, y0), (x1, y1) = points[max(k - 1, 0)], points[min(k + 1, len(points) - 1)]
            length = math.hypot(x1 - x0, y1 - y0) or 1.0
            edge.append((x + side * half * -(y1 - y0) / length, y + side * half * (x1 - x0) / length))
        draw.line(edge, fill=fill, width=line)


@dataclass(frozen=True)
class _Layers:
    """Coverage of a placed concept per colour role (painted in order, so they never overlap), and of the
    whole figure."""

    main: np.ndarray
    accent: np.ndarray
    detail: np.ndarray
    figure: np.ndarray


def _layers(concept: Concept, pose: _Pose, size: int) -> _Layers:
    roles = _rasterise(concept.parts, pose, size, by_role=True)
    main, accent, detail = roles[:, :, 0], roles[:, :, 1], roles[:, :, 2]
    return _Layers(main, accent, detail, np.minimum(main + accent + detail, 1.0))


def _outline(concept: Concept, pose: _Pose, size: int, line: float, details: bool = True) -> np.ndarray:
    """Ink of a line drawing: the outline of every part (and the inner details)."""
    parts = tuple(p for p in concept.parts if details or p.role != "detail")
    return _rasterise(parts, pose, size, line=line)


# ---------------------------------------------------------------------------------------------------------
# Pixels: float32 arrays, height x width x 3, values in 0..1.


def _noise(rng: np.random.Generator, size: int, cells: int, channels: int = 3) -> np.ndarray:
    """Smooth noise in -1..1: a coarse random grid scaled up bicubically."""
    cells = max(cells, 2)
    grid = rng.uniform(0, 255, (cells, cells, channels)).astype(np.uint8)
    image = Image.fromarray(grid if channels == 3 else grid[:, :, 0], "RGB" if channels == 3 else "L")
    out = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0
    return out if channels == 3 else out[:, :, None]


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear ramp 0..1 (size x size x 1) in a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    ramp = math.cos(angle) * (xs - 0.5) + math.sin(angle) * (ys - 0.5)
    return ((ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6))[:, :, None]


def _blend(below: np.ndarray, above: np.ndarray | Sequence[float], coverage: np.ndarray) -> np.ndarray:
    cover = (coverage[:, :, None] if coverage.ndim == 2 else coverage).astype(np.float32, copy=False)
    above = np.asarray(above, dtype=np.float32)
    return (below + (above - below) * cover).astype(np.float32, copy=False)


def _composite(below: np.ndarray, layers: _Layers, main: np.ndarray, accent: np.ndarray,
               detail: np.ndarray) -> np.ndarray:
    """``below`` with the figure painted over it: each role in its colour (an RGB triple or an image)."""
    m, a, d = (x[:, :, None] for x in (layers.main, layers.accent, layers.detail))
    return (below * (1.0 - m - a - d) + main * m + accent * a + detail * d).astype(np.float32, copy=False)


def _blur(pixels: np.ndarray, radius: float) -> np.ndarray:
    if radius <= 0:
        return pixels
    image = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB")
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _jitter(rgb: Sequence[float], rng: np.random.Generator, hue: float, amount: float) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = float(np.clip(s * rng.uniform(1 - amount, 1 + amount), 0, 1))
    v = float(np.clip(v * rng.uniform(1 - amount, 1 + amount), 0, 1))
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _colours(concept: Concept, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """This image's main and accent colours: the usual ones a little changed, or any hue for any_colour."""
    if concept.any_colour:
        main = np.asarray(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95)),
                          dtype=np.float32)
    else:
        main = _jitter(concept.colour, rng, 0.03, 0.15)
    return main, _jitter(concept.accent, rng, 0.03, 0.15)


def _pattern(concept: Concept, rng: np.random.Generator, size: int, pose: _Pose) -> np.ndarray:
    """Coverage (0..1) of the concept's surface pattern in image coordinates, zero if it has none."""
    if concept.pattern is None:
        return np.zeros((size, size), dtype=np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    period = max(pose.scale * 0.32, 2.0)
    if concept.pattern == "stripes":
        return (np.sin(2 * math.pi * xs / period + rng.uniform(0, 6.3)) > 0.3).astype(np.float32)
    phase_x, phase_y = rng.uniform(0, 6.3, 2)
    spots = np.sin(2 * math.pi * xs / period + phase_x) * np.sin(2 * math.pi * ys / period + phase_y)
    return (spots > 0.45).astype(np.float32)


def _paint_figure(image: np.ndarray, concept: Concept, layers: _Layers, rng: np.random.Generator,
                  pose: _Pose, *, shading: float, texture: float) -> np.ndarray:
    """The concept painted over ``image`` with its colours, lit from one side, with its pattern and details."""
    size = image.shape[0]
    main, accent = _colours(concept, rng)
    light = (1.0 - shading / 2) + shading * (1.0 - _ramp(rng, size))
    grain = texture * _noise(rng, size, max(size // 6, 2))
    body = main * light + grain
    body = _blend(body, accent * light, _pattern(concept, rng, size, pose) * 0.9)
    return _composite(image, layers, body, accent * light + grain, np.float32([0.06, 0.05, 0.05]))


def _shadow(figure: np.ndarray) -> np.ndarray:
    """A soft shadow cast down and to the right of the figure."""
    size = figure.shape[0]
    dx, dy = round(size * 0.04), round(size * 0.05)
    moved = np.zeros_like(figure)
    moved[dy:, dx:] = figure[: size - dy, : size - dx]
    image = Image.fromarray(np.round(moved * 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(size / 40))
    return np.asarray(image, dtype=np.float32) / 255.0


def _clutter(image: np.ndarray, rng: np.random.Generator, count: int, *, scale: tuple[float, float],
             saturation: float = 0.5) -> np.ndarray:
    """Distracting blobs (stones, leaves, furniture) of random colours and shapes in the surroundings."""
    if count == 0:
        return image
    size = image.shape[0]
    factor = 2
    paint = Image.new("RGB", (size * factor,) * 2, 0)  # colour times opacity, later blobs over earlier ones
    cover = Image.new("L", (size * factor,) * 2, 0)
    for _ in range(count):
        n = int(rng.integers(3, 8))
        radius = size * rng.uniform(*scale)
        cx, cy = rng.uniform(0, size, 2)
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = radius * rng.uniform(0.5, 1.0, n)
        points = [(float(cx + r * math.cos(a)) * factor, float(cy + r * math.sin(a)) * factor)
                  for r, a in zip(radii, angles)]
        colour = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, saturation), rng.uniform(0.2, 0.9))
        opacity = rng.uniform(0.5, 1.0)
        ImageDraw.Draw(paint).polygon(points, fill=tuple(round(255 * opacity * c) for c in colour))
        ImageDraw.Draw(cover).polygon(points, fill=round(255 * opacity))
    premultiplied = np.asarray(paint.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    alpha = np.asarray(cover.resize((size, size), Image.Resampling.BOX), dtype=np.float32)[:, :, None] / 255.0
    return image * (1.0 - alpha) + premultiplied


def _background(rng: np.random.Generator, size: int, *, dark: bool = False) -> np.ndarray:
    """Lit, textured surroundings: two colours blended along a ramp, with coarse and fine texture."""
    low, high = (0.05, 0.45) if dark else (0.2, 0.85)
    c0, c1 = rng.uniform(low, high, 3).astype(np.float32), rng.uniform(low, high, 3).astype(np.float32)
    ramp = _ramp(rng, size)
    image = c0 * (1 - ramp) + c1 * ramp + 0.09 * _noise(rng, size, 5)
    return image + 0.05 * _noise(rng, size, max(size // 4, 2))


# ---------------------------------------------------------------------------------------------------------
# Styles.


@dataclass(frozen=True)
class _PhotoLook:
    """Parameters of a photograph."""

    clutter: int = 2
    scale: tuple[float, float] = (0.28, 0.36)
    shift: float = 0.1
    dark: bool = False
    plain: bool = False
    """A plain light backdrop (a product shot) instead of surroundings."""
    noise: float = 0.025
    grey: bool = False
    blur: float = 0.0
    contrast: float = 1.0


def _photo(concept: Concept, rng: np.random.Generator, size: int, look: _PhotoLook = _PhotoLook()) -> np.ndarray:
    """A shaded object in its surroundings, with its shadow and sensor noise."""
    if look.plain:
        image = np.ones((size, size, 3), dtype=np.float32) * rng.uniform(0.88, 1.0) - 0.05 * _ramp(rng, size)
    else:
        image = _clutter(_background(rng, size, dark=look.dark), rng, look.clutter, scale=(0.06, 0.16))
    pose = _pose(rng, size, scale=look.scale, shift=look.shift)
    layers = _layers(concept, pose, size)
    image = image * (1.0 - 0.45 * _shadow(layers.figure)[:, :, None])
    image = _paint_figure(image, concept, layers, rng, pose, shading=0.5, texture=0.05)
    if look.grey:
        image = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2) * np.float32(rng.uniform(0.8, 1.1))
    if look.contrast != 1.0:
        image = 0.5 + (image - image.mean()) * look.contrast
    image = _blur(image, look.blur * size / 64)
    return image + rng.normal(0.0, look.noise, image.shape).astype(np.float32)


def _adversarial(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """A hard photograph: busy surroundings, an odd colour cast, an occluder, blur and strong noise."""
    image = _photo(concept, rng, size, _PhotoLook(clutter=5, scale=(0.24, 0.4), shift=0.16))
    image = image * rng.uniform(0.6, 1.4, 3) + rng.uniform(-0.15, 0.15, 3)
    w, h = (rng.uniform(0.15, 0.32, 2) * size).astype(int)
    x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
    image[y : y + h, x : x + w] = rng.uniform(0, 1, 3) + 0.15 * _noise(rng, size, 4)[y : y + h, x : x + w]
    image = _blur(image, rng.uniform(0.4, 1.2) * size / 64)
    return image + rng.normal(0.0, 0.12, image.shape).astype(np.float32)


def _sketch(concept: Concept, rng: np.random.Generator, size: int, *, crude: bool = False) -> np.ndarray:
    """Pencil lines on white paper, no colour: outlines, inner details and some hatching (a quick doodle
    with ``crude``: one thin wobbly outline)."""
    pose = _pose(rng, size, max_angle=20.0 if crude else 12.0, wobble=0.08 if crude else 0.035)
    width = (rng.uniform(0.6, 1.0) if crude else rng.uniform(0.8, 1.5)) * size / 64
    ink = _outline(concept, pose, size, width, details=not crude)
    if not crude:
        step = max(size // int(rng.integers(7, 11)), 2)
        ys, xs = np.mgrid[0:size, 0:size]
        hatch = ((xs + ys + int(rng.integers(0, step))) % step == 0).astype(np.float32) * 0.45
        ink = np.clip(ink + hatch * _layers(concept, pose, size).accent, 0.0, 1.0)
    grey = rng.uniform(0.94, 1.0) * (1.0 - ink * rng.uniform(0.8, 1.0))
    grey = grey + 0.02 * rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _any_hue(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    return np.asarray(colorsys.hsv_to_rgb(rng.uniform(), max(s, 0.5), max(v, 0.5)), dtype=np.float32)


def _flat(concept: Concept, rng: np.random.Generator, size: int, *, background: np.ndarray, pose: _Pose,
          recolour: float = 0.0) -> np.ndarray:
    """The concept in flat colours (recoloured to any hue with probability ``recolour``) over ``background``."""
    layers = _layers(concept, pose, size)
    main, accent = _colours(concept, rng)
    if rng.uniform() < recolour:
        main, accent = _any_hue(main, rng), _any_hue(accent, rng)
    return _composite(background, layers, main, accent, np.float32([0.05, 0.05, 0.05]))


def _cartoon(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """Flat bright colours with thick black outlines on a light plain background."""
    pose = _pose(rng, size, max_angle=20.0)
    image = _flat(concept, rng, size, background=np.ones((size, size, 3), np.float32) * rng.uniform(0.7, 1.0, 3),
                  pose=pose, recolour=0.3)
    return _blend(image, (0.03, 0.03, 0.03), _outline(concept, pose, size, size / 36, details=False))


def _clipart(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """Flat colours, thin dark outline, white background, a simple highlight."""
    pose = _pose(rng, size, max_angle=8.0, wobble=0.0)
    image = _flat(concept, rng, size, background=np.ones((size, size, 3), np.float32), pose=pose, recolour=0.2)
    image = image + 0.15 * _layers(concept, pose, size).figure[:, :, None] * (1 - _ramp(rng, size))
    return _blend(image, (0.1, 0.1, 0.1), _outline(concept, pose, size, size / 64, details=False))


def _sticker(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """A flat figure cut out with a wide white border, on a coloured surface."""
    pose = _pose(rng, size, scale=(0.24, 0.3), max_angle=25.0)
    background = np.ones((size, size, 3), np.float32) * rng.uniform(0.25, 0.7, 3)
    border = _rasterise(concept.parts, pose, size, line=size / 7)
    background = _blend(_blend(background, (1, 1, 1), border), (1, 1, 1), _layers(concept, pose, size).figure)
    return _flat(concept, rng, size, background=background, pose=pose, recolour=0.5)


def _graffiti(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """Sprayed paint on a dark brick wall: a speckled halo around a bright figure."""
    pose = _pose(rng, size, max_angle=20.0)
    wall = np.ones((size, size, 3), np.float32) * rng.uniform(0.15, 0.35, 3) + 0.06 * _noise(rng, size, size // 3, 1)
    wall[:: max(size // 8, 2)] *= 0.6
    layers = _layers(concept, pose, size)
    halo = _rasterise(concept.parts, pose, size, line=size / 10) * rng.uniform(0, 1.6, (size, size))
    main, accent = _any_hue(_colours(concept, rng)[0], rng), _any_hue(_colours(concept, rng)[1], rng)
    image = _composite(_blend(wall, main * 0.7, np.clip(halo, 0, 1)), layers, main, accent, main * 0.3)
    return _blend(image, (0.02, 0.02, 0.02), _outline(concept, pose, size, size / 40))


def _painting(concept: Concept, rng: np.random.Generator, size: int, *, strokes: float = 0.18) -> np.ndarray:
    """Oil on canvas: blotchy paint over a painted background, few colour steps, soft edges."""
    pose = _pose(rng, size, max_angle=15.0, wobble=0.05)
    canvas = np.ones((size, size, 3), np.float32) * rng.uniform(0.3, 0.85, 3) + strokes * _noise(rng, size, 4)
    canvas = canvas + 0.3 * strokes * _noise(rng, size, max(size // 8, 2))
    image = _flat(concept, rng, size, background=canvas, pose=pose, recolour=0.15)
    image = image + strokes * _noise(rng, size, 7) * _layers(concept, pose, size).figure[:, :, None]
    image = _blur(image, 0.6 * size / 64)
    return np.round(image * 5.0) / 5.0


def _tattoo(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark ink lines and a muted fill on skin."""
    pose = _pose(rng, size, max_angle=20.0)
    skin = np.asarray(colorsys.hsv_to_rgb(rng.uniform(0.03, 0.09), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.95)),
                      dtype=np.float32)
    image = np.ones((size, size, 3), np.float32) * skin + 0.04 * _noise(rng, size, 6)
    image = _blend(image, (0.15, 0.25, 0.3), _layers(concept, pose, size).figure * 0.35)
    return _blend(image, (0.05, 0.1, 0.15), _outline(concept, pose, size, size / 32))


def _toy(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """A shiny plastic toy: saturated recoloured figure with a strong highlight on a plain floor."""
    pose = _pose(rng, size, max_angle=15.0, wobble=0.06)
    floor = np.ones((size, size, 3), np.float32) * rng.uniform(0.55, 0.95, 3) - 0.15 * _ramp(rng, size)
    image = _flat(concept, rng, size, background=floor, pose=pose, recolour=0.8)
    figure = _layers(concept, pose, size).figure[:, :, None]
    highlight = np.clip(1.0 - 2.2 * _ramp(rng, size), 0, 1) * figure
    return image * (1.0 - 0.35 * figure * _ramp(rng, size)) + 0.5 * highlight


def _infograph(concept: Concept, rng: np.random.Generator, size: int) -> np.ndarray:
    """A small flat icon on a white chart with coloured bars and lines of text."""
    pose = _pose(rng, size, scale=(0.22, 0.3), shift=0.15, max_angle=0.0, wobble=0.0)
    image = np.ones((size, size, 3), np.float32) * rng.uniform(0.9, 1.0)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = rng.integers(0, size, 2)
        w, h = int(rng.integers(size // 8, size // 3)), int(rng.integers(2, max(size // 10, 3)))
        image[y0 : y0 + h, x0 : x0 + w] = colorsys.hsv_to_rgb(rng.uniform(), 0.7, 0.8)
    for row in range(int(rng.integers(2, 5))):
        y = int(rng.integers(0, size - 2))
        image[y : y + 1, int(size * 0.1) : int(size * rng.uniform(0.4, 0.9))] = 0.3
    return _flat(concept, rng, size, background=image, pose=pose, recolour=0.4)


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """Ground and plants in front of a camera trap."""
    ground = np.asarray(colorsys.hsv_to_rgb(rng.uniform(0.08, 0.3), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.6)),
                        dtype=np.float32)
    scene = np.ones((size, size, 3), np.float32) * ground + 0.12 * _noise(rng, size, 6) + 0.06 * _noise(rng, size, 16)
    scene = _clutter(scene, rng, 6, scale=(0.08, 0.25), saturation=0.4)
    scene[: int(size * rng.uniform(0.15, 0.4))] *= rng.uniform(1.1, 1.5)  # sky or far trees
    return scene


@functools.lru_cache(maxsize=16)
def _location_scene(name: str, size: int) -> np.ndarray:
    """The fixed background of a camera-trap location: the same ground and plants in every frame."""
    scene = _scene(np.random.default_rng(zlib.crc32(name.encode("utf-8"))), size)
    scene.setflags(write=False)
    return scene


def _camera_trap(concept: Concept, rng: np.random.Generator, size: int, location: str | None) -> np.ndarray:
    """A frame of a camera trap: the location's fixed scene (a scene of its own for a trail camera anywhere,
    ``location`` None), a small animal low in the frame, often an infrared night shot (grey), low contrast,
    blur and noise."""
    scene = _scene(rng, size) if location is None else _location_scene(location, size)
    image = scene * np.float32(rng.uniform(0.7, 1.2))
    pose = _pose(rng, size, scale=(0.24, 0.34), shift=0.16, centre_y=0.58, wobble=0.04)
    image = _paint_figure(image, concept, _layers(concept, pose, size), rng, pose, shading=0.4, texture=0.06)
    if rng.uniform() < 0.5:
        image = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2) * np.float32(rng.uniform(0.7, 1.3))
    image = 0.5 + (image - 0.5) * np.float32(rng.uniform(0.6, 1.0))
    image = _blur(image, rng.uniform(0.3, 0.9) * size / 64)
    return image + rng.normal(0.0, 0.05, image.shape).astype(np.float32)


_Style = Callable[[Concept, np.random.Generator, int], np.ndarray]

_STYLES: dict[str, _Style] = {
    # Photographs.
    "photo": lambda c, r, s: _photo(c, r, s),
    "photo-v2": lambda c, r, s: _photo(c, r, s, _PhotoLook(clutter=3, scale=(0.24, 0.36), shift=0.15, blur=0.3)),
    "product": lambda c, r, s: _photo(c, r, s, _PhotoLook(clutter=0, plain=True, scale=(0.32, 0.4), shift=0.04)),
    "scene": lambda c, r, s: _photo(c, r, s, _PhotoLook(clutter=6, scale=(0.2, 0.3), shift=0.2)),
    "indoor": lambda c, r, s: _photo(c, r, s, _PhotoLook(clutter=5, scale=(0.22, 0.32), shift=0.18, dark=True)),
    "adversarial": _adversarial,
    # Drawings.
    "sketch": lambda c, r, s: _sketch(c, r, s),
    "quickdraw": lambda c, r, s: _sketch(c, r, s, crude=True),
    # Renditions.
    "art": lambda c, r, s: _painting(c, r, s),
    "painting": lambda c, r, s: _painting(c, r, s, strokes=0.22),
    "cartoon": _cartoon,
    "clipart": _clipart,
    "graffiti": _graffiti,
    "sticker": _sticker,
    "tattoo": _tattoo,
    "toy": _toy,
    "infograph": _infograph,
    # Camera traps: a trail camera anywhere, and TerraIncognita's fixed locations.
    "trail-camera": lambda c, r, s: _camera_trap(c, r, s, None),
    **{f"location_{n}": functools.partial(lambda c, r, s, where: _camera_trap(c, r, s, where), where=f"location_{n}")
       for n in (38, 43, 46, 100)},
}

STYLE_ALIASES: Mapping[str, str] = MappingProxyType({
    # PACS
    "art_painting": "art",
    # DomainNet ("real", "sketch", "clipart", "painting", "infograph", "quickdraw" are styles already)
    "real": "photo",
    # OfficeHome
    "Art": "painting", "Clipart": "clipart", "Product": "product", "Real_World": "photo", "Real World": "photo",
    # VLCS
    "Caltech101": "product", "LabelMe": "scene", "SUN09": "indoor", "VOC2007": "photo",
})
"""Domain names of the standard suites that are drawn in a style of another name."""

STYLES: tuple[str, ...] = tuple(sorted([*_STYLES, *STYLE_ALIASES]))
"""Every style :func:`draw` accepts."""

RENDITIONS: tuple[str, ...] = ("art", "cartoon", "graffiti", "sticker", "tattoo", "toy")
"""The rendition styles that stand in for ImageNet-R's."""

SOURCE_STYLES: tuple[str, ...] = ("photo", "photo-v2", "sketch")
"""The styles of ImageNet-DG's source domains (ImageNet train and val, ImageNetV2, ImageNet-Sketch)."""


def resolve_style(style: str) -> str:
    """The style an accepted style name is drawn in (aliases resolved); WorldError for an unknown name."""
    resolved = STYLE_ALIASES.get(style, style)
    if resolved not in _STYLES:
        raise WorldError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    return resolved


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


def draw(concept: str, style: str, seed: int | Sequence[int], size: int = 64) -> Image.Image:
    """One RGB image (``size`` x ``size``) of ``concept`` drawn in ``style``.

    The image depends only on the four arguments: the same ones give the same pixels on every machine
    (NumPy's PCG64 generator, seeded from ``seed`` and the names). ``seed`` is a non-negative integer or a
    sequence of them (e.g. ``(world_seed, domain_key, image_number)``). Raises WorldError naming the known
    concepts or styles when one is unknown, and for a size under 16 pixels.
    """
    try:
        found = CONCEPTS[concept]
    except KeyError:
        raise WorldError(f"unknown concept {concept!r}; expected one of {', '.join(CONCEPTS)}") from None
    resolved = resolve_style(style)
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise WorldError(f"size = {size!r}: expected an integer of at least 16 (pixels)")
    entropy = [seed] if isinstance(seed, int) else list(seed)
    if not entropy or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in entropy):
        raise WorldError(f"seed = {seed!r}: expected a non-negative integer or a sequence of them")
    keys = [zlib.crc32(concept.encode("utf-8")), zlib.crc32(resolved.encode("utf-8"))]
    rng = np.random.default_rng([*entropy, *keys])
    return _to_image(_STYLES[resolved](found, rng, size))


__all__ = ["CONCEPTS", "RENDITIONS", "SOURCE_STYLES", "STYLES", "STYLE_ALIASES", "Concept", "WorldError", "draw",
           "resolve_style"]
