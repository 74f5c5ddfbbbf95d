"""Miniature synthetic releases of the six ImageNet-DG domains, in their exact official layouts.

Twelve real wnids, a few images each, drawn procedurally so that the whole pipeline (discovery, scanning,
splitting, export, training a tiny CLIP) can run offline in seconds on data that behaves like the real
thing: the same folder and file names, the same label tables, the same defects, and domains that really
look different while the classes stay recognisable in all of them.

A class is a shape (kind, arrangement, orientation) in a colour. A domain is a drawing style: photo-like
for ILSVRC-2012 train/val and ImageNetV2, heavily corrupted photos for ImageNet-A, flat renditions for
ImageNet-R, black line drawings on white for ImageNet-Sketch.
"""

from __future__ import annotations

import colorsys
import functools
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from imagenet_dg.atomic import write_bytes_atomic
from imagenet_dg.domains import DOMAINS, get_domain
from imagenet_dg.errors import ImageNetDGError, OutputExistsError
from imagenet_dg.taxonomy import imagenetv2_labels, load_taxonomy, val_labels

MINI_WNIDS: tuple[str, ...] = (
    "n01440764",  # tench, index 0: in neither A nor R
    "n01443537",  # goldfish, 1: R only
    "n01498041",  # stingray, 6: A and R
    "n01558993",  # American robin, 15: A only
    "n01614925",  # bald eagle, 22: A and R
    "n01631663",  # newt, 27: A only
    "n01667114",  # mud turtle, 35: neither
    "n01748264",  # Indian cobra, 63: R only
    "n01860187",  # black swan, 100: R only
    "n02007558",  # flamingo, 130: A and R
    "n02123394",  # Persian cat, 283: A only
    "n03710721",  # one-piece bathing suit, 639: neither
)
"""The classes of the miniature set, sorted. Their class indices have 1, 2 and 3 digits, so the ImageNetV2
folder names sort differently as strings than as integers."""

DEFAULT_IMAGES_PER_CLASS: Mapping[str, int] = {
    "imagenet": 12,
    "imagenet-val": 4,
    "imagenet-a": 4,
    "imagenet-r": 6,
    "imagenet-sketch": 5,
    "imagenetv2": 4,
}
"""Images per class and domain unless overridden; Sketch gives one class one image more."""

FOLDERS: Mapping[str, str] = {domain.id: domain.folder for domain in DOMAINS.values()}
"""Domain id -> the official folder name its release extracts to."""

MARKER = "mini-releases.json"
"""File that marks a folder as a miniature set and records the settings that made it."""

RENDITIONS = ("art", "cartoon", "graffiti", "sticker")
"""ImageNet-R rendition styles drawn, in turn, as the file names say."""

_SKETCH_EXTRA_WNID = "n01443537"  # ImageNet-Sketch has 51 images in some classes instead of 50
_REAL_LIMITS = {"imagenet-val": 50, "imagenetv2": 10}  # real file names available per class
_FORMAT_VERSION = 1
_JPEG = {"format": "JPEG", "quality": 90, "subsampling": "4:2:0", "optimize": False}
_SUPERSAMPLE = 4
# An EXIF block whose first directory claims 65535 entries but ends after a few bytes: readers warn
# "Corrupt EXIF data", as they do on some ILSVRC-2012 train files.
_BROKEN_EXIF = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x0f\x01\x02\x00\x40\x00"
_DOMAIN_KEYS = {  # fixed integers for seeding, so images do not change when domains are reordered
    "imagenet": 0,
    "imagenet-val": 1,
    "imagenet-a": 2,
    "imagenet-r": 3,
    "imagenet-sketch": 4,
    "imagenetv2": 5,
}
_Polygon = list[tuple[float, float]]


@dataclass(frozen=True)
class MiniReleases:
    """Where a miniature set was written and what it holds."""

    root: Path
    paths: dict[str, Path]
    """Domain id -> release folder (official name) to give to ``scan_domain``."""
    wnids: tuple[str, ...]
    """All wnids used, sorted."""
    a_wnids: tuple[str, ...]
    """The classes standing in for ImageNet-A's 200 (real ImageNet-A wnids)."""
    r_wnids: tuple[str, ...]
    """The classes standing in for ImageNet-R's 200 (real ImageNet-R wnids); partly shared with ``a_wnids``."""
    expected_counts: dict[str, dict[str, int]]
    """Domain id -> wnid -> number of image files written."""
    quirks: dict[str, Path]
    """Defects of the real data reproduced, -> the file carrying it: ``cmyk`` (a CMYK JPEG), ``png-as-jpeg``
    (a PNG file named .JPEG), ``broken-exif`` (a JPEG with a corrupt EXIF block) in train; ``near-black``
    (an almost black image) in Sketch."""


# ---------------------------------------------------------------------------------------------------------
# Class looks: a shape in unit coordinates (polygons, y pointing down) and a colour.


def _regular(
    n: int, radius: float = 1.0, phase: float = -90.0, centre: tuple[float, float] = (0.0, 0.0)
) -> _Polygon:
    cx, cy = centre
    return [
        (cx + radius * math.cos(math.radians(phase + 360.0 * k / n)),
         cy + radius * math.sin(math.radians(phase + 360.0 * k / n)))
        for k in range(n)
    ]


def _star() -> _Polygon:
    outer = _regular(5)
    inner = _regular(5, 0.42, -90.0 + 36.0)
    return [p for pair in zip(outer, inner) for p in pair]


def _box(x0: float, y0: float, x1: float, y1: float) -> _Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


_SHAPES: dict[str, list[_Polygon]] = {
    "disc": [_regular(40)],
    "square": [_box(-0.8, -0.8, 0.8, 0.8)],
    "triangle": [_regular(3)],
    "star": [_star()],
    "cross": [[(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
               (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]],
    "diamond": [[(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]],
    "hexagon": [_regular(6, phase=0.0)],
    "bars": [_box(-0.9, y - 0.16, 0.9, y + 0.16) for y in (-0.6, 0.0, 0.6)],
    "dots": [_regular(24, 0.34, 0.0, (c, c)) for c in (-0.62, 0.0, 0.62)],
    "arrow": [[(-1, -0.22), (0.15, -0.22), (0.15, -0.65), (1, 0), (0.15, 0.65), (0.15, 0.22), (-1, 0.22)]],
    "chevron": [[(-0.9, -0.9), (-0.35, -0.9), (0.55, 0), (-0.35, 0.9), (-0.9, 0.9), (0.0, 0)]],
    "tee": [[(-0.95, -0.9), (0.95, -0.9), (0.95, -0.45), (0.22, -0.45), (0.22, 0.95), (-0.22, 0.95),
             (-0.22, -0.45), (-0.95, -0.45)]],
}


@dataclass(frozen=True)
class _Look:
    shape: str
    colour: tuple[float, float, float]


def _looks(wnids: tuple[str, ...]) -> dict[str, _Look]:
    shapes = list(_SHAPES)
    looks = {}
    for i, wnid in enumerate(wnids):
        hue = (i * 5 % len(wnids)) / len(wnids)  # neighbours in wnid order get far-apart hues
        looks[wnid] = _Look(shapes[i % len(shapes)], colorsys.hsv_to_rgb(hue, 0.85, 0.9))
    return looks


# ---------------------------------------------------------------------------------------------------------
# Drawing. Arrays are float32, height x width x channels, values in 0..1.


@dataclass(frozen=True)
class _Pose:
    cx: float
    cy: float
    scale: float
    angle: float

    @staticmethod
    def draw(rng: np.random.Generator, size: int, max_angle: float) -> _Pose:
        return _Pose(
            cx=size * rng.uniform(0.4, 0.6),
            cy=size * rng.uniform(0.4, 0.6),
            scale=size * rng.uniform(0.26, 0.34),
            angle=math.radians(rng.uniform(-max_angle, max_angle)),
        )

    def place(self, polygon: _Polygon, factor: int, wobble: np.ndarray | None = None) -> _Polygon:
        """The polygon moved into the image, in pixels times ``factor``, its corners shaken by ``wobble``."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        points = []
        for k, (x, y) in enumerate(polygon):
            if wobble is not None:
                # An unsteady hand: offsets interpolated around the outline from a few random ones.
                t = k * len(wobble) / len(polygon)
                lo, frac = int(t), t - int(t)
                dx, dy = (1 - frac) * wobble[lo] + frac * wobble[(lo + 1) % len(wobble)]
                x, y = x + dx, y + dy
            points.append(
                (factor * (self.cx + self.scale * (cos * x - sin * y)),
                 factor * (self.cy + self.scale * (sin * x + cos * y)))
            )
        return points


def _mask(shape: str, pose: _Pose, size: int, *, outline: float = 0.0, dilate: float = 0.0,
          wobble: np.ndarray | None = None) -> np.ndarray:
    """Anti-aliased coverage (size x size) of the shape filled, or of its outline ``outline`` px wide."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in _SHAPES[shape]:
        points = pose.place(polygon, _SUPERSAMPLE, wobble)
        if outline or dilate:
            width = max(1, round((outline or dilate) * _SUPERSAMPLE))
            draw.line([*points, points[0]], fill=255, width=width, joint="curve")
        if not outline:
            draw.polygon(points, fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 3) -> np.ndarray:
    """Low-frequency noise in -1..1: a coarse random grid scaled up smoothly."""
    grid = rng.uniform(0, 255, (cells, cells, channels)).astype(np.uint8)
    mode = "RGB" if channels == 3 else "L"
    up = Image.fromarray(grid if channels == 3 else grid[:, :, 0], mode).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    out = np.asarray(up, dtype=np.float32) / 127.5 - 1.0
    return out if channels == 3 else out[:, :, None]


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear ramp 0..1 (size x size x 1) in a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    ramp = math.cos(angle) * (xs - 0.5) + math.sin(angle) * (ys - 0.5)
    return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)


def _blend(below: np.ndarray, above: np.ndarray | tuple[float, ...], coverage: np.ndarray) -> np.ndarray:
    return below * (1.0 - coverage[:, :, None]) + np.asarray(above, dtype=np.float32) * coverage[:, :, None]


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


def _photo(look: _Look, rng: np.random.Generator, size: int) -> np.ndarray:
    """A shaded object in front of a textured, lit background, with sensor noise."""
    c0, c1 = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    ramp = _gradient(rng, size)[:, :, None]
    background = c0 * (1 - ramp) + c1 * ramp + 0.08 * _smooth_noise(rng, size, 6)
    background += 0.05 * _smooth_noise(rng, size, max(size // 4, 2))
    pose = _Pose.draw(rng, size, 15.0)
    coverage = _mask(look.shape, pose, size)
    shadow_pose = _Pose(pose.cx + size * 0.04, pose.cy + size * 0.05, pose.scale, pose.angle)
    shadow = np.asarray(
        Image.fromarray((_mask(look.shape, shadow_pose, size) * 255).astype(np.uint8), "L").filter(
            ImageFilter.GaussianBlur(size / 40)
        ),
        dtype=np.float32,
    ) / 255.0
    image = background * (1.0 - 0.45 * shadow[:, :, None])
    light = 0.6 + 0.55 * (1.0 - _gradient(rng, size))  # one side of the object lit, the other in shade
    shaded = np.asarray(look.colour, dtype=np.float32) * light[:, :, None] + 0.04 * _smooth_noise(rng, size, 8)
    image = image * (1.0 - coverage[:, :, None]) + shaded * coverage[:, :, None]
    return image + rng.normal(0.0, 0.025, image.shape).astype(np.float32)


def _adversarial(look: _Look, rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo made hard: colour cast, occluders, blur and strong noise."""
    image = _photo(look, rng, size)
    image = image * rng.uniform(0.6, 1.4, 3) + rng.uniform(-0.2, 0.2, 3)
    for _ in range(int(rng.integers(1, 3))):
        w, h = (rng.uniform(0.2, 0.45, 2) * size).astype(int)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        texture = 0.15 * _smooth_noise(rng, size, 4)[y : y + h, x : x + w]
        image[y : y + h, x : x + w] = rng.uniform(0, 1, 3) + texture
    blurred = _to_image(image).filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.6) * size / 64))
    image = np.asarray(blurred, dtype=np.float32) / 255.0
    return image + rng.normal(0.0, 0.14, image.shape).astype(np.float32)


def _rendition(look: _Look, rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    """A flat, drawn rendition of the object in one of the RENDITIONS styles."""
    pose = _Pose.draw(rng, size, 25.0)
    colour = np.asarray(look.colour, dtype=np.float32)
    fill = _mask(look.shape, pose, size)
    ones = np.ones((size, size, 3), dtype=np.float32)
    if style == "cartoon":
        image = ones * rng.uniform(0.75, 1.0, 3)
        image = _blend(image, colour, fill)
        return _blend(image, (0.05, 0.05, 0.05), _mask(look.shape, pose, size, outline=size / 22))
    if style == "sticker":
        image = ones * rng.uniform(0.3, 0.7, 3)
        border = _mask(look.shape, pose, size, dilate=size / 9)
        image = _blend(image, (1.0, 1.0, 1.0), border)
        return _blend(image, colour, fill)
    if style == "graffiti":
        wall = ones * rng.uniform(0.15, 0.3) + 0.06 * _smooth_noise(rng, size, max(size // 3, 2), 1)
        wall[:: max(size // 8, 2)] *= 0.6  # mortar lines
        spray = np.clip(_mask(look.shape, pose, size, dilate=size / 12) * rng.uniform(0, 1.6, (size, size)), 0, 1)
        image = _blend(wall, colour * 0.8, spray)
        return _blend(image, np.minimum(colour * 1.25, 1.0), fill)
    # "art": a painting with blotchy paper, uneven paint and visible colour steps
    paper = ones * rng.uniform(0.55, 0.9, 3) + 0.18 * _smooth_noise(rng, size, 5)
    paint = colour + 0.18 * _smooth_noise(rng, size, 7)
    image = _blend(paper, paint, fill)
    return np.round(image * 5.0) / 5.0


def _sketch(look: _Look, rng: np.random.Generator, size: int) -> np.ndarray:
    """A black pencil outline with a little hatching on white paper; no colour."""
    pose = _Pose.draw(rng, size, 15.0)
    wobble = rng.normal(0.0, 0.04, (7, 2))
    ink = _mask(look.shape, pose, size, outline=rng.uniform(0.8, 1.6) * size / 64, wobble=wobble)
    inside = _mask(look.shape, pose, size)
    hatch = np.zeros((size, size), dtype=np.float32)
    step = max(size // int(rng.integers(6, 10)), 2)
    offset = int(rng.integers(0, step))
    ys, xs = np.mgrid[0:size, 0:size]
    hatch[(xs + ys + offset) % step == 0] = 0.5
    tone = np.clip(ink + hatch * inside, 0.0, 1.0)
    paper = rng.uniform(0.95, 1.0)
    grey = paper * (1.0 - tone) + 0.02 * rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    return np.repeat(grey[:, :, None], 3, axis=2)


# ---------------------------------------------------------------------------------------------------------
# Encoding.


def _jpeg(image: Image.Image, **extra: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **_JPEG, **extra)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _safe_name(name: str) -> str:
    return name.replace("/", " ").replace("  ", " ")


# ---------------------------------------------------------------------------------------------------------
# The six releases as {relative path: bytes}.

_QUIRKS: dict[str, tuple[str, str]] = {
    "cmyk": ("imagenet", MINI_WNIDS[0]),
    "png-as-jpeg": ("imagenet", MINI_WNIDS[1]),
    "broken-exif": ("imagenet", MINI_WNIDS[2]),
    "near-black": ("imagenet-sketch", MINI_WNIDS[3]),
}
"""Defect -> (domain, wnid) whose first image carries it."""

# Domain -> drawing style, called with (class look, generator, image size, image number within the class).
_STYLES: dict[str, Callable[[_Look, np.random.Generator, int, int], np.ndarray]] = {
    "imagenet": lambda look, rng, size, i: _photo(look, rng, size),
    "imagenet-val": lambda look, rng, size, i: _photo(look, rng, size),
    "imagenetv2": lambda look, rng, size, i: _photo(look, rng, size),
    "imagenet-a": lambda look, rng, size, i: _adversarial(look, rng, size),
    "imagenet-r": lambda look, rng, size, i: _rendition(look, rng, size, RENDITIONS[i % len(RENDITIONS)]),
    "imagenet-sketch": lambda look, rng, size, i: _sketch(look, rng, size),
}


def _encode(image: Image.Image, quirk: str | None) -> bytes:
    if quirk == "cmyk":
        return _jpeg(image.convert("CMYK"))
    if quirk == "png-as-jpeg":
        return _png(image)
    if quirk == "broken-exif":
        return _jpeg(image, exif=_BROKEN_EXIF)
    if quirk == "near-black":
        return _jpeg(Image.eval(image, lambda v: v // 128))
    return _jpeg(image)


@functools.cache
def _real_names(table: str) -> Mapping[str, list[str]]:
    """Sorted real file stems per miniature class: ``"val"`` file names or ``"v2"`` ImageNetV2 image ids."""
    labels = val_labels() if table == "val" else imagenetv2_labels()
    groups: dict[str, list[str]] = {w: [] for w in MINI_WNIDS}
    for name in sorted(labels):
        if labels[name] in groups:
            groups[labels[name]].append(name)
    return groups


def _file_names(domain: str, wnid: str, n: int, rng: np.random.Generator) -> list[str]:
    """The ``n`` file paths of class ``wnid`` inside the domain's release folder, named as the release does."""
    if domain == "imagenet":
        numbers = sorted(int(k) for k in rng.choice(np.arange(1, 20_000), n, replace=False))
        return [f"{wnid}/{wnid}_{k}.JPEG" for k in numbers]
    if domain == "imagenet-val":
        return _real_names("val")[wnid][:n]
    if domain == "imagenetv2":
        return [f"{load_taxonomy().index(wnid)}/{i}.jpeg" for i in _real_names("v2")[wnid][:n]]
    if domain == "imagenet-a":
        return _adversarial_names(rng, load_taxonomy().names, wnid, n)
    if domain == "imagenet-r":
        return [f"{wnid}/{RENDITIONS[i % len(RENDITIONS)]}_{i}.jpg" for i in range(n)]
    return [f"{wnid}/sketch_{i}.JPEG" for i in range(n)]


def _adversarial_names(rng: np.random.Generator, names: Mapping[str, str], wnid: str, n: int) -> list[str]:
    """ImageNet-A style names: ``<score>_<predicted name> _ <true name>_<score>.jpg`` (with spaces)."""
    others = [w for w in MINI_WNIDS if w != wnid]
    result: list[str] = []
    while len(result) < n:
        predicted = others[int(rng.integers(len(others)))]
        name = (
            f"{wnid}/{rng.uniform(0, 0.01):.6f}_{_safe_name(names[predicted])} _ "
            f"{_safe_name(names[wnid])}_{rng.uniform(0.5, 1):.6f}.jpg"
        )
        if name not in result:
            result.append(name)
    return result


def _release_files(
    seed: int, size: int, counts: Mapping[str, Mapping[str, int]]
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every file of the miniature set (POSIX path under the set's root -> bytes), and which carry quirks."""
    looks = _looks(MINI_WNIDS)
    quirk_at = {place: quirk for quirk, place in _QUIRKS.items()}
    files: dict[str, bytes] = {}
    quirks: dict[str, str] = {}
    for domain, per_class in counts.items():
        d = _DOMAIN_KEYS[domain]
        for wnid, n in per_class.items():
            c = MINI_WNIDS.index(wnid)
            # One generator per image, keyed by (seed, domain, class, image): no image depends on another.
            names = _file_names(domain, wnid, n, _rng(seed, d, c, 1_000_000))
            for i, name in enumerate(names):
                pixels = _STYLES[domain](looks[wnid], _rng(seed, d, c, i), size, i)
                quirk = quirk_at.get((domain, wnid)) if i == 0 else None
                path = f"{FOLDERS[domain]}/{name}"
                files[path] = _encode(_to_image(pixels), quirk)
                if quirk:
                    quirks[quirk] = path
    for domain in ("imagenet-a", "imagenet-r"):
        files[f"{FOLDERS[domain]}/README.txt"] = (
            f"{DOMAINS[domain].release}: a miniature synthetic stand-in with the official folder layout, "
            f"{len(counts[domain])} classes.\nImages are drawn procedurally; only the folder and file names "
            "follow the real release.\n"
        ).encode("utf-8")
    return files, quirks


def _counts(
    images_per_class: Mapping[str, int] | None, a_wnids: tuple[str, ...], r_wnids: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    per_class = dict(DEFAULT_IMAGES_PER_CLASS)
    for domain, n in (images_per_class or {}).items():
        get_domain(domain)
        limit = _REAL_LIMITS.get(domain)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (limit is not None and n > limit):
            upper = f" and at most {limit} (the real release has {limit} per class)" if limit else ""
            raise ImageNetDGError(
                f"images_per_class[{domain!r}] = {n!r}: expected an integer of at least 1{upper}"
            )
        per_class[domain] = n
    class_sets = {"imagenet-a": a_wnids, "imagenet-r": r_wnids}
    counts = {}
    for domain, n in per_class.items():
        counts[domain] = {w: n for w in class_sets.get(domain, MINI_WNIDS)}
    counts["imagenet-sketch"][_SKETCH_EXTRA_WNID] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------
# Writing.


def _existing_files(out: Path) -> set[str]:
    found = set()
    for folder, _, names in os.walk(out):
        for name in names:
            found.add((Path(folder) / name).relative_to(out).as_posix())
    return found


def _write_new(out: Path, files: Mapping[str, bytes]) -> None:
    """Write the whole set beside ``out`` and rename it into place, so ``out`` is never half written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for relative, data in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        os.chmod(staging, 0o755)
        os.replace(staging, out)  # replaces ``out`` when it is an empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _refresh(out: Path, files: Mapping[str, bytes]) -> None:
    """Bring a previous set made with the same settings back to exactly ``files``, rewriting what differs."""
    extra = sorted(_existing_files(out) - set(files))
    if extra:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        raise OutputExistsError(
            f"{out} holds a miniature set but also files it would not write: {shown}. "
            "They would change what a scan finds; remove them or choose another folder."
        )
    for relative, data in files.items():
        target = out / relative
        if not target.is_file() or target.read_bytes() != data:
            write_bytes_atomic(target, data)


def make_mini_releases(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    image_size: int = 64,
    images_per_class: Mapping[str, int] | None = None,
) -> MiniReleases:
    """Write the six releases in miniature under ``out`` in their official layouts, and say what they hold.

    ``images_per_class`` overrides DEFAULT_IMAGES_PER_CLASS per domain id. The same settings give
    byte-identical files. ``out`` must be missing, empty, or a miniature set written before: one made with
    the same settings is brought back to exactly its files (nothing else is touched), one made with other
    settings or any other non-empty folder is refused with OutputExistsError.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ImageNetDGError(f"seed = {seed!r}: expected a non-negative integer")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ImageNetDGError(f"image_size = {image_size!r}: expected an integer of at least 16 (pixels)")
    taxonomy = load_taxonomy()
    a_wnids = tuple(w for w in MINI_WNIDS if w in set(taxonomy.imagenet_a))
    r_wnids = tuple(w for w in MINI_WNIDS if w in set(taxonomy.imagenet_r))
    counts = _counts(images_per_class, a_wnids, r_wnids)
    settings = {
        "generator": "imagenet_dg.mini",
        "version": _FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "images_per_class": {d: counts[d] for d in DOMAINS},
    }
    marker = (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode("utf-8")
    out = Path(os.path.abspath(os.fspath(out)))
    if out.is_symlink():
        out = out.resolve()  # the set is renamed into place, which would replace a link rather than fill it
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; expected a missing or empty folder for the miniature set")
    previous = out.is_dir() and any(out.iterdir())
    if previous and not (out / MARKER).is_file():
        raise OutputExistsError(
            f"{out} is not empty and holds no {MARKER}, so it is not a miniature set written before; "
            "refusing to write into it. Choose a new or empty folder."
        )
    if previous and (out / MARKER).read_bytes() != marker:
        raise OutputExistsError(
            f"{out} holds a miniature set made with other settings than seed={seed}, image_size={image_size}, "
            f"images_per_class={dict(images_per_class or {})} (see {out / MARKER}). "
            "Delete that folder or choose another one."
        )
    files, quirks = _release_files(seed, image_size, counts)
    files[MARKER] = marker
    if previous:
        _refresh(out, files)
    else:
        _write_new(out, files)
    return MiniReleases(
        root=out,
        paths={d: out / FOLDERS[d] for d in DOMAINS},
        wnids=MINI_WNIDS,
        a_wnids=a_wnids,
        r_wnids=r_wnids,
        expected_counts=counts,
        quirks={kind: out / path for kind, path in quirks.items()},
    )
