"""The layout readers: every way a suite's images lie on disk, found and listed as scan tables.

A suite names its layout (:attr:`imagenet_dg.suites.Suite.layout`); :data:`SUITE_LAYOUTS` holds one reader per
layout, and :func:`scan` and :func:`locate` read any suite through it (``docs/protocol.md#layouts``):

- the ImageNet releases (ImageNet-DG, ``docs/protocol.md#releases``): each domain's official release, in any of
  its official layouts (:data:`RELEASE_LAYOUTS`), given one by one or found under a root by its official folder
  name. A release folder becomes a table of image paths (POSIX, relative to the folder that holds the class
  folders) and their wnids. Only image files count (``.jpeg``, ``.jpg``, ``.png``, any case); hidden entries and
  other files (``README.txt``, ``classnames.txt``) are ignored, and every table is sorted by path in plain string
  order. A folder that looks like a release but holds something unexpected (an unknown class folder, a
  validation file the label table does not know, loose images next to class folders) is an error naming what
  was found: a silently partial table would shift every count and split downstream.
- DomainBed's folders (the standard suites, ``docs/protocol.md#domainbed-folders``):
  ``<root>/<suite folder>/<domain folder>/<class folder>/<image>``, where the suite folder is one of the names
  the suite accepts (``PACS``, ``kfold``, ``office_home``, ``OfficeHomeDataset_10072016``, ...), or the root is
  the suite folder itself. Images are listed the way torchvision's ImageFolder lists them (DomainBed reads each
  domain with ImageFolder): the class folders in sorted order, each walked recursively through links, files
  with an image extension (any case) in sorted order per folder. A suite that cannot be found, or is found
  incomplete, is one error naming the folders expected, where they were looked for and what is missing.

Every reader gives the same :class:`SuiteScan`: a :class:`Location` (the folder each domain's paths are
relative to) and one scan table per domain (:data:`imagenet_dg.tables.SCAN_COLUMNS`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from imagenet_dg.domains import DOMAINS, get_domain
from imagenet_dg.errors import ImageNetDGError, ReleaseNotFoundError
from imagenet_dg.suites import FOLDER_LAYOUT, RELEASES_LAYOUT, Suite, get_suite
from imagenet_dg.tables import scan_table
from imagenet_dg.taxonomy import load_taxonomy, val_labels

RELEASE_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
"""File name endings (compared lower-cased) of the files that count as images of an ImageNet release."""
IMAGEFOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The extensions torchvision's ImageFolder accepts (compared in lower case)."""

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
    """Id of the layout that was recognised (a key of :data:`RELEASE_LAYOUTS`)."""
    root: Path
    """Absolute folder that directly holds the class folders (or the flat val files)."""
    table: pd.DataFrame
    """A scan table: ``path`` (POSIX, relative to ``root``) and ``class_id`` (the wnid); unique paths sorted in
    string order."""


@dataclass(frozen=True)
class ReleaseLayout:
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


RELEASE_LAYOUTS: dict[str, ReleaseLayout] = {}
"""Release layout id -> layout, in the order layouts are tried."""


def _register(layout: ReleaseLayout) -> None:
    if layout.id in RELEASE_LAYOUTS:
        raise ValueError(f"layout {layout.id!r} is defined twice")
    get_domain(layout.domain)
    RELEASE_LAYOUTS[layout.id] = layout


def _is_image(name: str) -> bool:
    return name.lower().endswith(RELEASE_IMAGE_EXTENSIONS)


def _shown(names: list[str]) -> str:
    names = sorted(names)
    listed = ", ".join(repr(n) for n in names[:_SHOWN])
    return listed + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


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
            if not n.startswith(".") and n.lower().endswith(RELEASE_IMAGE_EXTENSIONS)
        ]
        paths.extend(files)
        wnids.extend([wnid] * len(files))
    return scan_table(paths, wnids, sort=True)


def _check_sorted_val(root: Path, table: pd.DataFrame) -> None:
    """Validation images sorted into folders must sit in the folder the devkit labels give them."""
    labels = val_labels()
    misplaced = [
        f"{path} (labelled {labels[name]})"
        for path, wnid in zip(table["path"], table["class_id"])
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
) -> ReleaseLayout:
    what = f"wnids of the {DOMAINS[domain].class_set} class set"

    def detect(root: Path) -> bool:
        # The combined tree is told apart by the classnames.txt it puts beside the class folders.
        return _has_marker(root) == combined and _any_folder(root, _wnid_folders(domain).__contains__)

    def read(root: Path) -> pd.DataFrame:
        table = _read_class_folders(root, _wnid_folders(domain), domain, what)
        if domain == "imagenet-val":
            _check_sorted_val(root, table)
        return table

    return ReleaseLayout(layout_id, domain, expected, folder_names, detect, read)


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
    return scan_table(paths, wnids, sort=True)


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
    ReleaseLayout(
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
    ReleaseLayout(
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


def _layouts_of(domain: str) -> list[ReleaseLayout]:
    return [layout for layout in RELEASE_LAYOUTS.values() if layout.domain == domain]


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


def _recognise(domain: str, folder: Path) -> ReleaseLayout | None:
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


def locate_domain(domain: str, path: str | os.PathLike[str]) -> tuple[ReleaseLayout, Path]:
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
            f"({', '.join(RELEASE_IMAGE_EXTENSIONS)}). Expected {layout.expected}; check that the release was "
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


# ---------------------------------------------------------------------------------------------------------
# DomainBed's folders: <root>/<suite folder>/<domain folder>/<class folder>/<image>.


class SuiteNotFoundError(ReleaseNotFoundError):
    """A suite's folders are missing or incomplete under the root given."""


@dataclass(frozen=True)
class Location:
    """Where a suite's domains were found."""

    suite: str
    root: Path | None
    """The folder that was searched (absolute); None when every domain's folder was given."""
    folder: Path | None
    """The suite folder holding the domain folders (DomainBed's layout); None for the ImageNet releases."""
    domain_folders: Mapping[str, Path]
    """Domain id -> its folder (absolute): the folder its manifest paths are relative to."""
    layouts: Mapping[str, str]
    """Domain id -> the layout recognised there (a release layout id, or the suite's layout)."""

    def relative_folders(self) -> dict[str, str]:
        """Domain id -> its folder relative to the root, as POSIX text (recorded in manifests, no machine path)."""
        if self.root is None:
            return {d: p.name for d, p in self.domain_folders.items()}
        return {d: Path(os.path.relpath(p, self.root)).as_posix() for d, p in self.domain_folders.items()}


@dataclass(frozen=True, eq=False)
class SuiteScan:
    """Every image of the domains of a suite found on disk."""

    location: Location
    tables: Mapping[str, pd.DataFrame]
    """Domain id -> scan table (:data:`imagenet_dg.tables.SCAN_COLUMNS`), paths relative to the domain's folder.
    DomainBed's domains list their rows in ImageFolder order (sorted classes, then each class folder walked in
    sorted order), the releases theirs by path."""

    @property
    def suite(self) -> Suite:
        return get_suite(self.location.suite)

    @property
    def roots(self) -> dict[str, Path]:
        """Domain id -> the folder its paths are relative to."""
        return dict(self.location.domain_folders)


def _shown_or_nothing(names: list[str]) -> str:
    return _shown(names) or "nothing"


def _sorted_subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except OSError:
        return []


def _domain_folder(suite: Suite, folder: Path, domain_id: str, present: list[str]) -> Path | None:
    found = [name for name in suite.domain(domain_id).folders() if name in present]
    if len(found) > 1:
        raise SuiteNotFoundError(
            f"{folder} holds both {' and '.join(repr(f) for f in found)} for the {suite.display_name} domain "
            f"{domain_id}; keep one of them"
        )
    return folder / found[0] if found else None


def _expected_folders(suite: Suite) -> str:
    return ", ".join("/".join(d.folders()) for d in suite.domains)


def _holds_domains(suite: Suite, folder: Path) -> bool:
    present = set(_sorted_subfolders(folder))
    return any(name in present for d in suite.domains for name in d.folders())


def locate_suite(suite: Suite | str, root: str | os.PathLike[str]) -> Location:
    """Find ``suite`` in DomainBed's layout under ``root`` (or at ``root`` itself), and the folder of each of
    its domains.

    Raises :class:`SuiteNotFoundError` naming the folder names expected and where they were looked for when
    the suite is not there, when two accepted folders both hold it, or when a domain folder is missing.
    """
    suite = get_suite(suite) if isinstance(suite, str) else suite
    if suite.layout != FOLDER_LAYOUT:
        raise SuiteNotFoundError(f"suite {suite.name} is not laid out as domain/class/image folders")
    root = _absolute(root)
    if not root.is_dir():
        raise SuiteNotFoundError(
            f"--root {root} is not a folder; expected the folder holding {suite.folder_names[0]}/ "
            f"(or one of {', '.join(suite.folder_names[1:])}) as DomainBed's download script leaves it"
        )
    candidates = [root / name for name in suite.folder_names if (root / name).is_dir()]
    candidates = [c for c in candidates if _holds_domains(suite, c)]
    if not candidates and _holds_domains(suite, root):
        candidates = [root]
    if len(candidates) > 1:
        raise SuiteNotFoundError(
            f"{root} holds {suite.display_name} twice, in {' and '.join(str(c) for c in candidates)}; give "
            "--root as one of them"
        )
    if not candidates:
        raise SuiteNotFoundError(
            f"{suite.display_name} not found under {root}: expected a folder named "
            f"{' or '.join(repr(n) for n in suite.folder_names)} holding the domain folders "
            f"{_expected_folders(suite)}, or those domain folders in {root} itself; {root} holds "
            f"{_shown_or_nothing(_sorted_subfolders(root))}. Get it from {suite.source}"
        )
    folder = candidates[0]
    present = _sorted_subfolders(folder)
    domain_folders: dict[str, Path] = {}
    missing: list[str] = []
    for domain in suite.domains:
        found = _domain_folder(suite, folder, domain.id, present)
        if found is None:
            missing.append(f"{domain.id} (as {' or '.join(repr(n) for n in domain.folders())})")
        else:
            domain_folders[domain.id] = found
    if missing:
        raise SuiteNotFoundError(
            f"{suite.display_name} in {folder} is incomplete: no folder for the domain(s) {', '.join(missing)}; "
            f"it holds {_shown_or_nothing(present)}. Download the suite again ({suite.source})"
        )
    return Location(suite.name, root, folder, MappingProxyType(domain_folders),
                    MappingProxyType({d: FOLDER_LAYOUT for d in domain_folders}))


def imagefolder_files(class_folder: Path) -> list[str]:
    """The images of one class folder, as POSIX paths relative to it, in ImageFolder order.

    ImageFolder walks the folder recursively (through links) and visits the folders in sorted order of their
    full path, the files of each in sorted name order, keeping names with an image extension.
    """
    found: list[str] = []
    for folder, _, names in sorted(os.walk(class_folder, followlinks=True)):
        relative = Path(os.path.relpath(folder, class_folder))
        for name in sorted(names):
            if name.lower().endswith(IMAGEFOLDER_EXTENSIONS):
                found.append(name if relative == Path(".") else (relative / name).as_posix())
    return found


def scan_domain_folder(suite: Suite, domain_id: str, folder: Path) -> pd.DataFrame:
    """The scan table of one domain folder, in ImageFolder order.

    Hidden folders (``.ipynb_checkpoints``, ``.DS_Store`` ...) are skipped; any other class folder not among
    the suite's classes, a missing class folder, or a class folder without images is an error naming it.
    """
    present = [name for name in _sorted_subfolders(folder) if not name.startswith(".")]
    extra = sorted(set(present) - set(suite.classes))
    missing = [c for c in suite.classes if c not in present]
    where = f"{suite.display_name} domain {domain_id} ({folder})"
    if missing:
        raise SuiteNotFoundError(
            f"{where} is incomplete: no class folder {_shown_or_nothing(missing)}; expected the "
            f"{len(suite.classes)} class folders {_shown_or_nothing(list(suite.classes))}. Download the suite "
            f"again ({suite.source})"
        )
    if extra:
        raise SuiteNotFoundError(
            f"{where} holds folder(s) {_shown_or_nothing(extra)} that are not {suite.display_name} classes "
            f"(expected only {_shown_or_nothing(list(suite.classes))}); move them out, since they would shift "
            "every class index after them"
        )
    paths: list[str] = []
    classes: list[str] = []
    for class_id in suite.classes:
        files = imagefolder_files(folder / class_id)
        if not files:
            raise SuiteNotFoundError(
                f"{where}: the class folder {class_id!r} holds no image (expected files ending in "
                f"{', '.join(IMAGEFOLDER_EXTENSIONS)}). Download the suite again ({suite.source})"
            )
        paths.extend(f"{class_id}/{f}" for f in files)
        classes.extend([class_id] * len(files))
    return scan_table(paths, classes)


# ---------------------------------------------------------------------------------------------------------
# One interface over every layout.


def _locate_releases(
    suite: Suite, domains: Sequence[str], root: Path | None, folders: Mapping[str, Path]
) -> Location:
    located = _requested(folders, root, domains, locate_domain)
    return Location(
        suite.name, None if root is None else _absolute(root), None,
        MappingProxyType({d: found[1] for d, found in located.items()}),  # type: ignore[index]
        MappingProxyType({d: found[0].id for d, found in located.items()}),  # type: ignore[index]
    )


def _scan_releases(suite: Suite, domains: Sequence[str], root: Path | None, folders: Mapping[str, Path]) -> SuiteScan:
    scans = scan_releases(folders, root, domains)
    location = Location(
        suite.name, None if root is None else _absolute(root), None,
        MappingProxyType({d: s.root for d, s in scans.items()}), MappingProxyType({d: s.layout for d, s in scans.items()}),
    )
    return SuiteScan(location, MappingProxyType({d: s.table for d, s in scans.items()}))


def _locate_folders(suite: Suite, domains: Sequence[str], root: Path | None, folders: Mapping[str, Path]) -> Location:
    return locate_suite(suite, _only_root(suite, root, folders))


def _scan_folders(suite: Suite, domains: Sequence[str], root: Path | None, folders: Mapping[str, Path]) -> SuiteScan:
    location = _locate_folders(suite, domains, root, folders)
    tables = {d: scan_domain_folder(suite, d, folder) for d, folder in location.domain_folders.items()}
    return SuiteScan(location, MappingProxyType(tables))


def _only_root(suite: Suite, root: Path | None, folders: Mapping[str, Path]) -> Path:
    if folders:
        raise ImageNetDGError(
            f"{', '.join(f'--{d}' for d in folders)} name ImageNet releases; {suite.display_name} is found under "
            "--root, the folder holding its suite folder"
        )
    if root is None:
        raise root_needed(suite)
    return root


def root_needed(suite: Suite) -> SuiteNotFoundError:
    """The error for a suite in DomainBed's layout asked for without the root to find it under."""
    return SuiteNotFoundError(
        f"--suite {suite.name} needs --root: the folder holding {suite.folder_names[0]}/ as DomainBed's "
        f"download script leaves it (get it from {suite.source}), or --hub with a parquet mirror"
    )


@dataclass(frozen=True)
class SuiteLayout:
    """The reader of one way a suite's images lie on disk."""

    id: str
    locate: Callable[[Suite, Sequence[str], Path | None, Mapping[str, Path]], Location]
    """``locate(suite, domains, root, folders)``: where each domain's images are, without listing them."""
    scan: Callable[[Suite, Sequence[str], Path | None, Mapping[str, Path]], SuiteScan]
    """``scan(suite, domains, root, folders)``: the location and every domain's scan table."""
    takes_domain_folders: bool
    """Whether a domain's folder may be given on its own (an ImageNet release), not only a root to search."""
    records_releases: bool
    """Whether manifests record each domain as an official release (its layout and class coverage) rather
    than as a folder of the suite (``docs/protocol.md#manifests``)."""


SUITE_LAYOUTS: Mapping[str, SuiteLayout] = MappingProxyType({
    RELEASES_LAYOUT: SuiteLayout(RELEASES_LAYOUT, _locate_releases, _scan_releases, True, True),
    FOLDER_LAYOUT: SuiteLayout(FOLDER_LAYOUT, _locate_folders, _scan_folders, False, False),
})
"""A suite's layout (:attr:`imagenet_dg.suites.Suite.layout`) -> its reader."""


def suite_layout(suite: Suite) -> SuiteLayout:
    """The reader of ``suite``'s layout."""
    try:
        return SUITE_LAYOUTS[suite.layout]
    except KeyError:
        raise ImageNetDGError(f"suite {suite.name}: unknown layout {suite.layout!r}; expected one of "
                              f"{', '.join(SUITE_LAYOUTS)}") from None


def _arguments(suite: Suite | str, domains: Iterable[str] | None, root: str | os.PathLike[str] | None,
               folders: Mapping[str, str | os.PathLike[str]] | None) -> tuple[Suite, list[str], Path | None, dict]:
    suite = get_suite(suite) if isinstance(suite, str) else suite
    wanted = list(dict.fromkeys(domains)) if domains is not None else list(suite.domain_ids)
    for domain in wanted:
        suite.domain(domain)
    return suite, wanted, None if root is None else Path(root), {d: Path(p) for d, p in (folders or {}).items()}


def scan(
    suite: Suite | str,
    domains: Iterable[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    folders: Mapping[str, str | os.PathLike[str]] | None = None,
) -> SuiteScan:
    """Find ``suite``'s images and list them: the ``domains`` asked for (default: all), each from the folder
    given for it in ``folders`` (where its layout allows that) or found under ``root``."""
    suite, wanted, root_path, given = _arguments(suite, domains, root, folders)
    return suite_layout(suite).scan(suite, wanted, root_path, given)


def locate(
    suite: Suite | str,
    domains: Iterable[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    folders: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Location:
    """Where ``suite``'s images are, found as :func:`scan` finds them, without listing them (what loading the
    images of a manifest needs)."""
    suite, wanted, root_path, given = _arguments(suite, domains, root, folders)
    return suite_layout(suite).locate(suite, wanted, root_path, given)


def scan_suite(suite: Suite | str, root: str | os.PathLike[str]) -> SuiteScan:
    """Every image of every domain of ``suite`` under ``root`` (see :func:`scan`)."""
    return scan(suite, root=root)


def suite_roots(
    suite: Suite | str,
    root: str | os.PathLike[str] | None = None,
    *,
    folders: Mapping[str, str | os.PathLike[str]] | None = None,
    domains: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Domain id -> the folder its manifest paths are relative to: what :func:`imagenet_dg.loading.load_task`
    takes as ``roots`` for a suite built from (or materialised under) ``root``."""
    return dict(locate(suite, domains, root=root, folders=folders).domain_folders)
