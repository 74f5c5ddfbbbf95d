"""Readers of the official on-disk layouts of the six ImageNet-DG domains, and finding them on disk.

A release folder becomes a table of image paths (POSIX, relative to the folder that holds the class folders)
and their wnids. Only image files count (``.jpeg``, ``.jpg``, ``.png``, any case); hidden entries and other
files (``README.txt``, ``classnames.txt``) are ignored. Every table is sorted by path in plain string order,
so nothing depends on the order in which a file system lists a folder.

A folder that looks like a release but holds something unexpected (an unknown class folder, a validation
file the label table does not know, loose images next to class folders) is an error naming what was found:
a silently partial table would shift every count and split downstream.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from imagenet_dg.domains import DOMAINS, get_domain
from imagenet_dg.errors import ReleaseNotFoundError
from imagenet_dg.taxonomy import load_taxonomy, val_labels

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
"""File name endings (compared lower-cased) of the files that count as images."""

COMBINED_TREE = "ImageNet"
"""Name of the combined tree of the reference code: ``ImageNet/{a,i/train,i/val,r,s,v2}/<wnid>/``."""

COMBINED_SUBFOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "imagenet": "i/train",
        "imagenet-val": "i/val",
        "imagenet-a": "a",
        "imagenet-r": "r",
        "imagenet-sketch": "s",
        "imagenetv2": "v2",
    }
)
"""Domain id -> its sub-folder of the combined tree."""

_COMBINED_MARKER = "classnames.txt"
_VAL_PREFIX = "ILSVRC2012_val_"
_INTEGER = re.compile(r"[0-9]+")
_SHOWN = 8  # how many offending or found entries an error message lists


@dataclass(frozen=True, eq=False)
class DomainScan:
    """Every image file of one domain's release, with its wnid."""

    domain: str
    """Domain id (a key of ``imagenet_dg.domains.DOMAINS``)."""
    layout: str
    """Id of the layout that was recognised (a key of ``LAYOUTS``)."""
    root: Path
    """Absolute folder that directly holds the class folders (or the flat val files)."""
    table: pd.DataFrame
    """Columns ``path`` (POSIX, relative to ``root``) and ``wnid``; unique paths sorted in string order."""


@dataclass(frozen=True)
class Layout:
    """One way a domain's release is laid out on disk."""

    id: str
    domain: str
    expected: str
    """One sentence saying what the layout looks like on disk."""
    folder_names: tuple[str, ...]
    """Official folder names (POSIX, possibly several levels) under which the release is found."""
    detect: Callable[[Path], bool]
    """Whether a folder looks like this layout (cheap; reading may still find it broken)."""
    read: Callable[[Path], pd.DataFrame]
    """Table of the folder's images (see ``DomainScan.table``); raises ReleaseNotFoundError on a broken one."""


LAYOUTS: dict[str, Layout] = {}
"""Layout id -> layout, in the order layouts are tried."""


def _register(layout: Layout) -> None:
    if layout.id in LAYOUTS:
        raise ValueError(f"layout {layout.id!r} is defined twice")
    get_domain(layout.domain)
    LAYOUTS[layout.id] = layout


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _shown(names: list[str]) -> str:
    names = sorted(names)
    listed = ", ".join(repr(n) for n in names[:_SHOWN])
    return listed + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _table(paths: list[str], wnids: list[str]) -> pd.DataFrame:
    order = sorted(range(len(paths)), key=paths.__getitem__)
    return pd.DataFrame({"path": [paths[i] for i in order], "wnid": [wnids[i] for i in order]})


# ---------------------------------------------------------------------------------------------------------
# Layouts with one folder per class: the folder name maps to a wnid.


@functools.cache
def _wnid_folders(domain: str) -> Mapping[str, str]:
    return MappingProxyType({w: w for w in DOMAINS[domain].wnids(load_taxonomy())})


@functools.cache
def _index_folders() -> Mapping[str, str]:
    # ImageNetV2 names its folders by the class index in sorted-wnid order, written as a plain integer.
    return MappingProxyType({str(i): w for i, w in enumerate(load_taxonomy().wnids)})


def _has_marker(root: Path) -> bool:
    return (root / _COMBINED_MARKER).is_file()


def _any_folder(root: Path, accept: Callable[[str], bool]) -> bool:
    try:
        with os.scandir(root) as entries:
            return any(not e.name.startswith(".") and accept(e.name) and e.is_dir() for e in entries)
    except OSError:
        return False


def _top_entries(root: Path) -> tuple[list[str], list[str]]:
    """Names of the folders and of the image files directly in ``root``, hidden entries left out."""
    folders: list[str] = []
    images: list[str] = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif _is_image(entry.name):
                images.append(entry.name)
    return folders, images


def _read_class_folders(root: Path, folders: Mapping[str, str], domain: str, what: str) -> pd.DataFrame:
    """Images under ``root/<folder>/``, each labelled ``folders[<folder>]``; any other folder is an error."""
    present, loose = _top_entries(root)
    class_folders = [name for name in present if name in folders]
    unknown = [name for name in present if name not in folders]
    if unknown:
        raise ReleaseNotFoundError(
            f"{root} (domain {domain!r}) holds {len(unknown)} folder(s) that are not {what}: {_shown(unknown)}. "
            f"Expected only {what} as class folders. Check that this is the right release for {domain!r}, "
            "and move the other folders out of it."
        )
    if loose:
        raise ReleaseNotFoundError(
            f"{root} (domain {domain!r}) holds image files beside its class folders: {_shown(loose)}. "
            f"Expected every image inside a class folder ({what}); move them into their class folders."
        )
    paths: list[str] = []
    wnids: list[str] = []
    for folder in class_folders:
        wnid = folders[folder]
        files = [
            f"{folder}/{n}"
            for n in os.listdir(root / folder)
            if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
        ]
        paths.extend(files)
        wnids.extend([wnid] * len(files))
    return _table(paths, wnids)


def _check_sorted_val(root: Path, table: pd.DataFrame) -> None:
    """Validation images sorted into folders must sit in the folder the devkit labels give them."""
    labels = val_labels()
    misplaced = [
        f"{path} (labelled {labels[name]})"
        for path, wnid in zip(table["path"], table["wnid"])
        if (name := path.rpartition("/")[2]) in labels and labels[name] != wnid
    ]
    if misplaced:
        raise ReleaseNotFoundError(
            f"{root} (domain 'imagenet-val') has {len(misplaced)} validation image(s) in the wrong class folder "
            f"according to the ILSVRC-2012 devkit labels: {_shown(misplaced)}. Re-sort the validation images "
            "with the devkit labels, or use the flat official val folder (its labels are built in)."
        )


def _class_folder_layout(
    layout_id: str, domain: str, expected: str, folder_names: tuple[str, ...], *, combined: bool = False
) -> Layout:
    what = f"wnids of the {DOMAINS[domain].class_set} class set"

    def detect(root: Path) -> bool:
        # The combined tree is told apart by the classnames.txt it puts beside the class folders.
        return _has_marker(root) == combined and _any_folder(root, _wnid_folders(domain).__contains__)

    def read(root: Path) -> pd.DataFrame:
        table = _read_class_folders(root, _wnid_folders(domain), domain, what)
        if domain == "imagenet-val":
            _check_sorted_val(root, table)
        return table

    return Layout(layout_id, domain, expected, folder_names, detect, read)


def _detect_index_folders(root: Path) -> bool:
    return not _has_marker(root) and _any_folder(root, _INTEGER.fullmatch)


def _read_index_folders(root: Path) -> pd.DataFrame:
    return _read_class_folders(
        root, _index_folders(), "imagenetv2", "integer class indices 0..999 written without leading zeros"
    )


# ---------------------------------------------------------------------------------------------------------
# The flat ILSVRC-2012 validation folder: labels come from the devkit table shipped with the package.


def _detect_flat_val(root: Path) -> bool:
    try:
        with os.scandir(root) as entries:
            return any(e.name.startswith(_VAL_PREFIX) and _is_image(e.name) and not e.is_dir() for e in entries)
    except OSError:
        return False


def _read_flat_val(root: Path) -> pd.DataFrame:
    labels = val_labels()
    folders, images = _top_entries(root)
    paths = [name for name in images if name in labels]
    wnids = [labels[name] for name in paths]
    unknown = [name for name in images if name not in labels]
    if folders:
        raise ReleaseNotFoundError(
            f"{root} (domain 'imagenet-val') mixes flat validation files with folders: {_shown(folders)}. "
            "Expected either only ILSVRC2012_val_<8 digits>.JPEG files or only <wnid> folders; "
            "finish or undo the sorting into folders."
        )
    if unknown:
        raise ReleaseNotFoundError(
            f"{root} (domain 'imagenet-val') holds {len(unknown)} image file(s) that are not in the ILSVRC-2012 "
            f"validation label table: {_shown(unknown)}. Expected only the 50,000 files "
            "ILSVRC2012_val_00000001.JPEG .. ILSVRC2012_val_00050000.JPEG; remove the others."
        )
    return _table(paths, wnids)


# ---------------------------------------------------------------------------------------------------------
# The registry. Within a domain, layouts are tried in this order.

_register(
    _class_folder_layout(
        "imagenet-train",
        "imagenet",
        "<root>/<wnid>/<wnid>_<n>.JPEG folders for the 1000 ILSVRC-2012 wnids (the official train folder)",
        ("train",),
    )
)
_register(
    Layout(
        "imagenet-val-flat",
        "imagenet-val",
        "<root>/ILSVRC2012_val_<8 digits>.JPEG files side by side, labelled from the devkit table "
        "(the official val folder)",
        ("val",),
        _detect_flat_val,
        _read_flat_val,
    )
)
_register(
    _class_folder_layout(
        "imagenet-val-folders",
        "imagenet-val",
        "<root>/<wnid>/ILSVRC2012_val_<8 digits>.JPEG: the validation images sorted into the 1000 wnid folders",
        ("val",),
    )
)
_register(
    _class_folder_layout(
        "imagenet-a",
        "imagenet-a",
        "<root>/<wnid>/<name>.jpg folders for the 200 ImageNet-A wnids, plus README.txt",
        ("imagenet-a",),
    )
)
_register(
    _class_folder_layout(
        "imagenet-r",
        "imagenet-r",
        "<root>/<wnid>/<rendition>_<n>.jpg folders for the 200 ImageNet-R wnids, plus README.txt",
        ("imagenet-r",),
    )
)
_register(
    _class_folder_layout(
        "imagenet-sketch",
        "imagenet-sketch",
        "<root>/<wnid>/sketch_<n>.JPEG folders for the 1000 ILSVRC-2012 wnids",
        ("sketch", "imagenet-sketch", "ImageNet-Sketch"),
    )
)
_register(
    Layout(
        "imagenetv2-index",
        "imagenetv2",
        "<root>/<k>/<hash>.jpeg folders where <k> is the class index 0..999 in sorted-wnid order "
        "(the official MatchedFrequency tar)",
        ("imagenetv2-matched-frequency-format-val",),
        _detect_index_folders,
        _read_index_folders,
    )
)
_register(
    _class_folder_layout(
        "imagenetv2-wnid",
        "imagenetv2",
        "<root>/<wnid>/<hash>.jpeg folders for the 1000 ILSVRC-2012 wnids",
        ("imagenetv2-matched-frequency-format-val",),
    )
)
for _domain, _sub in COMBINED_SUBFOLDERS.items():
    _register(
        _class_folder_layout(
            f"combined-{_sub.replace('/', '-')}",
            _domain,
            f"{COMBINED_TREE}/{_sub}/<wnid>/<image> folders with a {_COMBINED_MARKER} beside them "
            "(the combined tree of the reference code)",
            (f"{COMBINED_TREE}/{_sub}",),
            combined=True,
        )
    )


# ---------------------------------------------------------------------------------------------------------
# Scanning one domain, finding releases, scanning all of them.


def _absolute(path: str | os.PathLike[str]) -> Path:
    # abspath normalises ".." without resolving symlinks: the root stays the path the user knows.
    return Path(os.path.abspath(os.fspath(path)))


def _layouts_of(domain: str) -> list[Layout]:
    return [layout for layout in LAYOUTS.values() if layout.domain == domain]


def _official_folders(domain: str, base: Path) -> list[Path]:
    """Where under ``base`` the domain's release sits if named officially, ``base`` being any level above it."""
    found: list[Path] = []
    for layout in _layouts_of(domain):
        for name in layout.folder_names:
            parts = name.split("/")
            # A several-level name (ImageNet/i/train) may be entered part-way down (from ImageNet/ or ImageNet/i/).
            for start in range(len(parts)):
                candidate = base.joinpath(*parts[start:])
                if candidate not in found:
                    found.append(candidate)
    return found


def _recognise(domain: str, folder: Path) -> Layout | None:
    return next((layout for layout in _layouts_of(domain) if layout.detect(folder)), None)


def _contents(folder: Path) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is a file, not a folder"
    try:
        with os.scandir(folder) as entries:
            names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    except OSError as error:
        return f"cannot be listed ({error.strerror})"
    if not names:
        return "is empty"
    return f"holds {len(names)} {'entry' if len(names) == 1 else 'entries'}: {_shown(names)}"


def _expectations(domain: str) -> list[str]:
    return [
        f"  - layout {layout.id!r}: {layout.expected}; official folder name {' or '.join(layout.folder_names)}"
        for layout in _layouts_of(domain)
    ]


def locate_domain(domain: str, path: str | os.PathLike[str]) -> tuple[Layout, Path]:
    """The layout of ``domain``'s release at ``path`` and the folder its paths are relative to (its root).

    ``path`` is the folder that directly holds the class folders (or the flat val files), or any folder above
    it along its official name (``/data/ILSVRC2012`` for ``/data/ILSVRC2012/train``, ``/data/ImageNet`` or
    ``/data`` for ``/data/ImageNet/a``). ``path`` itself is tried first, then the official names under it.
    Only the top of the release is looked at. Raises ReleaseNotFoundError saying what each layout expects and
    what was found, when none is recognised.
    """
    get_domain(domain)
    path = _absolute(path)
    candidates = [path, *_official_folders(domain, path)]
    for folder in candidates:
        layout = _recognise(domain, folder)
        if layout is not None:
            return layout, folder
    looked = [f"  - {path}: {_contents(path)}"]
    looked += [f"  - {c}: {_contents(c)}" for c in candidates[1:] if c.exists()]
    absent = [str(c.relative_to(path)) for c in candidates[1:] if not c.exists()]
    if absent:
        looked.append(f"  - (no sub-folder named {', '.join(absent)} under {path})")
    raise ReleaseNotFoundError(
        "\n".join(
            [
                f"no {DOMAINS[domain].release} release (domain {domain!r}) recognised at {path}.",
                "Expected one of these layouts, in that folder or in its official sub-folder:",
                *_expectations(domain),
                "Found:",
                *looked,
                "Pass the folder that holds the class folders (or the flat val files), or a folder above it.",
            ]
        )
    )


def scan_domain(domain: str, path: str | os.PathLike[str]) -> DomainScan:
    """Every image of ``domain``'s release at ``path`` (located as :func:`locate_domain` does)."""
    layout, folder = locate_domain(domain, path)
    table = layout.read(folder)
    if table.empty:
        raise ReleaseNotFoundError(
            f"{folder} looks like layout {layout.id!r} of domain {domain!r} but holds no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}). Expected {layout.expected}; check that the release was "
            "extracted completely."
        )
    return DomainScan(domain=domain, layout=layout.id, root=folder, table=table)


def _is_class_folder_name(name: str) -> bool:
    return name in load_taxonomy() or _INTEGER.fullmatch(name) is not None


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            names = [
                e.name
                for e in entries
                if not e.name.startswith(".") and not _is_class_folder_name(e.name) and e.is_dir()
            ]
    except OSError:
        return []
    return [folder / name for name in sorted(names)]


def discover_releases(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Domain id -> release folder, for each domain whose release sits under its official name below ``root``.

    Official names are looked for in ``root`` and in the folders one and two levels below it (class
    folders are not entered), the combined ``ImageNet/`` tree included; a found folder counts only when one
    of the domain's layouts recognises it. Where a domain's release is found at several places, the first
    found wins: searching ``root`` first, then the folders one level below it, then two levels below, each
    level in path order. Domains not found are absent from the result.
    """
    root = _absolute(root)
    if not root.is_dir():
        raise ReleaseNotFoundError(
            f"cannot search {root} for releases: it {_contents(root)}. Pass an existing folder that holds the "
            "release folders (train/, val/, imagenet-a/, imagenet-r/, sketch/, "
            "imagenetv2-matched-frequency-format-val/ or ImageNet/)."
        )
    level_1 = _subfolders(root)
    bases = [root, *level_1, *(sub for folder in level_1 for sub in _subfolders(folder))]
    found: dict[str, Path] = {}
    for domain in DOMAINS:
        for base in bases:
            folder = next((f for f in _official_folders(domain, base) if _recognise(domain, f)), None)
            if folder is not None:
                found[domain] = folder
                break
    return found


def _requested(
    paths: Mapping[str, str | os.PathLike[str] | None],
    root: str | os.PathLike[str] | None,
    domains: Iterable[str] | None,
    action: Callable[[str, str | os.PathLike[str]], object],
) -> dict[str, object]:
    """``action(domain, path)`` for every requested domain, problems collected and raised together."""
    for domain in paths:
        get_domain(domain)
    wanted = list(DOMAINS) if domains is None else list(dict.fromkeys(domains))
    for domain in wanted:
        get_domain(domain)
    discovered: dict[str, Path] = {}
    root_problem = ""
    if root is not None and any(paths.get(d) is None for d in wanted):
        try:
            discovered = discover_releases(root)
        except ReleaseNotFoundError as error:
            root_problem = str(error)
    results: dict[str, object] = {}
    problems: list[str] = []
    for domain in wanted:
        given = paths.get(domain)
        if given is None and domain not in discovered:
            if root is None:
                where = "no path was given for it and no root to search"
            elif root_problem:
                where = f"no path was given for it, and {root_problem}"
            else:
                names = sorted({n for layout in _layouts_of(domain) for n in layout.folder_names})
                where = (
                    f"no path was given for it and none of the folders {', '.join(names)} was found and "
                    f"recognised in {_absolute(root)} or one or two levels below it"
                )
            problems.append(
                "\n".join(
                    [f"domain {domain!r} ({DOMAINS[domain].release}): {where}. Expected one of:"]
                    + _expectations(domain)
                )
            )
            continue
        try:
            results[domain] = action(domain, given if given is not None else discovered[domain])
        except ReleaseNotFoundError as error:
            problems.append(f"domain {domain!r} ({DOMAINS[domain].release}): {error}")
    if problems:
        raise ReleaseNotFoundError(
            f"{len(problems)} of {len(wanted)} release(s) could not be read:\n\n"
            + "\n\n".join(problems)
            + "\n\nGive each release's folder explicitly, or a root that holds them under their official names."
        )
    return results


def scan_releases(
    paths: Mapping[str, str | os.PathLike[str] | None],
    root: str | os.PathLike[str] | None = None,
    domains: Iterable[str] | None = None,
) -> dict[str, DomainScan]:
    """Scan of every requested domain (default: all six), in the order requested.

    A path given in ``paths`` wins; a domain without one is looked for under ``root`` with
    ``discover_releases``. Problems are collected over all domains and raised together as one
    ReleaseNotFoundError saying, for each domain not found or not recognised, what was expected and where.
    """
    return _requested(paths, root, domains, scan_domain)  # type: ignore[return-value]


def locate_releases(
    paths: Mapping[str, str | os.PathLike[str] | None],
    root: str | os.PathLike[str] | None = None,
    domains: Iterable[str] | None = None,
) -> dict[str, Path]:
    """The root folder of every requested domain's release, found as :func:`scan_releases` finds them,
    without listing the images (what loading images from a manifest needs)."""
    return {d: located[1] for d, located in _requested(paths, root, domains, locate_domain).items()}  # type: ignore[index]
