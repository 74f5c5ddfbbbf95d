"""Building ImageNet-DG: scanned releases in, a Hub-layout dataset folder out.

The build writes into a staging folder beside the output (``.<name>.partial``) and renames it onto the
output only when every file is in place, so an interrupted build never leaves a half-written output. The
staging folder remembers which configurations are finished; a rerun with the same releases and options
resumes from there, and ends with exactly the files of an uninterrupted build (temporary files a killed
process left behind are swept away; they are recognised by their names, see :mod:`imagenet_dg.atomic`).

An existing output is never replaced unless asked to, and even then only when it holds an ImageNet-DG build
and nothing else: never a folder holding other files, the current folder, or a folder holding the releases.
An output is "up to date" only when it was built from the same releases, options and (with ``verify`` or
``embed_images``) image contents, and its files on disk are exactly those its manifest lists.
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
from imagenet_dg.atomic import is_temporary_name, write_text_atomic
from imagenet_dg.card import dataset_readme
from imagenet_dg.disk import embedded_bytes, require_free_space
from imagenet_dg.domains import DOMAINS
from imagenet_dg.errors import BadImageError, ImageNetDGError, OutputExistsError, ReleaseNotFoundError
from imagenet_dg.hashing import file_sha256
from imagenet_dg.health import BAD_IMAGE_POLICIES, HealthReport, ImageProblem, check_images
from imagenet_dg.manifests import (
    CARD_FILE,
    COLUMNS,
    DATA_DIR,
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    ShardRecord,
    content_hash,
    dumps_json,
    read_manifest,
    unlisted_files,
    verify_files,
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


def _fingerprint(
    releases: Mapping[str, dict],
    options: BuildOptions,
    excluded: Sequence[dict] = (),
    images_sha256: str | None = None,
) -> str:
    """Hash of every input that decides a build's content: the resume and "up to date" key.

    Beside the releases' file lists and the options, ``excluded`` (the images ``verify`` left out: they
    depend on the files' contents, not on their names) and ``images_sha256`` (the bytes of the selected
    images, which ``embed_images`` copies into the output). Each enters only when it can matter, so builds
    without them keep the key they always had. The manifest format enters too: an output written in an
    earlier format is not up to date.
    """
    payload: dict[str, object] = {
        "protocol_version": PROTOCOL_VERSION,
        "manifest_format": MANIFEST_FORMAT,
        "generator": __version__,
        "options": options.content_options(),
        "releases": {d: (r["layout"], r["table_sha256"]) for d, r in releases.items()},
    }
    if excluded:
        payload["excluded"] = [[e["domain"], e["path"], e["kind"]] for e in excluded]
    if images_sha256 is not None:
        payload["images_sha256"] = images_sha256
    return hashlib.sha256(dumps_json(payload).encode()).hexdigest()


def _selected_images_sha256(scans: Mapping[str, DomainScan], splits: Mapping[str, TaskSplits]) -> str:
    """SHA-256 over (domain, path, file SHA-256) of every selected image, in (domain, path) order."""
    digest = hashlib.sha256()
    for domain, paths in sorted(_selected_paths(list(splits.values())).items()):
        for path in sorted(paths):
            digest.update(f"{domain}\t{path}\t{file_sha256(scans[domain].root / path)}\n".encode())
    return digest.hexdigest()


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


def _is_build_file(relative: str) -> bool:
    """Whether a path inside a staging folder is one a build writes there (by its name)."""
    parts = relative.split("/")
    if is_temporary_name(parts[-1]):
        return True
    if len(parts) == 1:
        return relative in (STATE_FILE, MANIFEST_FILE, CARD_FILE)
    return parts[0] == DATA_DIR and len(parts) == 3 and parts[2].endswith(".parquet")


def _foreign_entries(folder: Path) -> list[str]:
    """Files under a staging folder that a build does not write there; such a folder is not ours to delete."""
    return [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if not p.is_dir() and not _is_build_file(p.relative_to(folder).as_posix())
    ]


def _remove_build_folder(folder: Path) -> None:
    """Delete a staging or replaced folder of ours; refuse when it holds anything a build does not write."""
    foreign = _foreign_entries(folder)
    if foreign:
        raise OutputExistsError(
            f"{folder} holds files a build does not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); move them elsewhere (or the folder), then build again"
        )
    shutil.rmtree(folder)


def _sweep(staging: _Staging) -> None:
    """Leave in a resumed staging folder only the state file and the files of finished configurations.

    A killed build leaves temporary files, and the shards of a configuration it had not finished; a resumed
    build that kept them would publish them beside the files of an uninterrupted one.
    """
    keep = {STATE_FILE} | {
        shard["path"] for record in staging.done.values() for split in record["splits"].values()
        for shard in split["files"]
    }
    foreign = _foreign_entries(staging.folder)
    if foreign:
        raise OutputExistsError(
            f"{staging.folder} holds files a build does not write ({', '.join(foreign[:5])}); move them "
            "elsewhere, then build again"
        )
    for path in sorted(staging.folder.rglob("*"), reverse=True):
        relative = path.relative_to(staging.folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif relative not in keep:
            path.unlink()


def _open_staging(out: Path, fingerprint: str) -> _Staging:
    folder = _staging_folder(out)
    if folder.exists():
        try:
            state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if isinstance(state, dict) and state.get("fingerprint") == fingerprint:
            logger.info("resuming the interrupted build in %s", folder)
            staging = _Staging(folder, fingerprint, dict(state.get("done", {})))
            # Only configurations whose files are all present and intact count as finished.
            staging.done = {name: record for name in list(staging.done) if (record := staging.finished(name))}
            _sweep(staging)
            staging.save()
            return staging
        logger.info("discarding %s: it holds an interrupted build of other releases or options", folder)
        _remove_build_folder(folder)
    folder.mkdir(parents=True)
    staging = _Staging(folder, fingerprint)
    staging.save()
    return staging


def _protected_problem(out: Path, release_roots: Sequence[Path]) -> str | None:
    """Why ``out`` must never be replaced: it is (or holds) the current folder or a release folder."""
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if cwd == real or cwd.is_relative_to(real):
        return f"{out} is the current folder or holds it"
    for root in release_roots:
        root_real = Path(root).resolve()
        if root_real == real or root_real.is_relative_to(real) or real.is_relative_to(root_real):
            return f"{out} holds, or lies inside, the release folder {root}"
    return None


def _check_output(
    out: Path,
    fingerprint: str,
    overwrite: bool,
    release_roots: Sequence[Path] = (),
    card: Callable[[Mapping], str] | None = None,
) -> dict | None:
    """The existing manifest when ``out`` already holds this very build, intact; None when ``out`` may be
    (re)built; raises OutputExistsError when ``out`` must not be touched.

    ``--overwrite`` replaces only a folder that holds an ImageNet-DG build (its ``manifest.json``) and no file
    the build did not write, and never the current folder or a folder holding (or inside) a release.
    ``card`` gives the ``README.md`` text the build writes for a manifest (read back from its file); with it,
    a different card also makes the output out of date. Without it the card only has to be present.
    """
    protected = _protected_problem(out, release_roots)
    if protected is not None:
        raise OutputExistsError(f"{protected}; it cannot be the output of a build: choose another --out")
    if out.is_symlink():
        raise OutputExistsError(
            f"{out} is a symbolic link; give the folder it points to ({out.resolve()}) or another --out"
        )
    if not out.exists():
        return None
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another output path")
    if not any(out.iterdir()):
        return None
    if not (out / MANIFEST_FILE).is_file():
        raise OutputExistsError(
            f"{out} exists, is not empty and holds no {MANIFEST_FILE}, so it is not an ImageNet-DG build; "
            "--overwrite only replaces an earlier build. Choose an empty or new folder"
        )
    try:
        manifest = read_manifest(out)
    except ImageNetDGError as error:
        manifest, damage = None, [str(error)]
    else:
        extra = unlisted_files(out, manifest)
        if extra:
            listing = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
            raise OutputExistsError(
                f"{out} holds an ImageNet-DG build and also {len(extra)} file(s) the build did not write "
                f"({listing}); move them out of the folder, or choose another --out. Neither a build nor "
                "--overwrite touches files it did not write"
            )
        damage = verify_files(out, manifest)
        readme = out / CARD_FILE
        if not readme.is_file():
            damage.append(f"{readme}: missing")
        elif card is not None and readme.read_text(encoding="utf-8") != card(manifest):
            damage.append(f"{readme}: not the card this version writes for the manifest")
    if manifest is not None and manifest.get("build_fingerprint") == fingerprint and not damage:
        return manifest
    if overwrite:
        return None
    if manifest is not None and manifest.get("build_fingerprint") == fingerprint:
        raise OutputExistsError(
            f"{out} holds this build, but its files do not match its {MANIFEST_FILE}:\n"
            + "\n".join(f"  {d}" for d in damage)
            + "\npass --overwrite to rebuild it"
        )
    if manifest is not None and manifest["format"] != MANIFEST_FORMAT:
        raise OutputExistsError(
            f"{out} holds a build in manifest format {manifest['format']}; this version writes format "
            f"{MANIFEST_FORMAT}: pass --overwrite to rebuild it in the new format, or choose another --out"
        )
    found = f"(content hash {manifest['content_hash']})" if manifest is not None else f"({damage[0]})"
    raise OutputExistsError(
        f"{out} already holds an ImageNet-DG build of other releases, options or image contents {found}; "
        "pass --overwrite to replace it or choose another --out"
    )


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
    ``on_config`` is called with each configuration name as soon as its files are written (a progress hook);
    configurations kept from an interrupted build are listed in the result's ``resumed`` instead.
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
    release_roots = [scans[d].root for d in options.domains()]
    # Refuse a protected output before any long verification.
    protected = _protected_problem(out, release_roots)
    if protected is not None:
        raise OutputExistsError(f"{protected}; it cannot be the output of a build: choose another --out")
    tables = {d: scans[d].table for d in options.domains()}
    splits, health, excluded = _verified_splits(scans, tables, options)
    images_sha256 = _selected_images_sha256(scans, splits) if options.embed_images else None
    fingerprint = _fingerprint(releases, options, excluded, images_sha256)
    existing = _check_output(out, fingerprint, overwrite, release_roots, card=dataset_readme)
    if existing is not None:
        logger.info("%s already holds this build (content hash %s)", out, existing["content_hash"])
        remove_replaced(out)
        return BuildResult(out, existing, up_to_date=True, health=health)

    staging = _open_staging(out, fingerprint)
    image_roots = {d: scans[d].root for d in options.domains()} if options.embed_images else None
    if image_roots is not None:  # refused now, with the figures, rather than when the disk is full
        frames = [s.split(split) for name, s in splits.items() if name not in staging.done for split in SPLITS]
        require_free_space(staging.folder, embedded_bytes(frames, image_roots), "the embedded images")
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
    # The card is made from the manifest as any reader sees it (canonical key order), so that it can be
    # checked against the manifest later.
    write_text_atomic(staging.folder / CARD_FILE, dataset_readme(json.loads(dumps_json(manifest))))
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


def remove_replaced(out: Path) -> None:
    """Remove the earlier build that a publish killed after moving the new one in left beside ``out``."""
    old = out.parent / f".{out.name}.replaced"
    if old.exists() and out.is_dir():
        _remove_build_folder(old)


def _publish(staging: Path, out: Path) -> None:
    """Move the finished staging folder onto ``out``, replacing an old output only after the move succeeded."""
    old = out.parent / f".{out.name}.replaced"
    if old.exists():
        # Left by a build killed while publishing: the build it replaced.
        _remove_build_folder(old)
    if out.exists():
        if any(out.iterdir()):
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(staging, out)
    if old.exists():
        _remove_build_folder(old)
