"""A standard suite read from a Hugging Face Hub dataset in parquet form (image, domain and label columns).

Mirrors such as the Hub's PACS and Office-Home copies hold every image's encoded bytes in an ``image`` column
beside its ``domain`` and ``label``. They are read through ``datasets`` at a pinned revision (a branch or tag
is resolved to its commit first, so the revision recorded always names exact bytes), and then
*materialised*: each image's original bytes, not re-encoded, are written to a content-addressed file in the
suite's DomainBed layout under the root folder given,

    <root>/<suite folder>/<domain folder>/<class folder>/<sha256 of the bytes, 32 hex digits>.<ext>

so the folder is an ordinary copy of the suite: discovery, the protocols, the manifests and the loaders treat
it exactly like a folder download. A file name is its content, so an image that occurs twice in a domain and
class is written once, and a rerun writes the same files. The suite folder also receives
``hub-source.json``, the repository, revision and columns it came from; a build of that folder records them
as its source, in the manifest and hence in every result.

Domain and label values are matched to the suite's domain and class folder names ignoring case, spaces,
underscores and hyphens (``Real World`` -> ``Real_World``, ``art painting`` -> ``art_painting``); a value that
matches nothing is an error listing what was expected. Note that the file names differ from the original
release's, so under the ``full`` protocol the held-out images are DomainBed's only for a folder copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import HfApi
from PIL import Image, UnidentifiedImageError

from imagenet_dg.atomic import write_bytes_atomic
from imagenet_dg.disk import reporting_write_faults
from imagenet_dg.errors import ImageNetDGError, OutputExistsError
from imagenet_dg.hashing import file_sha256
from imagenet_dg.suites import FOLDER_LAYOUT, Suite, get_suite

SOURCE_FILE = "hub-source.json"
"""File in a materialised suite folder naming the Hub repository and revision it came from."""

_FORMAT_VERSION = 1
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "PPM": ".ppm"}


class HubSourceError(ImageNetDGError):
    """A Hub dataset cannot be read as the suite asked for."""


@dataclass(frozen=True)
class HubColumns:
    """Which columns of the Hub dataset hold what."""

    image: str = "image"
    domain: str = "domain"
    label: str = "label"


@dataclass(frozen=True)
class MaterialisedSuite:
    """A suite written out from a Hub dataset."""

    suite: str
    root: Path
    """The folder to scan the suite under (it holds the suite folder)."""
    folder: Path
    source: Mapping[str, object]
    """What to record: kind ``hub``, repo_id, revision, columns, images."""


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _matcher(names: Mapping[str, list[str]], what: str, suite: Suite):
    """A function from a value of the dataset to the id whose accepted names (normalised) contain it."""
    index: dict[str, str] = {}
    for target, accepted in names.items():
        for name in accepted:
            index.setdefault(_normal(name), target)

    def match(value: object) -> str:
        found = index.get(_normal(str(value)))
        if found is None:
            raise HubSourceError(
                f"the dataset's {what} value {value!r} matches none of {suite.display_name}'s {what}s "
                f"({', '.join(names)}); choose the column holding them with --hub-columns, or the suite it "
                "belongs to with --suite"
            )
        return found

    return match


def resolve_revision(repo_id: str, revision: str | None) -> str:
    """The commit a Hub revision names. A branch or tag is looked up on the Hub; a 40-digit commit is kept."""
    if revision is None:
        raise HubSourceError(
            f"--revision is required with --hub {repo_id}: a commit (or a branch or tag, resolved to its commit) "
            "of the dataset repository, so that the build and every result name exactly which images were used"
        )
    if _COMMIT.match(revision):
        return revision
    try:
        return str(HfApi().dataset_info(repo_id, revision=revision).sha)
    except Exception as error:  # the Hub client raises many kinds; report any as one line
        raise HubSourceError(
            f"cannot resolve revision {revision!r} of the Hub dataset {repo_id} ({type(error).__name__}: {error}); "
            "give a commit id instead, or check the name and your network"
        ) from None


def local_revision(folder: Path) -> str:
    """The revision recorded for a local folder laid out as a Hub repository: a hash of its data files."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    if not files:
        raise HubSourceError(f"{folder} holds no parquet file; expected a Hub dataset repository in parquet form")
    for file in files:
        digest.update(f"{file.relative_to(folder).as_posix()}\t{file_sha256(file)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def _load(repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None):
    try:
        loaded = datasets.load_dataset(repo_id, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as error:  # datasets raises many kinds; report any as one line
        raise HubSourceError(f"cannot load the dataset {repo_id} at {revision}: {type(error).__name__}: {error}") from None
    return [loaded[split] for split in sorted(loaded)]


def _names_of(dataset, column: str) -> list[str] | None:
    feature = dataset.features[column]
    return list(feature.names) if hasattr(feature, "names") else None


def materialise_hub_suite(
    suite: Suite | str,
    repo_id: str,
    root: str | os.PathLike[str],
    *,
    revision: str | None = None,
    columns: HubColumns = HubColumns(),
    cache_dir: str | os.PathLike[str] | None = None,
) -> MaterialisedSuite:
    """Write the images of the Hub dataset ``repo_id`` (or of a local folder laid out as one) under ``root``
    in ``suite``'s folder layout, and say what to record.

    A remote dataset needs ``revision``; a local folder's revision is the hash of its parquet files. The suite
    folder is written beside its place and renamed into it; a folder already there is reused when its
    ``hub-source.json`` names the same repository, revision and columns, and refused otherwise.
    """
    suite = get_suite(suite) if isinstance(suite, str) else suite
    if suite.layout != FOLDER_LAYOUT:
        raise HubSourceError(f"suite {suite.name} cannot be read from a Hub parquet dataset")
    local = Path(repo_id).is_dir()
    if local:
        pinned = local_revision(Path(repo_id))
        recorded_repo = Path(repo_id).absolute().name  # no machine path in the records
        load_revision = None
    else:
        pinned = resolve_revision(repo_id, revision)
        recorded_repo, load_revision = repo_id, pinned
    source = {
        "kind": "hub",
        "repo_id": recorded_repo,
        "revision": pinned,
        "columns": {"image": columns.image, "domain": columns.domain, "label": columns.label},
        "images": "original bytes in content-addressed files",
        "format": _FORMAT_VERSION,
    }
    root = Path(os.path.abspath(os.fspath(root)))
    folder = root / suite.folder_names[0]
    if folder.exists():
        marker = folder / SOURCE_FILE
        if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("source") == source:
            return MaterialisedSuite(suite.name, root, folder, source)
        raise OutputExistsError(
            f"{folder} already exists and was not written from {recorded_repo} at {pinned} with these columns; "
            "choose another --root for the images, or move that folder"
        )
    parts = _load(repo_id, load_revision, cache_dir)
    domain_of = _matcher({d.id: [d.id, d.display_name, *d.folders()] for d in suite.domains}, "domain", suite)
    class_of = _matcher({c: [c] for c in suite.classes}, "label", suite)
    staging = root / f".{folder.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # our own leftover of an interrupted run
    counts: dict[str, dict[str, int]] = {d: {c: 0 for c in suite.classes} for d in suite.domain_ids}
    rows = duplicates = 0
    for part in parts:
        missing = [c for c in (columns.image, columns.domain, columns.label) if c not in part.column_names]
        if missing:
            raise HubSourceError(
                f"the dataset {recorded_repo} has no column(s) {', '.join(missing)}; it has "
                f"{', '.join(part.column_names)}. Name the right ones with --hub-columns "
                "IMAGE,DOMAIN,LABEL"
            )
        domain_names, label_names = _names_of(part, columns.domain), _names_of(part, columns.label)
        part = part.cast_column(columns.image, datasets.Image(decode=False))
        for row in part:
            domain_value, label_value = row[columns.domain], row[columns.label]
            if isinstance(label_value, int) and label_names is None:
                raise HubSourceError(
                    f"the dataset {recorded_repo}'s {columns.label!r} column holds bare integers without class "
                    "names, so its classes cannot be matched to folder names; use a column of names"
                )
            domain = domain_of(domain_names[domain_value] if domain_names and isinstance(domain_value, int) else domain_value)
            class_id = class_of(label_names[label_value] if label_names and isinstance(label_value, int) else label_value)
            data = row[columns.image]["bytes"]
            if data is None:
                raise HubSourceError(f"an image of {recorded_repo} carries no bytes (only a path); expected embedded images")
            target = staging / suite.domain(domain).folders()[0] / class_id / _file_name(data)
            rows += 1
            if target.exists():
                duplicates += 1
                continue
            # Plain writes: the staging folder is renamed into place only when complete.
            with reporting_write_faults(target, f"an image of {recorded_repo}", len(data)):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            counts[domain][class_id] += 1
    source_record = {"source": source, "rows": rows, "duplicates_merged": duplicates, "counts": counts}
    write_bytes_atomic(staging / SOURCE_FILE, (json.dumps(source_record, indent=1, sort_keys=True) + "\n").encode())
    os.replace(staging, folder)
    return MaterialisedSuite(suite.name, root, folder, source)


def _file_name(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            kind = picture.format or ""
    except (UnidentifiedImageError, OSError):
        kind = ""
    extension = _EXTENSIONS.get(kind)
    if extension is None:
        raise HubSourceError(f"an image is not in a format the loaders read (found {kind or 'unrecognised bytes'})")
    return hashlib.sha256(data).hexdigest()[:32] + extension


def recorded_source(folder: str | os.PathLike[str]) -> Mapping[str, object] | None:
    """The Hub source a materialised suite folder records, or None for any other folder."""
    marker = Path(folder) / SOURCE_FILE
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))["source"]
