"""Miniature synthetic releases of the six ImageNet-DG domains, in their exact official layouts.

Twelve real wnids drawn from the miniature world (:mod:`imagenet_dg.world`), so that the whole pipeline
(discovery, scanning, splitting, export, training and scoring a tiny CLIP) runs offline in seconds on data
that behaves like the real thing: the same folder and file names, the same label tables, the same defects,
and domains that really look different while the classes keep their structure in all of them.

Sizes follow the protocol and the releases: ILSVRC-2012 train and ImageNet-Sketch hold at least 40 images per
class, so that both halves of a class hold more than 16 and the 16-shot draws of different seeds differ
(Sketch gives one class one image more, as the release does); ImageNetV2 holds exactly 10 per class, as the
release does (its real image ids are used as file names, and its pools hold 5, fewer than k, as in the real
benchmark); the targets are sized per class like their releases relative to each other (A : val : R =
37.5 : 50 : 150 images per class in the releases, 15 : 20 : 60 here).

The drawing styles: photographs for ILSVRC-2012 train and val, slightly harder photographs (more clutter,
softer) for ImageNetV2, corrupted and occluded photographs for ImageNet-A, renditions (art, cartoon,
graffiti, sticker, tattoo, toy) for ImageNet-R, pencil sketches for ImageNet-Sketch.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imagenet_dg.atomic import write_bytes_atomic
from imagenet_dg.disk import reporting_write_faults
from imagenet_dg.domains import DOMAINS, get_domain
from imagenet_dg.errors import ImageNetDGError, OutputExistsError
from imagenet_dg.mini_suites import MARKER as SUITE_MARKER
from imagenet_dg.taxonomy import imagenetv2_labels, load_taxonomy, val_labels
from imagenet_dg.world import RENDITIONS, draw

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
    "imagenet": 48,
    "imagenet-val": 20,
    "imagenet-a": 15,
    "imagenet-r": 60,
    "imagenet-sketch": 40,
    "imagenetv2": 10,
}
"""Images per class and domain unless overridden; Sketch gives one class one image more."""

STYLE_OF_DOMAIN: Mapping[str, str] = {
    "imagenet": "photo",
    "imagenet-val": "photo",
    "imagenetv2": "photo-v2",
    "imagenet-a": "adversarial",
    "imagenet-sketch": "sketch",
}
"""Domain id -> the world style it is drawn in; ImageNet-R cycles through the RENDITIONS styles."""

FOLDERS: Mapping[str, str] = {domain.id: domain.folder for domain in DOMAINS.values()}
"""Domain id -> the official folder name its release extracts to."""

MARKER = "mini-releases.json"
"""File that marks a folder as a miniature set and records the settings that made it."""

HASHES = "mini-releases.sha256.json"
"""File recording the SHA-256 of every file of the set as written, so that a rerun draws only what changed."""

_SKETCH_EXTRA_WNID = "n01443537"  # ImageNet-Sketch has 51 images in some classes instead of 50
_REAL_LIMITS = {"imagenet-val": 50, "imagenetv2": 10}  # real file names available per class
_FORMAT_VERSION = 2
_JPEG = {"format": "JPEG", "quality": 90, "subsampling": "4:2:0", "optimize": False}
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

def _style(domain: str, i: int) -> str:
    """The world style of image number ``i`` of a class in ``domain``."""
    return RENDITIONS[i % len(RENDITIONS)] if domain == "imagenet-r" else STYLE_OF_DOMAIN[domain]


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
) -> tuple[dict[str, Callable[[], bytes]], dict[str, str]]:
    """Every file of the miniature set (POSIX path under the set's root -> a function making its bytes, so that
    a rerun draws only what it must), and which carry quirks."""
    names_of = load_taxonomy().names
    quirk_at = {place: quirk for quirk, place in _QUIRKS.items()}
    files: dict[str, Callable[[], bytes]] = {}
    quirks: dict[str, str] = {}
    for domain, per_class in counts.items():
        d = _DOMAIN_KEYS[domain]
        for wnid, n in per_class.items():
            c = MINI_WNIDS.index(wnid)
            # One generator per image, keyed by (seed, domain, class, image): no image depends on another.
            names = _file_names(domain, wnid, n, _rng(seed, d, c, 1_000_000))
            for i, name in enumerate(names):
                quirk = quirk_at.get((domain, wnid)) if i == 0 else None
                path = f"{FOLDERS[domain]}/{name}"
                files[path] = functools.partial(
                    _picture, names_of[wnid], _style(domain, i), (seed, d, c, i), size, quirk
                )
                if quirk:
                    quirks[quirk] = path
    for domain in ("imagenet-a", "imagenet-r"):
        readme = (
            f"{DOMAINS[domain].release}: a miniature synthetic stand-in with the official folder layout, "
            f"{len(counts[domain])} classes.\nImages are drawn procedurally; only the folder and file names "
            "follow the real release.\n"
        ).encode("utf-8")
        files[f"{FOLDERS[domain]}/README.txt"] = functools.partial(bytes, readme)
    return files, quirks


def _picture(concept: str, style: str, seed: tuple[int, ...], size: int, quirk: str | None) -> bytes:
    return _encode(draw(concept, style, seed, size), quirk)


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
    """Every file under ``out``, but those of miniature standard suites written inside it by
    :func:`imagenet_dg.mini_suites.make_mini_suite` (the harness keeps ``mini-pacs/`` beside the releases):
    their folders hold that generator's marker, and they are no release a scan of ``out`` could mistake."""
    found = set()
    for folder, subfolders, names in os.walk(out):
        if Path(folder) != out and SUITE_MARKER in names:
            subfolders.clear()
            continue
        for name in names:
            found.add((Path(folder) / name).relative_to(out).as_posix())
    return found


def _umask() -> int:
    """The process umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_new(out: Path, files: Mapping[str, Callable[[], bytes]]) -> None:
    """Write the whole set beside ``out`` and rename it into place, so ``out`` is never half written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hashes = {}
        for relative, make in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            data = make()
            target.write_bytes(data)
            hashes[relative] = hashlib.sha256(data).hexdigest()
        (staging / HASHES).write_bytes((json.dumps(dict(sorted(hashes.items())), indent=0, sort_keys=True)
                                        + "\n").encode("utf-8"))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp gives 0700; the set gets what mkdir would give
        os.replace(staging, out)  # replaces ``out`` when it is an empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _refresh(out: Path, files: Mapping[str, Callable[[], bytes]]) -> None:
    """Bring a previous set made with the same settings back to exactly ``files``, rewriting what differs.

    A file whose SHA-256 is the one :data:`HASHES` recorded when the set was written is kept without drawing it
    again; any other (altered, missing, or with no recorded hash) is made again and rewritten if it differs.
    """
    extra = sorted(_existing_files(out) - set(files) - {HASHES})
    if extra:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        raise OutputExistsError(
            f"{out} holds a miniature set but also files it would not write: {shown}. "
            "They would change what a scan finds; remove them or choose another folder."
        )
    recorded = _recorded_hashes(out)
    for relative, make in files.items():
        target = out / relative
        if target.is_file() and recorded.get(relative) == hashlib.sha256(target.read_bytes()).hexdigest():
            continue
        data = make()
        if not target.is_file() or target.read_bytes() != data:
            write_bytes_atomic(target, data)
    _write_hashes(out, files)


def _recorded_hashes(out: Path) -> dict[str, str]:
    try:
        recorded = json.loads((out / HASHES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _write_hashes(out: Path, files: Mapping[str, Callable[[], bytes]]) -> None:
    hashes = {relative: hashlib.sha256((out / relative).read_bytes()).hexdigest() for relative in sorted(files)}
    data = (json.dumps(hashes, indent=0, sort_keys=True) + "\n").encode("utf-8")
    if not (out / HASHES).is_file() or (out / HASHES).read_bytes() != data:
        write_bytes_atomic(out / HASHES, data)


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
    files[MARKER] = functools.partial(bytes, marker)
    with reporting_write_faults(out, "the miniature releases"):
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


class MiniNotChosenError(ImageNetDGError):
    """No release was given and the miniature synthetic set was not asked for (or asked for beside releases)."""


def choose_releases(
    given: Mapping[str, os.PathLike[str] | str | None],
    root: os.PathLike[str] | str | None,
    *,
    mini: bool,
    mini_dir: os.PathLike[str] | str,
) -> tuple[dict[str, Path], Path | None, MiniReleases | None]:
    """The release folders a command reads: those given (``given`` by domain id, ``root`` to search), or the
    miniature synthetic set, written (or reused) in ``mini_dir``, when ``mini`` asks for it.

    There is no fallback: with nothing given and ``mini`` false, and with ``mini`` beside given releases,
    MiniNotChosenError says what to give. Returns the paths by domain, the root to search (None for the
    miniature set) and the miniature set itself (None for real releases).
    """
    paths = {d: Path(p) for d, p in given.items() if p is not None}
    if mini:
        if paths or root is not None:
            named = ", ".join([f"--{d}" for d in paths] + (["--root"] if root is not None else []))
            raise MiniNotChosenError(
                f"--mini reads the miniature synthetic releases, but {named} also name releases; "
                "give either --mini or the release folders, not both"
            )
        releases = make_mini_releases(mini_dir)
        return dict(releases.paths), None, releases
    if not paths and root is None:
        raise MiniNotChosenError(
            "no release given: give --root DIR (a folder holding the releases) or the release folders "
            "(--imagenet, --imagenet-val, --imagenet-a, --imagenet-r, --imagenet-sketch, --imagenetv2); "
            f"or --mini to use the miniature synthetic releases (written in {mini_dir}; never scored as real data)"
        )
    return paths, Path(root) if root is not None else None, None
