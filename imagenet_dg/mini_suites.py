"""Miniature standard suites: synthetic pictures in the exact folder layouts DomainBed's download leaves.

``mini-pacs`` has PACS's four domain folders and its seven real class folders; the other miniatures keep a few
of their suite's real class folder names (see :data:`imagenet_dg.suites.MINIATURE_CLASSES`). Each image is
one picture of the synthetic world (:mod:`imagenet_dg.world`, which has a concept for every one of these
classes): the class drawn in its domain's style, from a seed, then resized to a size drawn per image, so
loaders meet varied sizes as on the real suites. File names follow each suite's own naming. The same settings
give byte-identical files, in seconds.

A layout *variant* writes the suite under another accepted folder name (``kfold/`` for PACS,
``OfficeHomeDataset_10072016/`` with ``Real World``, ...), so discovery can be tested on every one.

The suite folder carries ``mini-suite.json`` (the settings that made it): builds read it and record the data
as synthetic, whatever suite name they are asked for.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imagenet_dg.atomic import write_bytes_atomic
from imagenet_dg.disk import reporting_write_faults
from imagenet_dg.errors import ImageNetDGError, OutputExistsError
from imagenet_dg.protocols import fewshot_test_size
from imagenet_dg.suites import Suite, get_suite, prompt_name
from imagenet_dg.world import draw

MARKER = "mini-suite.json"
"""File in a miniature suite's folder recording the settings that wrote it."""

_FORMAT_VERSION = 1
_JPEG = {"format": "JPEG", "quality": 90, "subsampling": "4:2:0", "optimize": False}

MIN_TEST_IMAGES = 101
"""Test images every target of a miniature suite holds at least by default (its fewshot test part), so that
one image moves a target's accuracy by under one point."""


def default_images_per_class(suite: Suite) -> int:
    """Images per class and domain unless asked otherwise: the fewest that give each target's fewshot test part
    (20% of each class, rounded) :data:`MIN_TEST_IMAGES` images: 73 for the seven PACS classes, 103 for five, 128 for
    four."""
    n = 1
    while fewshot_test_size(n) * len(suite.classes) < MIN_TEST_IMAGES:
        n += 1
    return n


SIZE_RANGE = (40, 112)
"""Widths and heights are drawn uniformly from this range (pixels, inclusive)."""

VARIANTS: Mapping[str, Mapping[str, tuple[str, Mapping[str, str]]]] = {
    # suite -> variant -> (suite folder name, domain id -> domain folder name where it differs from the id)
    "pacs": {"domainbed": ("PACS", {}), "kfold": ("kfold", {})},
    "vlcs": {"domainbed": ("VLCS", {}), "lowercase": ("vlcs", {})},
    "officehome": {
        "domainbed": ("office_home", {"Real_World": "Real World"}),
        "official": ("OfficeHomeDataset_10072016", {"Real_World": "Real World"}),
        "underscore": ("office_home", {}),
    },
    "terraincognita": {"domainbed": ("terra_incognita", {}), "camelcase": ("TerraIncognita", {})},
    "domainnet": {"domainbed": ("domain_net", {}), "camelcase": ("DomainNet", {})},
}
"""The layouts each miniature can be written in; ``domainbed`` is the default."""

def draw_picture(class_id: str, domain: str, seed: tuple[int, ...], size: int) -> Image.Image:
    """One square picture of ``class_id`` in the style of ``domain``: the single point where the miniature
    suites meet the world's drawing. The world has a concept for every miniature class, named as the class's
    prompt says it (``Alarm_Clock`` is drawn as the concept ``Alarm Clock``)."""
    return draw(prompt_name(class_id), domain, seed, size)


@dataclass(frozen=True)
class MiniSuite:
    """Where a miniature suite was written and what it holds."""

    suite: str
    """Registered name, e.g. ``mini-pacs``."""
    root: Path
    """The folder to give as ``--root`` (it holds the suite folder)."""
    folder: Path
    """The suite folder (``root/PACS``, ...)."""
    variant: str
    counts: Mapping[str, Mapping[str, int]]
    """Domain id -> class id -> images written."""


def _key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _file_name(suite: str, domain: str, class_index: int, number: int, rng: np.random.Generator) -> str:
    """A file name in the suite's own style."""
    if suite == "pacs":
        return f"pic_{number + 1:03d}.jpg" if domain != "photo" else f"{class_index:03d}_{number + 1:04d}.jpg"
    if suite == "officehome":
        return f"{number + 1:05d}.jpg"
    if suite == "domainnet":
        return f"{domain}_{class_index + 1:03d}_{number + 1:06d}.jpg"
    # VLCS and TerraIncognita copies carry random hexadecimal names (uuid-like); the rng keeps them fixed.
    digits = "".join(f"{v:02x}" for v in rng.integers(0, 256, 16))
    if suite == "terraincognita":
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}.jpg"
    return f"{digits}.jpg"


def _files(suite: Suite, variant: str, seed: int, images_per_class: int) -> tuple[dict[str, bytes], dict]:
    base = suite.miniature_of or suite.name
    folder_name, renamed = VARIANTS[base][variant]
    files: dict[str, bytes] = {}
    counts: dict[str, dict[str, int]] = {}
    for domain in suite.domains:
        domain_folder = renamed.get(domain.id, domain.id)
        counts[domain.id] = {}
        for class_id in suite.classes:
            real_index = get_suite(base).classes.index(class_id)
            rng = np.random.default_rng([seed, _key(base), _key(domain.id), _key(class_id)])
            for number in range(images_per_class):
                width, height = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
                picture = draw_picture(class_id, domain.id, (seed, _key(domain.id), real_index, number), 64)
                buffer = io.BytesIO()
                picture.resize((width, height), Image.Resampling.BICUBIC).save(buffer, **_JPEG)
                name = _file_name(base, domain.id, real_index, number, rng)
                files[f"{folder_name}/{domain_folder}/{class_id}/{name}"] = buffer.getvalue()
            counts[domain.id][class_id] = images_per_class
    return files, counts


def make_mini_suite(
    name: str,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    images_per_class: int | None = None,
    variant: str = "domainbed",
) -> MiniSuite:
    """Write the miniature suite ``name`` (``mini-pacs`` or ``pacs`` ...) under the root folder ``out``.

    ``images_per_class`` defaults to :func:`default_images_per_class`. The suite folder (``out/PACS`` ...) must
    be missing or hold a miniature written before with the same settings, which is then left as it is; anything
    else there is refused with OutputExistsError. The folder is written beside its final place and renamed into
    it, so an interrupted run leaves nothing half-written.
    """
    suite = get_suite(name if name.startswith("mini-") else f"mini-{name}")
    base = suite.miniature_of or suite.name
    if variant not in VARIANTS[base]:
        raise ImageNetDGError(f"{suite.name} has no layout variant {variant!r}; expected one of {', '.join(VARIANTS[base])}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ImageNetDGError(f"seed = {seed!r}: expected a non-negative integer")
    if images_per_class is None:
        images_per_class = default_images_per_class(suite)
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ImageNetDGError(f"images_per_class = {images_per_class!r}: expected a positive integer")
    root = Path(os.path.abspath(os.fspath(out)))
    folder_name, _ = VARIANTS[base][variant]
    folder = root / folder_name
    settings = {
        "generator": "imagenet_dg.mini_suites",
        "version": _FORMAT_VERSION,
        "suite": suite.name,
        "variant": variant,
        "seed": seed,
        "images_per_class": images_per_class,
        "synthetic": True,
    }
    marker = (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode("utf-8")
    counts = {d: {c: images_per_class for c in suite.classes} for d in suite.domain_ids}
    if folder.exists():
        if (folder / MARKER).is_file() and (folder / MARKER).read_bytes() == marker:
            return MiniSuite(suite.name, root, folder, variant, counts)
        raise OutputExistsError(
            f"{folder} already exists and is not {suite.name} written with these settings (see "
            f"{folder / MARKER} if present); choose another --out or delete that folder"
        )
    files, counts = _files(suite, variant, seed, images_per_class)
    staging = root / f".{folder_name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # our own leftover of an interrupted run
    # The staging folder is renamed into place only when complete: that rename is the atomic step, so the
    # files inside need no rename (nor an fsync) of their own.
    with reporting_write_faults(folder, f"the miniature {suite.name}"):
        for relative, data in files.items():
            target = staging / relative.split("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    write_bytes_atomic(staging / MARKER, marker)
    os.replace(staging, folder)
    return MiniSuite(suite.name, root, folder, variant, counts)


def is_miniature(folder: str | os.PathLike[str]) -> bool:
    """Whether a suite folder was written by :func:`make_mini_suite` (it holds :data:`MARKER`)."""
    return (Path(folder) / MARKER).is_file()
