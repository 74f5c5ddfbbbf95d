"""Finding a standard suite on disk and listing its images, in the layouts DomainBed's download script leaves.

A suite lies under a root folder as ``<root>/<suite folder>/<domain folder>/<class folder>/<image>``, where
the suite folder is one of the names the suite accepts (``PACS``, ``kfold``, ``office_home``,
``OfficeHomeDataset_10072016``, ...), or the root is the suite folder itself. Images are listed the way
torchvision's ImageFolder lists them (DomainBed reads each domain with ImageFolder): the class folders in
sorted order, each walked recursively through links, files with an image extension (any case) in sorted
order per folder. A suite that cannot be found, or is found incomplete, is one error naming the folders
expected, where they were looked for and what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from imagenet_dg.errors import ReleaseNotFoundError
from imagenet_dg.suites import Suite, get_suite

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The extensions torchvision's ImageFolder accepts (compared in lower case)."""

_SHOWN = 8


class SuiteNotFoundError(ReleaseNotFoundError):
    """A suite's folders are missing or incomplete under the root given."""


@dataclass(frozen=True)
class SuiteLocation:
    """Where a suite was found."""

    suite: str
    root: Path
    """The root that was searched (absolute)."""
    folder: Path
    """The suite folder: it holds the domain folders."""
    domain_folders: Mapping[str, Path]
    """Domain id -> its folder (absolute); manifest paths of that domain are relative to it."""

    def relative_folders(self) -> dict[str, str]:
        """Domain id -> its folder relative to the root, as POSIX text (recorded in manifests, no machine path)."""
        return {d: Path(os.path.relpath(p, self.root)).as_posix() for d, p in self.domain_folders.items()}


@dataclass(frozen=True, eq=False)
class SuiteScan:
    """Every image of every domain of a suite found on disk."""

    location: SuiteLocation
    tables: Mapping[str, pd.DataFrame]
    """Domain id -> table with columns ``path`` (POSIX, relative to the domain folder) and ``class_id``, rows in
    ImageFolder order (sorted classes, then each class folder walked in sorted order)."""

    @property
    def suite(self) -> Suite:
        return get_suite(self.location.suite)


def _shown(names: list[str]) -> str:
    names = sorted(names)
    listed = ", ".join(repr(n) for n in names[:_SHOWN])
    return (listed + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")) or "nothing"


def _subfolders(folder: Path) -> list[str]:
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
    present = set(_subfolders(folder))
    return any(name in present for d in suite.domains for name in d.folders())


def locate_suite(suite: Suite | str, root: str | os.PathLike[str]) -> SuiteLocation:
    """Find ``suite`` under ``root`` (or at ``root`` itself) and the folder of each of its domains.

    Raises :class:`SuiteNotFoundError` naming the folder names expected and where they were looked for when
    the suite is not there, when two accepted folders both hold it, or when a domain folder is missing.
    """
    suite = get_suite(suite) if isinstance(suite, str) else suite
    if suite.layout != "domain/class/image":
        raise SuiteNotFoundError(f"suite {suite.name} is not laid out as domain/class/image folders")
    root = Path(os.path.abspath(os.fspath(root)))
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
            f"{_shown(_subfolders(root))}. Get it from {suite.source}"
        )
    folder = candidates[0]
    present = _subfolders(folder)
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
            f"it holds {_shown(present)}. Download the suite again ({suite.source})"
        )
    return SuiteLocation(suite.name, root, folder, MappingProxyType(domain_folders))


def imagefolder_files(class_folder: Path) -> list[str]:
    """The images of one class folder, as POSIX paths relative to it, in ImageFolder order.

    ImageFolder walks the folder recursively (through links) and visits the folders in sorted order of
    their full path, the files of each in sorted name order, keeping names with an image extension.
    """
    found: list[str] = []
    for folder, _, names in sorted(os.walk(class_folder, followlinks=True)):
        relative = Path(os.path.relpath(folder, class_folder))
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(name if relative == Path(".") else (relative / name).as_posix())
    return found


def scan_domain_folder(suite: Suite, domain_id: str, folder: Path) -> pd.DataFrame:
    """The image table of one domain folder (see :attr:`SuiteScan.tables`).

    Hidden folders (``.ipynb_checkpoints``, ``.DS_Store`` ...) are skipped; any other class folder not among
    the suite's classes, a missing class folder, or a class folder without images is an error naming it.
    """
    present = [name for name in _subfolders(folder) if not name.startswith(".")]
    extra = sorted(set(present) - set(suite.classes))
    missing = [c for c in suite.classes if c not in present]
    where = f"{suite.display_name} domain {domain_id} ({folder})"
    if missing:
        raise SuiteNotFoundError(
            f"{where} is incomplete: no class folder {_shown(missing)}; expected the {len(suite.classes)} "
            f"class folders {_shown(list(suite.classes))}. Download the suite again ({suite.source})"
        )
    if extra:
        raise SuiteNotFoundError(
            f"{where} holds folder(s) {_shown(extra)} that are not {suite.display_name} classes (expected only "
            f"{_shown(list(suite.classes))}); move them out, since they would shift every class index after them"
        )
    paths: list[str] = []
    classes: list[str] = []
    for class_id in suite.classes:
        files = imagefolder_files(folder / class_id)
        if not files:
            raise SuiteNotFoundError(
                f"{where}: the class folder {class_id!r} holds no image (expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}). Download the suite again ({suite.source})"
            )
        paths.extend(f"{class_id}/{f}" for f in files)
        classes.extend([class_id] * len(files))
    return pd.DataFrame({"path": paths, "class_id": classes})


def scan_suite(suite: Suite | str, root: str | os.PathLike[str]) -> SuiteScan:
    """Locate ``suite`` under ``root`` and list every image of every domain (see :func:`locate_suite`)."""
    suite = get_suite(suite) if isinstance(suite, str) else suite
    location = locate_suite(suite, root)
    tables = {d: scan_domain_folder(suite, d, folder) for d, folder in location.domain_folders.items()}
    return SuiteScan(location, MappingProxyType(tables))


def suite_roots(suite: Suite | str, root: str | os.PathLike[str]) -> dict[str, Path]:
    """Domain id -> the folder its manifest paths are relative to: what :func:`imagenet_dg.loading.load_task`
    takes as ``roots`` for a suite built from (or materialised under) ``root``."""
    return dict(locate_suite(suite, root).domain_folders)
