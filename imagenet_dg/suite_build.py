"""Building a standard suite: a scanned suite in, a Hub-layout dataset folder out, as ImageNet-DG is built.

The output has the same shape as an ImageNet-DG build: ``README.md`` whose front matter lists every
configuration's data files, ``data/<config>/<split>-NNNNN-of-NNNNN.parquet`` and ``manifest.json`` with each
file's SHA-256 and the content hash. A ``fewshot`` configuration (``<target>-<k>shot-seed<s>``) holds the
splits expert, guide and test; a ``full`` one (``<target>-full-trial<t>``) holds train, validation and test.
The manifest also says which suite and protocol it is, whether the images are synthetic, where they came from
(a folder layout, or a Hub repository at a pinned revision) and each configuration's classes as ids and
prompt names.

Writing goes through the ImageNet-DG builder's staging folder, resume and publish steps, so a suite build is
just as atomic, resumable and careful not to replace what it did not write.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imagenet_dg import __version__
from imagenet_dg import build as imagenet_build
from imagenet_dg.atomic import atomic_path, write_text_atomic
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.hashing import file_sha256
from imagenet_dg.manifests import (
    DATA_DIR,
    MANIFEST_FORMAT,
    ShardRecord,
    content_hash,
    dumps_json,
    shard_name,
    write_manifest,
)
from imagenet_dg.hub_suite_source import HubColumns, MaterialisedSuite, materialise_hub_suite, recorded_source
from imagenet_dg.mini_suites import is_miniature, make_mini_suite
from imagenet_dg.suite_card import suite_readme
from imagenet_dg.suite_discovery import SuiteScan, scan_suite
from imagenet_dg.suite_protocols import (
    HOLDOUT_FRACTION,
    PARTITION_SEED,
    SPLIT_COLUMNS,
    SUITE_PROTOCOL_VERSION,
    SuiteSplits,
    fewshot_splits,
    full_split_domain,
    full_splits,
    partition_domain,
    protocol_splits,
)
from imagenet_dg.suites import Suite, check_protocol, config_name, get_suite, prompt_name

logger = logging.getLogger(__name__)

DEFAULT_FEWSHOT_SEEDS = (1, 2, 3)
DEFAULT_TRIAL_SEEDS = (0, 1, 2)
"""DomainBed's sweeps use trial seeds 0, 1 and 2."""


@dataclass(frozen=True)
class SuiteBuildOptions:
    """What to build from a suite. The defaults: every target, 16 shots, few-shot seeds 1-3 (trial seeds 0-2
    under ``full``)."""

    protocol: str = "fewshot"
    targets: tuple[str, ...] = ()
    """Target domains; empty: every domain of the suite."""
    shots: tuple[int, ...] = (16,)
    """Shots per class (fewshot only)."""
    seeds: tuple[int, ...] = ()
    """Few-shot seeds (fewshot) or DomainBed trial seeds (full); empty: the protocol's defaults."""
    partition_seed: int = PARTITION_SEED

    def __post_init__(self) -> None:
        check_protocol(self.protocol)
        if self.protocol == "fewshot" and (not self.shots or any(k < 1 for k in self.shots)):
            raise ImageNetDGError(f"--shots: expected positive numbers of images per class, got {self.shots}")
        if any(s < 0 for s in self.seeds):
            raise ImageNetDGError(f"--seeds: expected non-negative integers, got {self.seeds}")

    def resolved_seeds(self) -> tuple[int, ...]:
        if self.seeds:
            return tuple(sorted(set(self.seeds)))
        return DEFAULT_FEWSHOT_SEEDS if self.protocol == "fewshot" else DEFAULT_TRIAL_SEEDS

    def resolved_targets(self, suite: Suite) -> tuple[str, ...]:
        targets = self.targets or suite.domain_ids
        for target in targets:
            suite.task(target)
        return tuple(t for t in suite.domain_ids if t in set(targets))

    def content_options(self, suite: Suite) -> dict:
        options: dict[str, object] = {
            "protocol": self.protocol,
            "targets": list(self.resolved_targets(suite)),
            "seeds": list(self.resolved_seeds()),
        }
        if self.protocol == "fewshot":
            options["shots"] = sorted(set(self.shots))
            options["partition_seed"] = self.partition_seed
        else:
            options["holdout_fraction"] = HOLDOUT_FRACTION
        return options


@dataclass(frozen=True)
class SuiteBuildResult:
    """What a suite build produced."""

    out: Path
    manifest: dict
    written: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()
    up_to_date: bool = False


def split_features(classes: Sequence[str]) -> datasets.Features:
    """Column types of a suite split table; ``label`` names are the class ids in label order."""
    return datasets.Features(
        {
            "path": datasets.Value("string"),
            "domain": datasets.Value("string"),
            "class_id": datasets.Value("string"),
            "class_name": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(classes)),
            "pool": datasets.Value("string"),
        }
    )


def write_suite_split(folder: Path, config: str, split: str, frame: pd.DataFrame, classes: Sequence[str]) -> ShardRecord:
    """Write one split as its single parquet shard, atomically, with fixed writer settings (same table, same
    bytes); returns its record."""
    schema = split_features(classes).arrow_schema
    arrays = {c: frame[c].tolist() for c in SPLIT_COLUMNS}
    table = pa.Table.from_pydict(arrays, schema=schema)
    relative = f"{DATA_DIR}/{config}/{shard_name(split, 0, 1)}"
    with atomic_path(folder / relative) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False, store_schema=True)
    return ShardRecord(relative, len(frame), file_sha256(folder / relative))


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a domain table's (path, class) rows in path order: identifies what was scanned."""
    digest = hashlib.sha256()
    ordered = table.sort_values("path", kind="stable")
    for path, class_id in zip(ordered["path"].tolist(), ordered["class_id"].tolist()):
        digest.update(f"{path}\t{class_id}\n".encode())
    return digest.hexdigest()


def _all_splits(suite: Suite, scan: SuiteScan, options: SuiteBuildOptions) -> dict[str, SuiteSplits]:
    tables = scan.tables
    result: dict[str, SuiteSplits] = {}
    if options.protocol == "fewshot":
        partitions = {d: partition_domain(tables[d], d, options.partition_seed) for d in suite.domain_ids}
        for target in options.resolved_targets(suite):
            for shots in sorted(set(options.shots)):
                for seed in options.resolved_seeds():
                    name = config_name(suite.task(target).name, "fewshot", shots=shots, seed=seed)
                    result[name] = fewshot_splits(suite, tables, target, shots, seed, options.partition_seed, partitions)
    else:
        by_seed = {
            seed: {d: full_split_domain(tables[d], suite, d, seed) for d in suite.domain_ids}
            for seed in options.resolved_seeds()
        }
        for target in options.resolved_targets(suite):
            for seed in options.resolved_seeds():
                name = config_name(suite.task(target).name, "full", seed=seed)
                result[name] = full_splits(suite, tables, target, seed, by_seed[seed])
    return result


def _per_domain(frame: pd.DataFrame) -> dict[str, int]:
    return {str(d): int(n) for d, n in frame["domain"].value_counts(sort=False).sort_index().items()}


def build_suite(
    scan: SuiteScan,
    out: str | os.PathLike[str],
    options: SuiteBuildOptions = SuiteBuildOptions(),
    *,
    source: Mapping[str, object] | None = None,
    overwrite: bool = False,
    on_config: Callable[[str], None] | None = None,
) -> SuiteBuildResult:
    """Build the dataset folder ``out`` of the scanned suite ``scan`` under ``options``.

    ``source`` describes where the images came from, recorded in the manifest (default: the Hub repository
    and revision of a materialised folder, else the folder layout found by the scan, without machine paths). A suite folder written by the miniature generator is
    recorded as synthetic whatever suite it was scanned as.
    """
    suite = scan.suite
    out = Path(out).absolute()
    location = scan.location
    folders = location.relative_folders()
    synthetic = suite.synthetic or is_miniature(location.folder)
    if synthetic and not suite.synthetic:
        logger.warning("%s was written by the miniature generator: recording the build as synthetic", location.folder)
    if source is None:
        source = recorded_source(location.folder) or {"kind": "folder", "folder": location.folder.name}
    source = dict(source)
    domains = {
        d: {"folder": folders[d], "images": len(t), "classes": int(t["class_id"].nunique()), "table_sha256": table_digest(t)}
        for d, t in scan.tables.items()
    }
    fingerprint = hashlib.sha256(
        dumps_json(
            {
                "suite": suite.name,
                "protocol_version": SUITE_PROTOCOL_VERSION,
                "manifest_format": MANIFEST_FORMAT,
                "generator": __version__,
                "options": options.content_options(suite),
                "domains": {d: r["table_sha256"] for d, r in domains.items()},
                "source": source,
                "synthetic": synthetic,
            }
        ).encode()
    ).hexdigest()
    existing = imagenet_build._check_output(out, fingerprint, overwrite, [location.folder])
    if existing is not None:
        logger.info("%s already holds this build (content hash %s)", out, existing["content_hash"])
        return SuiteBuildResult(out, existing, up_to_date=True)

    all_splits = _all_splits(suite, scan, options)
    staging = imagenet_build._open_staging(out, fingerprint)
    written, resumed = [], []
    configs: dict[str, dict] = {}
    for name, splits in all_splits.items():
        record = staging.finished(name)
        if record is not None:
            resumed.append(name)
        else:
            record = {"splits": {}}
            for split in protocol_splits(options.protocol):
                frame = splits.splits[split]
                shard = write_suite_split(staging.folder, name, split, frame, suite.classes)
                record["splits"][split] = {"rows": len(frame), "per_domain": _per_domain(frame), "files": [asdict(shard)]}
            staging.done[name] = record
            staging.save()
            written.append(name)
        if on_config is not None:
            on_config(name)
        configs[name] = {
            "task": splits.task.name,
            "target": splits.task.target,
            "sources": list(splits.task.sources),
            "protocol": options.protocol,
            "shots": splits.shots,
            "seed": splits.seed,
            "classes": [{"id": c, "name": prompt_name(c)} for c in splits.classes],
            "splits": record["splits"],
        }
    shards = [ShardRecord(**s) for c in configs.values() for sp in c["splits"].values() for s in sp["files"]]
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": suite.display_name,
        "suite": suite.name,
        "protocol": options.protocol,
        "protocol_version": SUITE_PROTOCOL_VERSION,
        "synthetic": synthetic,
        "generator": f"imagenet-dg {__version__}",
        "options": options.content_options(suite),
        "source": source,
        "domains": domains,
        "class_ids": list(suite.classes),
        "configs": configs,
        "content_hash": content_hash((s.path, s.sha256) for s in shards),
        "build_fingerprint": fingerprint,
    }
    write_text_atomic(staging.folder / "README.md", suite_readme(manifest))
    write_manifest(staging.folder, manifest)
    staging.state_file.unlink()
    imagenet_build._publish(staging.folder, out)
    return SuiteBuildResult(out, manifest, tuple(written), tuple(resumed))


def suite_of_manifest(manifest: Mapping) -> Suite:
    """The registered suite a built manifest names (ImageNet-DG when it names none)."""
    return get_suite(str(manifest.get("suite", "imagenet-dg")))


__all__ = [
    "SuiteBuildOptions",
    "SuiteBuildResult",
    "build_suite",
    "build_suite_from",
    "check_suite_source",
    "find_suite_images",
    "releases_are_synthetic",
    "split_features",
    "suite_of_manifest",
    "table_digest",
    "write_suite_split",
]


def check_suite_source(suite: Suite, *, root: object, hub: str | None, revision: str | None) -> None:
    """Refuse a source of ``suite``'s images that cannot work, before anything is read or written: a Hub
    mirror for ImageNet-DG or a miniature suite, a Hub mirror with no ``root`` to write it into, a remote one
    without ``revision``, a ``revision`` without ``hub``."""
    if hub is None:
        if revision is not None:
            raise ImageNetDGError("--revision applies only with --hub (a folder copy has no revision)")
        return
    if suite.layout != "domain/class/image" or suite.synthetic:
        raise ImageNetDGError(f"--hub: reads a standard suite's parquet mirror; --suite {suite.name} is not one")
    if root is None:
        raise ImageNetDGError(f"--hub {hub} needs --root: the folder to write the suite's images into")
    if revision is None and not Path(hub).is_dir():
        raise ImageNetDGError(
            f"--hub {hub}: --revision is required (a commit, branch or tag), so that the images scored are the "
            "ones recorded"
        )


@dataclass(frozen=True)
class SuiteImages:
    """Where a suite's images are, and the Hub copy they were written from, if any."""

    root: Path
    """The folder holding the suite folder."""
    hub: MaterialisedSuite | None = None


def find_suite_images(
    suite: Suite,
    *,
    root: str | os.PathLike[str] | None = None,
    mini_dir: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    revision: str | None = None,
    columns: HubColumns = HubColumns(),
) -> SuiteImages:
    """The folder holding ``suite``'s folder: ``root``; with ``hub``, after the Hub dataset is materialised under
    it (see :mod:`imagenet_dg.hub_suite_source`); for a miniature suite given no root, the miniature written (or
    found, if written before) in ``mini_dir/<suite name>``."""
    check_suite_source(suite, root=root, hub=hub, revision=revision)
    if hub is not None:
        copy = materialise_hub_suite(suite, hub, root, revision=revision, columns=columns)  # type: ignore[arg-type]
        return SuiteImages(copy.root, copy)
    if root is not None:
        return SuiteImages(Path(root))
    if not suite.synthetic or mini_dir is None:
        raise ImageNetDGError(
            f"--suite {suite.name} needs --root: the folder holding {suite.folder_names[0]}/ as DomainBed's "
            f"download script leaves it (get it from {suite.source}), or --hub with a parquet mirror"
        )
    images = SuiteImages(make_mini_suite(suite.name, Path(mini_dir) / suite.name).root)
    logger.info("Using the miniature (synthetic) %s in %s", suite.name, images.root)
    return images


def build_suite_from(
    suite_name: str,
    out: str | os.PathLike[str],
    options: SuiteBuildOptions = SuiteBuildOptions(),
    *,
    root: str | os.PathLike[str] | None = None,
    mini_dir: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    revision: str | None = None,
    columns: HubColumns = HubColumns(),
    overwrite: bool = False,
    on_config: Callable[[str], None] | None = None,
) -> SuiteBuildResult:
    """Find (or fetch) the suite ``suite_name`` (:func:`find_suite_images`) and build it into ``out``: what
    ``imagenet-dg build --suite`` does."""
    suite = get_suite(suite_name)
    if suite.layout != "domain/class/image":
        raise ImageNetDGError(f"suite {suite.name} is built by 'imagenet-dg build' without --suite")
    images = find_suite_images(suite, root=root, mini_dir=mini_dir, hub=hub, revision=revision, columns=columns)
    return build_suite(scan_suite(suite, images.root), out, options, overwrite=overwrite, on_config=on_config)


def releases_are_synthetic(roots: Sequence[os.PathLike[str] | str]) -> bool:
    """Whether any of the ImageNet release folders ``roots`` belongs to a miniature set (its marker beside it)."""
    from imagenet_dg.mini import MARKER

    return any((Path(r).parent / MARKER).is_file() or (Path(r) / MARKER).is_file() for r in roots)
