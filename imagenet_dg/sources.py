"""Where a suite's images come from, and whether they are synthetic.

A :class:`DataRequest` says what was given: a root to search, release folders one by one (ImageNet-DG), the
miniature synthetic releases (``--mini``), a Hub parquet mirror to write out under the root, or, for a miniature
suite, nothing at all (it is written into the miniature folder). :func:`check_request` refuses a request that
cannot work before anything is read or written; :func:`find_images` brings the images into place (writing the
miniature or the Hub copy); :func:`scan_images` and :func:`locate_images` read them through the suite's layout
(:mod:`imagenet_dg.layouts`).

:func:`is_synthetic` alone decides whether data are synthetic, from the data: the marker files the miniature
generators write beside their releases and inside their suite folders, and the ``synthetic`` flag of a built
manifest (``docs/protocol.md#synthetic-data``). Every route to the data, folders given one by one, a root, a
miniature, prebuilt manifests, reaches the same answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.hub_suite_source import HubColumns, MaterialisedSuite, materialise_hub_suite, recorded_source
from imagenet_dg.layouts import Location, SuiteScan, locate, root_needed, scan, suite_layout
from imagenet_dg.mini import MARKER as RELEASES_MARKER
from imagenet_dg.mini import choose_releases
from imagenet_dg.mini_suites import MARKER as SUITE_MARKER
from imagenet_dg.mini_suites import make_mini_suite
from imagenet_dg.suites import FOLDER_LAYOUT, RELEASES_LAYOUT, SUITES, Suite

logger = logging.getLogger(__name__)

DEFAULT_MINI_DIR = "mini-releases"
"""Where the miniature synthetic data are written when asked for (a miniature suite in ``<it>/<suite>/``)."""

MARKERS = (RELEASES_MARKER, SUITE_MARKER)
"""The files the miniature generators write beside their releases and inside their suite folders."""


@dataclass(frozen=True)
class DataRequest:
    """Where a command was told to find a suite's images."""

    suite: Suite
    root: Path | None = None
    """A folder searched for the suite (or the ImageNet releases under their official names)."""
    folders: Mapping[str, Path] = field(default_factory=dict)
    """ImageNet-DG: domain id -> release folder, given one by one."""
    mini: bool = False
    """ImageNet-DG: the miniature synthetic releases, written (or reused) in :attr:`mini_dir`."""
    mini_dir: Path = Path(DEFAULT_MINI_DIR)
    hub: str | None = None
    """A standard suite's parquet mirror on the Hub (or a local copy of one), written out under :attr:`root`."""
    revision: str | None = None
    """With :attr:`hub`: the commit, branch or tag (a branch is pinned to its commit and recorded)."""
    columns: HubColumns = HubColumns()


def check_request(request: DataRequest) -> None:
    """Refuse a request that cannot work, before anything is read or written: a Hub mirror for a suite that has
    none or without a root to write it into, a remote one without a revision, a revision without a mirror,
    release folders or ``--mini`` for a suite other than ImageNet-DG, nothing given where something must be."""
    suite = request.suite
    if request.hub is None:
        if request.revision is not None:
            raise ImageNetDGError("--revision applies only with --hub (a folder copy has no revision)")
    else:
        if suite.layout != FOLDER_LAYOUT or suite.synthetic:
            raise ImageNetDGError(f"--hub: reads a standard suite's parquet mirror; --suite {suite.name} is not one")
        if request.root is None:
            raise ImageNetDGError(f"--hub {request.hub} needs --root: the folder to write the suite's images into")
        if request.revision is None and not Path(request.hub).is_dir():
            raise ImageNetDGError(
                f"--hub {request.hub}: --revision is required (a commit, branch or tag), so that the images scored "
                "are the ones recorded"
            )
    if (request.mini or request.folders) and not suite_layout(suite).takes_domain_folders:
        raise ImageNetDGError(
            f"--suite {suite.name}: --mini and the ImageNet release options apply to ImageNet-DG; give --root for "
            f"a standard suite, or --suite mini-{suite.miniature_of or suite.name} for its miniature"
        )
    if suite.layout == RELEASES_LAYOUT and not request.mini:
        choose_releases(dict(request.folders), request.root, mini=False, mini_dir=request.mini_dir)  # writes nothing
    if suite.layout == FOLDER_LAYOUT and request.root is None and request.hub is None and not suite.synthetic:
        raise root_needed(suite)


@dataclass(frozen=True)
class Images:
    """Where a request's images are, once in place."""

    suite: Suite
    root: Path | None
    """The folder to search (None when every release folder was given)."""
    folders: Mapping[str, Path]
    """Domain id -> its folder, where given one by one (or written by the miniature generator)."""
    miniature: bool
    """Whether the miniature generator wrote (or found) them for this request."""
    hub: MaterialisedSuite | None = None
    """The Hub copy they were written from, if any."""


def find_images(request: DataRequest, tell: Callable[[str], None] = logger.info) -> Images:
    """Bring ``request``'s images into place and say where they are: the folders given; the Hub mirror
    written out under the root (:mod:`imagenet_dg.hub_suite_source`); the miniature releases (``mini``) or, for
    a miniature suite given no root, the miniature suite written (or found) in ``mini_dir/<suite name>``.
    ``tell`` hears which miniature data are used."""
    check_request(request)
    suite = request.suite
    if suite.layout == RELEASES_LAYOUT:
        folders, root, mini = choose_releases(dict(request.folders), request.root, mini=request.mini,
                                              mini_dir=request.mini_dir)
        if mini is not None:
            tell(f"Using the miniature synthetic releases in {mini.root}")
        return Images(suite, root, folders, mini is not None)
    if request.hub is not None:
        copy = materialise_hub_suite(suite, request.hub, request.root,  # type: ignore[arg-type]
                                     revision=request.revision, columns=request.columns)
        return Images(suite, copy.root, {}, False, copy)
    if request.root is not None:
        return Images(suite, Path(request.root), {}, False)
    written = make_mini_suite(suite.name, Path(request.mini_dir) / suite.name)
    tell(f"Using the miniature synthetic {suite.name} in {written.root}")
    return Images(suite, written.root, {}, True)


def scan_images(images: Images, domains: Iterable[str] | None = None) -> SuiteScan:
    """Every image of the ``domains`` asked for (default: all), read through the suite's layout."""
    return scan(images.suite, domains, root=images.root, folders=images.folders)


def locate_images(images: Images, domains: Iterable[str] | None = None) -> Location:
    """Where the images of the ``domains`` asked for (default: all) are, without listing them."""
    return locate(images.suite, domains, root=images.root, folders=images.folders)


def folder_source(location: Location) -> dict[str, object]:
    """What a manifest records as the source of a suite folder: the Hub repository and revision it was written
    from, or its folder name (never a machine path)."""
    folder = location.folder
    if folder is None:
        return {"kind": "folder"}
    return dict(recorded_source(folder) or {"kind": "folder", "folder": folder.name})


def _marked(folder: Path) -> bool:
    return any((folder / marker).is_file() or (folder.parent / marker).is_file() for marker in MARKERS)


def is_synthetic(folders: Iterable[str | os.PathLike[str]] = (), manifest: Mapping | None = None) -> bool:
    """Whether the data are synthetic: a miniature generator's marker in or beside any of ``folders`` (the
    folders a suite's domains are read from), or a built ``manifest`` that says so or names a miniature suite.

    This is the one place that decides; nothing is synthetic or real by a flag a caller sets.
    """
    if manifest is not None:
        named = SUITES.get(str(manifest.get("suite", "")))
        if manifest.get("synthetic") or (named is not None and named.synthetic):
            return True
    return any(_marked(Path(folder)) for folder in folders)
