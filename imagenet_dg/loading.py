"""From manifest rows to PyTorch datasets over the user's own copies of the releases.

A manifest names each image by a POSIX path relative to the root folder of its domain's release; the user
says where each release lives (domain id -> root folder). Every path is checked to stay inside its root, so
a manifest from elsewhere cannot make a loader read other files of the machine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch.utils.data

from imagenet_dg.confinement import resolve_inside as _resolve_inside
from imagenet_dg.confinement import resolve_path  # noqa: F401 - part of this module's interface
from imagenet_dg.errors import BadImageError, ImageNetDGError, ManifestError, ReleaseNotFoundError
from imagenet_dg.images import UnreadableImageError, open_image
from imagenet_dg.manifests import (
    MANIFEST_FILE,
    config_classes,
    config_error,
    read_listed_shard,
    read_manifest,
    shard_file,
    split_shards,
    unlisted_in_config,
)
from imagenet_dg.protocols import FEWSHOT, PROTOCOL_SPLITS, protocol_of_manifest

logger = logging.getLogger(__name__)

ROW_COLUMNS = ("path", "domain", "label")
"""Columns :func:`labeled_images` reads; other columns are ignored."""

SPLIT_NAMES = PROTOCOL_SPLITS[FEWSHOT]
"""The splits of a few-shot task configuration; each split's rows carry its name in the ``pool`` column."""


@dataclass(frozen=True)
class LabeledImages(torch.utils.data.Dataset):
    """A fixed list of labelled image files of one domain (or several), and a PyTorch dataset over them.

    Item ``i`` is ``(image, label)``: the file opened as an RGB PIL image (:func:`imagenet_dg.images.open_image`)
    and its class index. :meth:`dataset` gives the same items through a transform (for a ``DataLoader``).
    """

    paths: tuple[Path, ...]
    """Absolute paths, already checked to lie inside their release roots."""
    labels: tuple[int, ...]
    domains: tuple[str, ...]
    """Domain id of each image."""

    def __post_init__(self) -> None:
        if not len(self.paths) == len(self.labels) == len(self.domains):
            raise ImageNetDGError(
                f"LabeledImages needs one label and one domain per path; got {len(self.paths)} paths, "
                f"{len(self.labels)} labels and {len(self.domains)} domains"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Image ``index`` as an RGB PIL image, with its label; an unreadable file raises
        :class:`~imagenet_dg.images.UnreadableImageError` naming it."""
        return open_image(self.paths[index]), self.labels[index]

    def dataset(self, transform: Callable[[Any], Any] | None = None) -> ImageDataset:
        """A PyTorch dataset of ``(transform(image), label)`` over these images, in their order."""
        return ImageDataset(self, transform)

    def subset(self, domain: str) -> LabeledImages:
        """The images of ``domain``, in their order here. A domain with no image here is an error."""
        keep = [i for i, d in enumerate(self.domains) if d == domain]
        if not keep:
            present = ", ".join(sorted(set(self.domains))) or "none"
            raise ImageNetDGError(f"no images of domain {domain!r} here; the domains present are: {present}")
        return LabeledImages(
            paths=tuple(self.paths[i] for i in keep),
            labels=tuple(self.labels[i] for i in keep),
            domains=tuple(self.domains[i] for i in keep),
        )

    def select(self, indices: Sequence[int]) -> LabeledImages:
        """The images at ``indices``, in that order."""
        return LabeledImages(
            paths=tuple(self.paths[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            domains=tuple(self.domains[i] for i in indices),
        )

    @staticmethod
    def concat(parts: Sequence[LabeledImages]) -> LabeledImages:
        """The images of ``parts`` one after the other (for instance every source domain, pooled)."""
        return LabeledImages(
            paths=tuple(p for part in parts for p in part.paths),
            labels=tuple(label for part in parts for label in part.labels),
            domains=tuple(d for part in parts for d in part.domains),
        )


class ImageDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` for each image of a :class:`LabeledImages`, in its order.

    Images are opened with :func:`imagenet_dg.images.open_image` (RGB, whatever the file's defects); without
    a transform the item is the PIL image itself.
    """

    def __init__(self, images: LabeledImages, transform: Callable[[Any], Any] | None = None) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = open_image(self.images.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.images.labels[index]


def labeled_images(rows: pd.DataFrame, roots: Mapping[str, str | os.PathLike[str]]) -> LabeledImages:
    """The images of manifest ``rows`` (columns path, domain, label), located under ``roots``, in row order.

    ``roots`` maps each domain id to the root folder of its release, the folder the manifest's paths are
    relative to. Every path is checked with :func:`resolve_path`; a domain without a root, or a root that is
    not a folder, is an error naming them.
    """
    missing_columns = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing_columns:
        raise ManifestError(
            f"manifest rows lack the column(s) {', '.join(missing_columns)}; expected at least "
            f"{', '.join(ROW_COLUMNS)}, found {', '.join(map(str, rows.columns)) or 'none'}"
        )
    domains = [str(d) for d in rows["domain"]]
    needed = sorted(set(domains))
    unrooted = [d for d in needed if d not in roots]
    if unrooted:
        raise ReleaseNotFoundError(
            f"no release root given for the domain(s) {', '.join(unrooted)}; the manifest's paths are relative "
            "to each domain's release root, so give one per domain: "
            f"roots={{{', '.join(f'{d!r}: <folder>' for d in unrooted)}}}, or on the command line "
            f"{' '.join(f'--{d} <folder>' for d in unrooted)} (roots given: {', '.join(sorted(roots)) or 'none'})"
        )
    bases: dict[str, tuple[Path, Path]] = {}
    for domain in needed:
        base = Path(roots[domain]).absolute()
        if not base.is_dir():
            raise ReleaseNotFoundError(
                f"the release root of domain {domain!r}, {base}, is not a folder; give the folder its manifest "
                "paths are relative to"
            )
        bases[domain] = (base, base.resolve())
    try:
        labels = tuple(int(label) for label in rows["label"])
    except (TypeError, ValueError) as error:
        raise ManifestError(f"manifest labels must be integers ({error})") from None
    paths = tuple(_resolve_inside(*bases[d], p) for d, p in zip(domains, rows["path"]))
    return LabeledImages(paths=paths, labels=labels, domains=tuple(domains))


@dataclass(frozen=True)
class TaskData:
    """What a method trains on, selects with and is scored on: one leave-one-domain-out task.

    Under the ``fewshot`` protocol ``expert`` and ``guide`` are the k-shot samples of the two pools and nothing
    is held out. Under ``full`` (DomainBed's), ``expert`` and ``guide`` are both the sources' 80% training part
    and ``held_out`` their 20% part. Which of these a method selects on is decided by
    :func:`guidg.model_selection.validation_images` (source data only); ``test`` is the target's scored part.
    """

    name: str
    """The configuration name, e.g. ``a-16shot-seed1`` or ``photo-full-trial0``."""
    class_names: tuple[str, ...]
    """Readable names in label order (they may repeat: classes are keyed by index)."""
    class_ids: tuple[str, ...]
    """wnids (or class folder names of the other suites) in label order."""
    target: str
    """Target domain id."""
    sources: tuple[str, ...]
    """Source domain ids."""
    expert: Mapping[str, LabeledImages]
    """Source domain -> its step-1 training images (fewshot: the expert-pool sample; full: its 80% part)."""
    guide: Mapping[str, LabeledImages]
    """Source domain -> its step-2 training images (fewshot: the guide-pool sample; full: its 80% part)."""
    held_out: Mapping[str, LabeledImages]
    """Source domain -> its held-out part (full: the 20% DomainBed holds out); empty under fewshot."""
    test: LabeledImages
    """The target's test split."""
    protocol: str = FEWSHOT
    """``fewshot`` or ``full``."""


def task_data_from_frames(
    name: str,
    splits: Mapping[str, pd.DataFrame],
    roots: Mapping[str, str | os.PathLike[str]],
    class_ids: Sequence[str],
    class_names: Sequence[str],
    target: str,
    sources: Sequence[str],
    protocol: str = FEWSHOT,
) -> TaskData:
    """The :class:`TaskData` of split tables ``splits`` (columns path, domain, label, pool), checked for
    consistency: sources only in the training and validation splits, each source present in all of them,
    only the target in test, every row's pool equal to its split's name, labels within the class list.

    ``fewshot`` splits are expert, guide and test; ``full`` splits are train, validation and test.
    """
    where = f"task {name}"
    if protocol not in PROTOCOL_SPLITS:
        raise ManifestError(f"{where}: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOL_SPLITS)}")
    split_names = PROTOCOL_SPLITS[protocol]
    if len(class_ids) != len(class_names):
        raise ManifestError(f"{where}: {len(class_ids)} class ids but {len(class_names)} class names")
    if target in sources:
        raise ManifestError(f"{where}: the target {target!r} is also listed among the sources")
    missing_splits = [s for s in split_names if s not in splits]
    if missing_splits:
        raise ManifestError(f"{where}: missing the split(s) {', '.join(missing_splits)} of protocol {protocol}")
    images: dict[str, LabeledImages] = {}
    for split in split_names:
        frame = splits[split]
        allowed = {target} if split == "test" else set(sources)
        if "pool" not in frame.columns:
            raise ManifestError(f"{where}: split {split} lacks the column pool")
        wrong_pool = sorted({str(p) for p in frame["pool"]} - {split})
        if wrong_pool:
            raise ManifestError(f"{where}: split {split} holds rows of pool(s) {', '.join(wrong_pool)}")
        found = images[split] = labeled_images(frame, roots)
        strangers = sorted(set(found.domains) - allowed)
        if strangers:
            raise ManifestError(
                f"{where}: split {split} holds images of {', '.join(strangers)}; expected only "
                f"{', '.join(sorted(allowed))}"
            )
        out_of_range = sorted({label for label in found.labels if not 0 <= label < len(class_ids)})
        if out_of_range:
            raise ManifestError(
                f"{where}: split {split} has labels {out_of_range[:5]} outside 0..{len(class_ids) - 1}"
            )
    by_source: dict[str, dict[str, LabeledImages]] = {}
    for split in split_names[:2]:
        empty = [s for s in sources if s not in images[split].domains]
        if empty:
            raise ManifestError(f"{where}: split {split} has no images of the source(s) {', '.join(empty)}")
        by_source[split] = {s: images[split].subset(s) for s in sources}
    if protocol == FEWSHOT:
        expert, guide, held_out = by_source["expert"], by_source["guide"], {}
    else:
        expert, guide, held_out = by_source["train"], by_source["train"], by_source["validation"]
    return TaskData(
        name=name,
        class_names=tuple(class_names),
        class_ids=tuple(class_ids),
        target=target,
        sources=tuple(sources),
        expert=MappingProxyType(expert),
        guide=MappingProxyType(guide),
        held_out=MappingProxyType(held_out),
        test=images["test"],
        protocol=protocol,
    )


def load_task(
    manifest_dir: str | os.PathLike[str], config: str, roots: Mapping[str, str | os.PathLike[str]]
) -> TaskData:
    """The task configuration ``config`` of the built dataset folder ``manifest_dir``, over the images
    under ``roots`` (domain id -> the folder its manifest paths are relative to).

    Reads ``manifest.json`` for the task's classes, domains and protocol (``fewshot`` when the manifest
    names none), and the parquet shards that ``manifest.json`` lists for that protocol's splits. Each shard
    is read once, its bytes checked against their recorded SHA-256 and the table parsed from those same bytes;
    the configuration's folder must hold nothing else (raises :class:`~imagenet_dg.errors.ManifestError`
    naming every file at fault otherwise).
    """
    folder = Path(manifest_dir)
    manifest = read_manifest(folder)
    configs = manifest["configs"]
    if config not in configs:
        raise ManifestError(
            f"{folder / MANIFEST_FILE}: no configuration {config!r}; it holds {', '.join(sorted(configs)) or 'none'}"
        )
    entry = configs[config]
    protocol = str(entry.get("protocol", protocol_of_manifest(manifest)))
    try:
        target = str(entry["target"])
        sources = [str(s) for s in entry["sources"]]
    except (KeyError, TypeError) as error:
        raise ManifestError(
            f"{folder / MANIFEST_FILE}: configuration {config!r} lacks {error}; expected a target and a list of "
            "sources"
        ) from None
    try:
        class_ids, class_names = config_classes(manifest, config)
    except ManifestError as error:
        raise ManifestError(f"{folder / MANIFEST_FILE}: {error}") from None
    if protocol not in PROTOCOL_SPLITS:
        raise ManifestError(
            f"{folder / MANIFEST_FILE}: configuration {config!r} has protocol {protocol!r}; expected one of "
            f"{', '.join(PROTOCOL_SPLITS)}"
        )
    splits = _read_splits(folder, manifest, config, PROTOCOL_SPLITS[protocol])
    task = task_data_from_frames(config, splits, roots, class_ids, class_names, target, sources, protocol)
    check_roots(task, roots)
    return task


ROOT_SAMPLE = 8
"""Images per domain that :func:`check_roots` looks for and decodes."""


def _image_lists(images: object) -> list[LabeledImages]:
    """Every LabeledImages in ``images``: one, a mapping or sequence of them, or the fields of a TaskData."""
    if isinstance(images, LabeledImages):
        return [images]
    if isinstance(images, Mapping):
        return [part for value in images.values() for part in _image_lists(value)]
    if isinstance(images, TaskData):
        return [part for f in dataclasses.fields(images) for part in _image_lists(getattr(images, f.name))]
    if isinstance(images, (list, tuple)):
        return [part for value in images for part in _image_lists(value)]
    return []


def check_roots(
    images: TaskData | LabeledImages | Mapping[str, LabeledImages] | Sequence[LabeledImages],
    roots: Mapping[str, str | os.PathLike[str]],
    *,
    sample: int = ROOT_SAMPLE,
) -> dict[str, Path]:
    """Check that each domain's release root holds the images the manifest names there, as pictures; return
    the root used for each domain (domain id -> absolute folder).

    ``images`` are as loaded over ``roots`` (their paths already joined to them, as :func:`load_task` gives).

    Up to ``sample`` images per domain, spread evenly over the domain's sorted paths, must exist as files and
    decode (:func:`imagenet_dg.images.open_image`). A root that is not the release the benchmark was built from
    (another release, the wrong level of its folders, an incomplete copy) fails here, before anything is
    trained, with a :class:`~imagenet_dg.errors.ReleaseNotFoundError` naming the domain, the root used, the
    files looked for, and the roots of every domain, rather than later as one unreadable image. A root whose
    sampled files are there but truncated or not images fails with a :class:`~imagenet_dg.errors.BadImageError`
    naming the root and each such file. Only the sample is read, so the check stays cheap.
    """
    by_domain: dict[str, set[Path]] = {}
    for part in _image_lists(images):
        for path, domain in zip(part.paths, part.domains):
            by_domain.setdefault(domain, set()).add(path)
    used = {d: Path(roots[d]).absolute() for d in sorted(by_domain) if d in roots}
    absent, damaged = [], []
    for domain, paths in sorted(by_domain.items()):
        ordered = sorted(paths)
        count = min(sample, len(ordered))
        picked = list(dict.fromkeys(ordered[round(i * (len(ordered) - 1) / max(count - 1, 1))] for i in range(count)))
        root = used.get(domain, Path("?"))
        missing = [p for p in picked if not p.is_file()]
        if missing:
            shown = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in missing[:3])
            absent.append(
                f"{domain} (root {root}): {len(missing)} of {len(picked)} images looked for are missing ({shown})"
            )
            continue
        # The files are there; a truncated copy or files that are not pictures would otherwise only fail
        # once training reaches them.
        unreadable = []
        for path in picked:
            try:
                open_image(path)
            except UnreadableImageError as error:
                unreadable.append(f"{error.path} ({error.reason})")
        if unreadable:
            damaged.append(
                f"{domain} (root {root}): {len(unreadable)} of {len(picked)} images looked at cannot be used: "
                + "; ".join(unreadable[:3])
                + (f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else "")
            )
        else:
            logger.info("images of %s from %s", domain, used.get(domain))
    listing = "; ".join(f"{d}: {r}" for d, r in used.items())
    if absent:
        raise ReleaseNotFoundError(
            "the release folders do not hold the benchmark's images: " + "; ".join(absent + damaged)
            + f". Roots used: {listing}. Give, for each domain, the folder of the release the benchmark was "
            "built from (the folder its manifest paths are relative to)"
        )
    if damaged:
        raise BadImageError(
            "the release folders hold damaged copies of the benchmark's images: " + "; ".join(damaged)
            + f". Roots used: {listing}. Replace those files with the ones of the official release (or give "
            "the folder of an intact copy); nothing was trained"
        )
    return used


def _read_splits(
    folder: Path, manifest: Mapping[str, Any], config: str, splits: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """The rows of each of ``splits`` of ``config`` (the shards ``manifest`` lists, in listed order), only the
    columns loading needs.

    Every shard of the configuration is checked against its recorded hash and its folder must hold no other
    file: a damaged or altered configuration is refused, never scored, with every problem named. A shard is
    read once; its hash and its table come from the same bytes, so a file swapped after the check is never
    what is loaded.
    """
    listed = manifest["configs"][config]["splits"]
    for split in splits:
        if split not in listed:
            raise ManifestError(
                f"{folder / MANIFEST_FILE}: configuration {config!r} lists no split {split!r}; the dataset folder "
                "is incomplete: build or download it again"
            )
    problems: list[str] = []
    tables: dict[str, list[pa.Table]] = {split: [] for split in splits}
    for split in listed:  # every split, wanted or not: none of a damaged configuration is scored
        for record in split_shards(manifest, config, split):
            try:
                data = read_listed_shard(folder, record)
            except ManifestError as error:
                problems.append(str(error))
                continue
            if split in tables:
                tables[split].append(_parse_shard(shard_file(folder, record), data))
    problems += unlisted_in_config(folder, manifest, config)
    if problems:
        raise config_error(folder, config, problems)
    return {split: pa.concat_tables(parts).to_pandas() for split, parts in tables.items()}


def _parse_shard(shard: Path, data: bytes) -> pa.Table:
    """The columns loading needs of the parquet file ``shard`` whose (checked) bytes are ``data``."""
    columns = [*ROW_COLUMNS, "pool"]
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        lacking = [c for c in columns if c not in parquet.schema_arrow.names]
        if lacking:
            raise ManifestError(f"{shard}: lacks the column(s) {', '.join(lacking)}; expected {', '.join(columns)}")
        # Only the needed columns: shards with embedded images are mostly image bytes.
        return parquet.read(columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise ManifestError(f"{shard}: not a readable parquet file ({error})") from None
