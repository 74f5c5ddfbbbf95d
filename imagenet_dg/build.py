"""Building ImageNet-DG: scanned releases in, a Hub-layout dataset folder out.

The build writes into a staging folder beside the output (``.<name>.partial``) and renames it onto the
output only when every file is in place, so an interrupted build never leaves a half-written output. The
staging folder remembers which configurations are finished; a rerun with the same releases and options
resumes from there. An existing output is never replaced unless asked to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from imagenet_dg import __version__
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.card import dataset_readme
from imagenet_dg.domains import DOMAINS
from imagenet_dg.errors import BadImageError, ImageNetDGError, OutputExistsError, ReleaseNotFoundError
from imagenet_dg.hashing import file_sha256
from imagenet_dg.health import BAD_IMAGE_POLICIES, HealthReport, ImageProblem, check_images
from imagenet_dg.manifests import (
    COLUMNS,
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    ShardRecord,
    content_hash,
    dumps_json,
    read_manifest,
    write_manifest,
    write_split,
)
from imagenet_dg.protocol import (
    DEFAULT_SEEDS,
    DEFAULT_SHOTS,
    PARTITION_SEED,
    PROTOCOL_VERSION,
    SHOT_CHOICES,
    SPLITS,
    TASKS,
    TaskSplits,
    assemble_task,
    config_name,
    draw_shots,
    get_task,
    split_pools,
    task_statistics,
)
from imagenet_dg.releases import DomainScan
from imagenet_dg.taxonomy import load_taxonomy

logger = logging.getLogger(__name__)

STATE_FILE = ".build-state.json"


@dataclass(frozen=True)
class BuildOptions:
    """What to build. The defaults build the benchmark as published: 16 shots, seeds 1, 2 and 3."""

    tasks: tuple[str, ...] = tuple(TASKS)
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    partition_seed: int = PARTITION_SEED
    embed_images: bool = False
    verify: bool = False
    on_bad_image: str = "stop"
    workers: int | None = None
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    synthetic: bool = False
    """True when the releases are the generated miniature ones: recorded, so they never pass for real data."""

    def __post_init__(self) -> None:
        for task in self.tasks:
            get_task(task)
        for shots in self.shots:
            if shots not in SHOT_CHOICES:
                raise ImageNetDGError(f"shots must be among {SHOT_CHOICES}, got {shots}")
        if not self.tasks or not self.shots or not self.seeds:
            raise ImageNetDGError("a build needs at least one task, one shot count and one seed")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ImageNetDGError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")

    def domains(self) -> tuple[str, ...]:
        """Domain ids the selected tasks need, in registry order."""
        needed = {d for t in self.tasks for d in (TASKS[t].target, *TASKS[t].sources)}
        return tuple(d for d in DOMAINS if d in needed)

    def configs(self) -> list[tuple[str, int, int]]:
        """(task, shots, seed) of every configuration, in output order."""
        return [(t, k, s) for t in self.tasks for k in sorted(self.shots) for s in sorted(self.seeds)]

    def content_options(self) -> dict:
        """The options that decide the output's content (not how it is computed)."""
        return {
            "tasks": list(self.tasks),
            "shots": sorted(self.shots),
            "seeds": sorted(self.seeds),
            "partition_seed": self.partition_seed,
            "embed_images": self.embed_images,
            "verify": self.verify,
            "on_bad_image": self.on_bad_image,
            "max_shard_bytes": self.max_shard_bytes if self.embed_images else None,
            "synthetic": self.synthetic,
        }


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    out: Path
    manifest: dict
    written: tuple[str, ...] = ()
    """Configurations written by this run."""
    resumed: tuple[str, ...] = ()
    """Configurations found finished in the staging folder of an interrupted run."""
    health: HealthReport | None = None
    up_to_date: bool = False
    """True when the output already held exactly this build and nothing was done."""


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a domain table's (path, wnid) rows in path order: identifies what was scanned."""
    digest = hashlib.sha256()
    ordered = table.sort_values("path", kind="stable")
    for path, wnid in zip(ordered["path"].tolist(), ordered["wnid"].tolist()):
        digest.update(f"{path}\t{wnid}\n".encode())
    return digest.hexdigest()


def _release_record(scan: DomainScan, digest: str) -> dict:
    domain = DOMAINS[scan.domain]
    classes = int(scan.table["wnid"].nunique())
    official = len(domain.wnids(load_taxonomy()))
    return {
        "release": domain.release,
        "layout": scan.layout,
        "images": len(scan.table),
        "classes": classes,
        "official_classes": official,
        "complete_class_set": classes == official,
        "table_sha256": digest,
    }


def _fingerprint(releases: Mapping[str, dict], options: BuildOptions) -> str:
    payload = {
        "protocol_version": PROTOCOL_VERSION,
        "generator": __version__,
        "options": options.content_options(),
        "releases": {d: (r["layout"], r["table_sha256"]) for d, r in releases.items()},
    }
    return hashlib.sha256(dumps_json(payload).encode()).hexdigest()


def _split_frame(splits: TaskSplits, name: str) -> pd.DataFrame:
    taxonomy = load_taxonomy()
    frame = splits.split(name).copy()
    frame["release"] = frame["domain"].map(lambda d: DOMAINS[d].release)
    frame["class_name"] = frame["wnid"].map(taxonomy.names.__getitem__)
    return frame[list(COLUMNS)]


def _per_domain(frame: pd.DataFrame) -> dict[str, int]:
    return {str(d): int(n) for d, n in frame["domain"].value_counts(sort=False).sort_index().items()}


@dataclass
class _Staging:
    folder: Path
    fingerprint: str
    done: dict[str, dict] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.folder / STATE_FILE

    def save(self) -> None:
        write_text_atomic(self.state_file, dumps_json({"fingerprint": self.fingerprint, "done": self.done}))

    def finished(self, config: str) -> dict | None:
        """The recorded splits of ``config`` if all its files are present and intact."""
        record = self.done.get(config)
        if record is None:
            return None
        for split in record["splits"].values():
            for shard in split["files"]:
                file = self.folder / shard["path"]
                if not file.is_file() or file_sha256(file) != shard["sha256"]:
                    return None
        return record


def _staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _open_staging(out: Path, fingerprint: str) -> _Staging:
    folder = _staging_folder(out)
    if folder.exists():
        try:
            state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if state.get("fingerprint") == fingerprint:
            logger.info("resuming the interrupted build in %s", folder)
            return _Staging(folder, fingerprint, dict(state.get("done", {})))
        logger.info("discarding %s: it holds an interrupted build of other releases or options", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    staging = _Staging(folder, fingerprint)
    staging.save()
    return staging


def _check_output(out: Path, fingerprint: str, overwrite: bool) -> dict | None:
    """The existing manifest when ``out`` already holds this very build; raises if ``out`` must not be touched."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another output path")
    if not any(out.iterdir()):
        return None
    if (out / MANIFEST_FILE).is_file():
        manifest = read_manifest(out)
        if manifest.get("build_fingerprint") == fingerprint:
            return manifest
        if overwrite:
            return None
        raise OutputExistsError(
            f"{out} already holds an ImageNet-DG build of other releases or options "
            f"(content hash {manifest['content_hash']}); pass --overwrite to replace it or choose another --out"
        )
    if overwrite:
        return None
    raise OutputExistsError(f"{out} exists, is not empty and holds no {MANIFEST_FILE}; choose an empty or new folder")


def _selected_paths(all_splits: Sequence[TaskSplits]) -> dict[str, set[str]]:
    selected: dict[str, set[str]] = {}
    for splits in all_splits:
        for name in SPLITS:
            frame = splits.split(name)
            for domain, paths in frame.groupby("domain", sort=True)["path"]:
                selected.setdefault(str(domain), set()).update(paths.tolist())
    return selected


def _assemble_all(tables: Mapping[str, pd.DataFrame], options: BuildOptions) -> dict[str, TaskSplits]:
    sources = sorted({d for t in options.tasks for d in TASKS[t].sources})
    pools = {d: split_pools(tables[d], d, options.partition_seed) for d in sources}
    # One draw per (domain, shots, seed), shared by every task that has the domain as a source.
    samples = {
        (d, shots, seed): draw_shots(pools[d], d, shots, seed)
        for d in sources for shots in options.shots for seed in options.seeds
    }
    return {
        config_name(task, shots, seed): assemble_task(
            TASKS[task], tables, shots, seed, options.partition_seed,
            samples={d: samples[(d, shots, seed)] for d in TASKS[task].sources},
        )
        for task, shots, seed in options.configs()
    }


def _verified_splits(
    scans: Mapping[str, DomainScan], tables: dict[str, pd.DataFrame], options: BuildOptions
) -> tuple[dict[str, TaskSplits], HealthReport | None, list[dict]]:
    """Assemble the splits; with ``verify``, open every selected image and handle the unusable ones.

    Under ``skip`` an unusable image is removed from its domain table and the splits are assembled again, so
    its place is taken by the image the protocol picks next; the new selections are checked in turn until
    no unusable image remains selected.
    """
    splits = _assemble_all(tables, options)
    if not options.verify:
        return splits, None, []
    checked: dict[str, set[str]] = {}
    problems: list[ImageProblem] = []
    excluded: list[dict] = []
    total_checked = 0
    while True:
        bad_found: dict[str, list[ImageProblem]] = {}
        for domain, paths in sorted(_selected_paths(list(splits.values())).items()):
            unchecked = sorted(paths - checked.setdefault(domain, set()))
            if not unchecked:
                continue
            logger.info("checking %d images of %s", len(unchecked), domain)
            report = check_images(scans[domain].root, unchecked, workers=options.workers)
            checked[domain].update(unchecked)
            total_checked += report.checked
            problems.extend(ImageProblem(f"{domain}:{p.path}", p.kind, p.detail) for p in report.problems)
            if report.bad:
                bad_found[domain] = list(report.bad)
        if not bad_found:
            break
        if options.on_bad_image == "stop":
            listing = HealthReport(total_checked, tuple(problems)).format()
            raise BadImageError(
                f"unusable images among the selected ones (rerun with --on-bad-image skip to exclude them):\n{listing}"
            )
        for domain, bad in bad_found.items():
            bad_paths = {p.path for p in bad}
            logger.warning("excluding %d unusable images of %s", len(bad_paths), domain)
            tables[domain] = tables[domain].loc[~tables[domain]["path"].isin(bad_paths)].reset_index(drop=True)
            excluded.extend({"domain": domain, "path": p.path, "kind": p.kind, "detail": p.detail} for p in bad)
        splits = _assemble_all(tables, options)
    excluded.sort(key=lambda e: (e["domain"], e["path"]))
    return splits, HealthReport(total_checked, tuple(sorted(problems, key=lambda p: p.path))), excluded


def build(
    scans: Mapping[str, DomainScan],
    out: str | os.PathLike[str],
    options: BuildOptions = BuildOptions(),
    *,
    overwrite: bool = False,
    on_config: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the ImageNet-DG dataset folder ``out`` from scanned releases.

    ``scans`` maps domain id -> :class:`DomainScan` and must cover every domain the selected tasks need.
    ``on_config`` is called with each configuration name as soon as its files are written (a progress hook).
    """
    out = Path(out).absolute()
    missing = [d for d in options.domains() if d not in scans]
    if missing:
        raise ReleaseNotFoundError(f"the selected tasks need the releases of {', '.join(missing)}, which were not given")
    releases = {d: _release_record(scans[d], table_digest(scans[d].table)) for d in options.domains()}
    for domain, record in releases.items():
        if not record["complete_class_set"]:
            logger.warning(
                "%s covers %d of the %d official classes; tasks use the classes present",
                domain, record["classes"], record["official_classes"],
            )
    fingerprint = _fingerprint(releases, options)
    existing = _check_output(out, fingerprint, overwrite)
    if existing is not None:
        logger.info("%s already holds this build (content hash %s)", out, existing["content_hash"])
        return BuildResult(out, existing, up_to_date=True)

    tables = {d: scans[d].table for d in options.domains()}
    splits, health, excluded = _verified_splits(scans, tables, options)
    staging = _open_staging(out, fingerprint)
    image_roots = {d: scans[d].root for d in options.domains()} if options.embed_images else None
    written, resumed = [], []
    configs: dict[str, dict] = {}
    for name, task_splits in splits.items():
        record = staging.finished(name)
        if record is not None:
            resumed.append(name)
        else:
            record = {"splits": {}}
            for split in SPLITS:
                frame = _split_frame(task_splits, split)
                shards = write_split(
                    staging.folder, name, split, frame, task_splits.classes, image_roots, options.max_shard_bytes
                )
                record["splits"][split] = {
                    "rows": len(frame),
                    "per_domain": _per_domain(frame),
                    "files": [asdict(s) for s in shards],
                }
            staging.done[name] = record
            staging.save()
            written.append(name)
        if on_config is not None:
            on_config(name)
        taxonomy = load_taxonomy()
        task = task_splits.task
        configs[name] = {
            "task": task.name,
            "target": task.target,
            "sources": list(task.sources),
            "shots": task_splits.shots,
            "seed": task_splits.seed,
            "classes": [{"id": w, "wnid": w, "name": taxonomy.names[w]} for w in task_splits.classes],
            "splits": record["splits"],
        }
    shards = [
        ShardRecord(**s) for c in configs.values() for split in c["splits"].values() for s in split["files"]
    ]
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": "ImageNet-DG",
        "suite": "imagenet-dg",
        "protocol": "fewshot",
        "synthetic": options.synthetic,
        "protocol_version": PROTOCOL_VERSION,
        "generator": f"imagenet-dg {__version__}",
        "partition_seed": options.partition_seed,
        "options": options.content_options(),
        "releases": releases,
        "statistics": task_statistics(tables, options.tasks).to_dict(orient="records"),
        "excluded": excluded,
        "quirks": _quirk_counts(health),
        "configs": configs,
        "content_hash": content_hash((s.path, s.sha256) for s in shards),
        "build_fingerprint": fingerprint,
    }
    write_text_atomic(staging.folder / "README.md", dataset_readme(manifest))
    write_manifest(staging.folder, manifest)
    staging.state_file.unlink()
    _publish(staging.folder, out)
    return BuildResult(out, manifest, tuple(written), tuple(resumed), health)


def _quirk_counts(health: HealthReport | None) -> dict[str, int]:
    if health is None:
        return {}
    counts: dict[str, int] = {}
    for problem in health.quirks:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    return dict(sorted(counts.items()))


def _publish(staging: Path, out: Path) -> None:
    """Move the finished staging folder onto ``out``, replacing an old output only after the move succeeded."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.replaced"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)
