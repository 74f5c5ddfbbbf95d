"""Building a suite: its images scanned, its configurations split, a Hub-layout dataset folder out.

One build serves every suite (``docs/protocol.md#building``). The suite's layout reader has scanned its domains
(:mod:`imagenet_dg.layouts`), the split protocol it offers under the asked protocol makes every configuration
(:mod:`imagenet_dg.protocols`), and this module writes them: ``README.md`` (the card, :mod:`imagenet_dg.card`),
``data/<config>/<split>-NNNNN-of-NNNNN.parquet`` and ``manifest.json`` with each file's SHA-256 and the content
hash. What a manifest records is described in ``docs/protocol.md#manifests``: suites read from the ImageNet
releases record each release's layout and class coverage and the task statistics; suites read from DomainBed's
folders record their folders and the source they came from. Whether the data are synthetic is decided from the
data (:func:`imagenet_dg.sources.is_synthetic`), never by an option.

The build writes into a staging folder beside the output (``.<name>.partial``) and renames it onto the
output only when every file is in place, so an interrupted build never leaves a half-written output. The
staging folder remembers which configurations are finished; a rerun with the same inputs and options
resumes from there, and ends with exactly the files of an uninterrupted build (temporary files a killed
process left behind are swept away; they are recognised by their names, see :mod:`imagenet_dg.atomic`).

An existing output is never replaced unless asked to, and even then only when it holds a build and nothing
else: never a folder holding other files, the current folder, or a folder holding (or inside) the images.
An output is "up to date" only when it was built from the same images, options and (with ``verify`` or
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
from imagenet_dg.errors import BadImageError, ImageNetDGError, ManifestError, OutputExistsError, ReleaseNotFoundError
from imagenet_dg.hashing import file_sha256
from imagenet_dg.health import BAD_IMAGE_POLICIES, HealthReport, ImageProblem, check_images
from imagenet_dg.layouts import SuiteScan, suite_layout
from imagenet_dg.manifests import (
    CARD_FILE,
    COLUMNS,
    DATA_DIR,
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    SUITE_COLUMNS,
    ShardRecord,
    check_build,
    content_hash,
    dumps_json,
    read_manifest,
    unlisted_files,
    verify_files,
    write_manifest,
    write_split,
)
from imagenet_dg.protocols import (
    DEFAULT_PROTOCOL,
    DEFAULT_SHOTS,
    FEWSHOT,
    FULL,
    PARTITION_SEED,
    SplitProtocol,
    TaskSplits,
    check_protocol,
    default_seeds,
    env_indices,
    task_statistics,
)
from imagenet_dg.sources import DataRequest, find_images, folder_source, is_synthetic, scan_images
from imagenet_dg.suites import Suite, Task, get_suite, suite_of_manifest
from imagenet_dg.tables import table_digest
from imagenet_dg.taxonomy import load_taxonomy

logger = logging.getLogger(__name__)

STATE_FILE = ".build-state.json"


@dataclass(frozen=True)
class BuildOptions:
    """What to build. The defaults build a suite as published: every task, 16 shots, the protocol's seeds
    (few-shot seeds 1, 2 and 3; DomainBed's trial seeds 0, 1 and 2 under ``full``)."""

    protocol: str = DEFAULT_PROTOCOL
    tasks: tuple[str, ...] = ()
    """Task names or target domains; empty: every task of the suite."""
    shots: tuple[int, ...] = ()
    """Shots per class (fewshot only); empty: :data:`imagenet_dg.protocols.DEFAULT_SHOTS`."""
    seeds: tuple[int, ...] = ()
    """Few-shot seeds (fewshot) or DomainBed trial seeds (full); empty: the protocol's defaults."""
    partition_seed: int = PARTITION_SEED
    embed_images: bool = False
    verify: bool = False
    on_bad_image: str = "stop"
    workers: int | None = None
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES

    def __post_init__(self) -> None:
        check_protocol(self.protocol)
        if self.protocol == FULL and self.shots:
            raise ImageNetDGError("--shots: the full protocol trains on every image; leave --shots out")
        if any(k < 1 for k in self.shots):
            raise ImageNetDGError(f"--shots: expected positive numbers of images per class, got {self.shots}")
        if any(s < 0 for s in self.seeds):
            raise ImageNetDGError(f"--seeds: expected non-negative integers, got {self.seeds}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ImageNetDGError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")

    def check(self, suite: Suite) -> SplitProtocol:
        """The split protocol ``suite`` offers under :attr:`protocol`, once the tasks and shots asked for are
        ones it has; an error naming what it has otherwise."""
        split = suite.split_protocol(self.protocol)
        self.selected_tasks(suite)
        for shots in self.resolved_shots():
            if split.shot_choices is not None and shots not in split.shot_choices:
                raise ImageNetDGError(f"shots must be among {split.shot_choices}, got {shots}")
        return split

    def resolved_shots(self) -> tuple[int, ...]:
        """The shots built, ascending (none under ``full``)."""
        return tuple(sorted(set(self.shots or DEFAULT_SHOTS))) if self.protocol == FEWSHOT else ()

    def resolved_seeds(self) -> tuple[int, ...]:
        """The seeds built, ascending."""
        return tuple(sorted(set(self.seeds or default_seeds(self.protocol))))

    def selected_tasks(self, suite: Suite) -> tuple[Task, ...]:
        """The tasks asked for, in the order asked (every task of the suite when none was)."""
        if not self.tasks:
            return suite.tasks()
        return tuple(dict.fromkeys(suite.task(t) for t in self.tasks))

    def ordered_tasks(self, suite: Suite) -> tuple[Task, ...]:
        """The tasks asked for, in the suite's order: the order of the configurations."""
        chosen = set(self.selected_tasks(suite))
        return tuple(t for t in suite.tasks() if t in chosen)

    def domains(self, suite: Suite) -> tuple[str, ...]:
        """Domain ids the selected tasks need, in the suite's order."""
        needed = {d for t in self.selected_tasks(suite) for d in (t.target, *t.sources)}
        return tuple(d for d in suite.domain_ids if d in needed)


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


# --- what a manifest records (docs/protocol.md#manifests) -------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    """Everything a build is made of, gathered once."""

    suite: Suite
    scan: SuiteScan
    options: BuildOptions
    split: SplitProtocol
    domains: tuple[str, ...]
    synthetic: bool
    digests: Mapping[str, str]
    """Domain id -> :func:`imagenet_dg.tables.table_digest` of its scan table."""


def _class_names(suite: Suite, rows: pd.DataFrame) -> pd.Series:
    names = {c: suite.class_name(c) for c in rows["class_id"].unique()}
    return rows["class_id"].map(names)


class _ReleaseRecord:
    """Manifests of a suite read from the ImageNet releases: each domain recorded as its official release."""

    columns = COLUMNS

    def rows(self, suite: Suite, frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame.copy()
        rows["release"] = rows["domain"].map({d.id: d.display_name for d in suite.domains})
        rows["wnid"] = rows["class_id"]
        rows["class_name"] = _class_names(suite, rows)
        return rows[list(self.columns)]

    def options(self, inputs: _Inputs) -> dict:
        options = inputs.options
        return {
            "tasks": [t.name for t in options.selected_tasks(inputs.suite)],
            "shots": list(options.resolved_shots()),
            "seeds": list(options.resolved_seeds()),
            "partition_seed": options.partition_seed,
            "embed_images": options.embed_images,
            "verify": options.verify,
            "on_bad_image": options.on_bad_image,
            "max_shard_bytes": options.max_shard_bytes if options.embed_images else None,
            "synthetic": inputs.synthetic,
        }

    def sections(self, inputs: _Inputs) -> dict:
        releases = {}
        for domain in inputs.domains:
            table = inputs.scan.tables[domain]
            classes = int(table["class_id"].nunique())
            official = len(DOMAINS[domain].wnids(load_taxonomy()))
            releases[domain] = {
                "release": inputs.suite.domain(domain).display_name,
                "layout": inputs.scan.location.layouts[domain],
                "images": len(table),
                "classes": classes,
                "official_classes": official,
                "complete_class_set": classes == official,
                "table_sha256": inputs.digests[domain],
            }
            if classes != official:
                logger.warning("%s covers %d of the %d official classes; tasks use the classes present",
                               domain, classes, official)
        return {"releases": releases}

    def key(self, inputs: _Inputs, sections: Mapping, options: Mapping) -> dict:
        return {
            "protocol_version": inputs.split.version,
            "manifest_format": MANIFEST_FORMAT,
            "generator": __version__,
            "options": options,
            "releases": {d: (r["layout"], r["table_sha256"]) for d, r in sections["releases"].items()},
        }

    def config(self, splits: TaskSplits, suite: Suite) -> dict:
        return {"classes": [{"id": c, "wnid": c, "name": suite.class_name(c)} for c in splits.classes]}

    def extras(self, inputs: _Inputs, tables: Mapping[str, pd.DataFrame], excluded: list, quirks: dict) -> dict:
        tasks = [t.name for t in inputs.options.selected_tasks(inputs.suite)]
        return {
            "partition_seed": inputs.options.partition_seed,
            "statistics": task_statistics(inputs.suite, tables, tasks).to_dict(orient="records"),
            "excluded": excluded,
            "quirks": quirks,
        }


class _FolderRecord:
    """Manifests of a suite read from its folders: each domain recorded as a folder of the suite, and the source
    (a folder copy, or a Hub repository at a pinned revision) recorded beside them."""

    columns = SUITE_COLUMNS

    def rows(self, suite: Suite, frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame.copy()
        rows["class_name"] = _class_names(suite, rows)
        return rows[list(self.columns)]

    def options(self, inputs: _Inputs) -> dict:
        options = inputs.options
        record: dict[str, object] = {
            "protocol": options.protocol,
            "targets": [t.target for t in options.ordered_tasks(inputs.suite)],
            "seeds": list(options.resolved_seeds()),
            **inputs.split.content(options.resolved_shots(), options.partition_seed),
        }
        # Only what was asked for: a build without them keeps the key it always had.
        if options.embed_images:
            record.update(embed_images=True, max_shard_bytes=options.max_shard_bytes)
        if options.verify:
            record.update(verify=True, on_bad_image=options.on_bad_image)
        return record

    def sections(self, inputs: _Inputs) -> dict:
        folders = inputs.scan.location.relative_folders()
        tables = inputs.scan.tables
        domains = {
            d: {"folder": folders[d], "images": len(tables[d]), "classes": int(tables[d]["class_id"].nunique()),
                "table_sha256": inputs.digests[d]}
            for d in inputs.domains
        }
        return {"source": folder_source(inputs.scan.location), "domains": domains,
                "class_ids": list(inputs.suite.classes)}

    def key(self, inputs: _Inputs, sections: Mapping, options: Mapping) -> dict:
        return {
            "suite": inputs.suite.name,
            "protocol_version": inputs.split.version,
            "manifest_format": MANIFEST_FORMAT,
            "generator": __version__,
            "options": options,
            "domains": {d: r["table_sha256"] for d, r in sections["domains"].items()},
            "source": sections["source"],
            "synthetic": inputs.synthetic,
        }

    def config(self, splits: TaskSplits, suite: Suite) -> dict:
        classes = [{"id": c, "name": suite.class_name(c)} for c in splits.classes]
        return {"protocol": splits.protocol, "classes": classes}

    def extras(self, inputs: _Inputs, tables: Mapping[str, pd.DataFrame], excluded: list, quirks: dict) -> dict:
        return {"excluded": excluded, "quirks": quirks} if inputs.options.verify else {}


def _record(suite: Suite) -> _ReleaseRecord | _FolderRecord:
    return _ReleaseRecord() if suite_layout(suite).records_releases else _FolderRecord()


def _fingerprint(key: Mapping, excluded: Sequence[dict] = (), images_sha256: str | None = None) -> str:
    """Hash of every input that decides a build's content: the resume and "up to date" key.

    Beside what the record names (the scanned tables, the options, the protocol version, the manifest
    format), ``excluded`` (the images ``verify`` left out: they depend on the files' contents, not on their
    names) and ``images_sha256`` (the bytes of the selected images, which ``embed_images`` copies into the
    output). Each enters only when it can matter, so builds without them keep the key they always had.
    """
    payload = dict(key)
    if excluded:
        payload["excluded"] = [[e["domain"], e["path"], e["kind"]] for e in excluded]
    if images_sha256 is not None:
        payload["images_sha256"] = images_sha256
    return hashlib.sha256(dumps_json(payload).encode()).hexdigest()


def _selected_images_sha256(roots: Mapping[str, Path], splits: Mapping[str, TaskSplits]) -> str:
    """SHA-256 over (domain, path, file SHA-256) of every selected image, in (domain, path) order."""
    digest = hashlib.sha256()
    for domain, paths in sorted(_selected_paths(list(splits.values())).items()):
        for path in sorted(paths):
            digest.update(f"{domain}\t{path}\t{file_sha256(roots[domain] / path)}\n".encode())
    return digest.hexdigest()


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
        elif card is not None and readme.read_text(encoding="utf-8") != _card_or_none(card, manifest):
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


def _card_or_none(card: Callable[[Mapping], str], manifest: Mapping) -> str | None:
    """The card this version writes for ``manifest``; None for a manifest it cannot write one for (another
    version's suite)."""
    try:
        return card(manifest)
    except (ImageNetDGError, KeyError):
        return None


def _selected_paths(all_splits: Sequence[TaskSplits]) -> dict[str, set[str]]:
    selected: dict[str, set[str]] = {}
    for splits in all_splits:
        for frame in splits.splits.values():
            for domain, paths in frame.groupby("domain", sort=True)["path"]:
                selected.setdefault(str(domain), set()).update(paths.tolist())
    return selected


def _assemble(inputs: _Inputs, tables: Mapping[str, pd.DataFrame]) -> dict[str, TaskSplits]:
    options = inputs.options
    folders = {d: inputs.scan.location.domain_folders[d].name for d in inputs.domains}
    return inputs.split.assemble(
        inputs.suite, tables, options.ordered_tasks(inputs.suite), shots=options.resolved_shots(),
        seeds=options.resolved_seeds(), partition_seed=options.partition_seed, env_indices=env_indices(folders),
    )


def _verified_splits(
    inputs: _Inputs, tables: dict[str, pd.DataFrame]
) -> tuple[dict[str, TaskSplits], HealthReport | None, list[dict]]:
    """Assemble the splits; with ``verify``, open every selected image and handle the unusable ones.

    Under ``skip`` an unusable image is removed from its domain table and the splits are assembled again, so
    its place is taken by the image the protocol picks next; the new selections are checked in turn until
    no unusable image remains selected.
    """
    options = inputs.options
    splits = _assemble(inputs, tables)
    if not options.verify:
        return splits, None, []
    roots = inputs.scan.roots
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
            report = check_images(roots[domain], unchecked, workers=options.workers)
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
        splits = _assemble(inputs, tables)
    excluded.sort(key=lambda e: (e["domain"], e["path"]))
    return splits, HealthReport(total_checked, tuple(sorted(problems, key=lambda p: p.path))), excluded


def build(
    scan: SuiteScan,
    out: str | os.PathLike[str],
    options: BuildOptions = BuildOptions(),
    *,
    overwrite: bool = False,
    on_config: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the dataset folder ``out`` of the scanned suite ``scan`` under ``options``.

    ``scan`` must cover every domain the selected tasks need. ``on_config`` is called with each configuration
    name as soon as its files are written (a progress hook); configurations kept from an interrupted build are
    listed in the result's ``resumed`` instead. The data are recorded as synthetic when they are
    (:func:`imagenet_dg.sources.is_synthetic`), whatever suite they were scanned as.
    """
    suite = scan.suite
    split = options.check(suite)
    out = Path(out).absolute()
    domains = options.domains(suite)
    missing = [d for d in domains if d not in scan.tables]
    if missing:
        raise ReleaseNotFoundError(
            f"the selected tasks need the releases of {', '.join(missing)}, which were not given"
        )
    roots = {d: scan.roots[d] for d in domains}
    synthetic = is_synthetic(roots.values())
    if synthetic and not suite.synthetic:
        logger.warning("the images of %s were written by a miniature generator: recording the build as synthetic",
                       suite.name)
    inputs = _Inputs(suite, scan, options, split, domains, synthetic,
                     {d: table_digest(scan.tables[d]) for d in domains})
    record = _record(suite)
    sections = record.sections(inputs)
    options_record = record.options(inputs)
    protected_roots = [*roots.values(), *([scan.location.folder] if scan.location.folder is not None else [])]
    # Refuse a protected output before any long verification.
    protected = _protected_problem(out, protected_roots)
    if protected is not None:
        raise OutputExistsError(f"{protected}; it cannot be the output of a build: choose another --out")
    tables = {d: scan.tables[d] for d in domains}
    all_splits, health, excluded = _verified_splits(inputs, tables)
    images_sha256 = _selected_images_sha256(roots, all_splits) if options.embed_images else None
    fingerprint = _fingerprint(record.key(inputs, sections, options_record), excluded, images_sha256)
    existing = _check_output(out, fingerprint, overwrite, protected_roots, card=dataset_readme)
    if existing is not None:
        logger.info("%s already holds this build (content hash %s)", out, existing["content_hash"])
        remove_replaced(out)
        return BuildResult(out, existing, up_to_date=True, health=health)

    staging = _open_staging(out, fingerprint)
    image_roots = roots if options.embed_images else None
    if image_roots is not None:  # refused now, with the figures, rather than when the disk is full
        frames = [s.split(name) for config, s in all_splits.items() if config not in staging.done
                  for name in split.splits]
        require_free_space(staging.folder, embedded_bytes(frames, image_roots), "the embedded images")
    written, resumed = [], []
    configs: dict[str, dict] = {}
    for name, task_splits in all_splits.items():
        done = staging.finished(name)
        if done is not None:
            resumed.append(name)
        else:
            done = {"splits": {}}
            for split_name in split.splits:
                frame = record.rows(suite, task_splits.split(split_name))
                shards = write_split(staging.folder, name, split_name, frame, task_splits.classes, image_roots,
                                     options.max_shard_bytes, columns=record.columns)
                done["splits"][split_name] = {
                    "rows": len(frame),
                    "per_domain": _per_domain(frame),
                    "files": [asdict(s) for s in shards],
                }
            staging.done[name] = done
            staging.save()
            written.append(name)
            if on_config is not None:
                on_config(name)
        task = task_splits.task
        configs[name] = {
            "task": task.name,
            "target": task.target,
            "sources": list(task.sources),
            "shots": task_splits.shots,
            "seed": task_splits.seed,
            **record.config(task_splits, suite),
            "splits": done["splits"],
        }
    shards = [ShardRecord(**s) for c in configs.values() for sp in c["splits"].values() for s in sp["files"]]
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": suite.display_name,
        "suite": suite.name,
        "protocol": options.protocol,
        "protocol_version": split.version,
        "synthetic": synthetic,
        "generator": f"imagenet-dg {__version__}",
        "options": options_record,
        **sections,
        **record.extras(inputs, tables, excluded, _quirk_counts(health)),
        "configs": configs,
        "content_hash": content_hash((s.path, s.sha256) for s in shards),
        "build_fingerprint": fingerprint,
    }
    # The card is made from the manifest as any reader sees it, so that it can be checked against it later.
    write_text_atomic(staging.folder / CARD_FILE, dataset_readme(json.loads(dumps_json(manifest))))
    write_manifest(staging.folder, manifest)
    staging.state_file.unlink()
    _publish(staging.folder, out)
    return BuildResult(out, manifest, tuple(written), tuple(resumed), health)


def build_from(
    request: DataRequest,
    out: str | os.PathLike[str],
    options: BuildOptions = BuildOptions(),
    *,
    overwrite: bool = False,
    on_config: Callable[[str], None] | None = None,
    tell: Callable[[str], None] = logger.info,
) -> BuildResult:
    """Find (or write, or fetch) the images ``request`` names (:func:`imagenet_dg.sources.find_images`) and build
    them into ``out``: what ``imagenet-dg build`` does. The options are checked against the suite before any
    image is looked for; ``tell`` hears which miniature data are used."""
    options.check(request.suite)
    images = find_images(request, tell)
    return build(scan_images(images, options.domains(request.suite)), out, options, overwrite=overwrite,
                 on_config=on_config)


def statistics(request: DataRequest, tell: Callable[[str], None] = logger.info) -> pd.DataFrame:
    """The per-task statistics (:func:`imagenet_dg.protocols.task_statistics`) of every domain of the images
    ``request`` names: what ``imagenet-dg stats`` prints (for ImageNet-DG, the paper's Table 7)."""
    scanned = scan_images(find_images(request, tell))
    return task_statistics(scanned.suite, scanned.tables)


def check_built(folder: str | os.PathLike[str], suite: str | None = None) -> dict:
    """The manifest of the built ``folder`` once every file checks against it
    (:func:`imagenet_dg.manifests.check_build`) and, when ``suite`` is given, once it is a build of that suite."""
    manifest = check_build(folder)
    if suite is not None:
        found = suite_of_manifest(manifest).name
        if found != get_suite(suite).name:
            raise ManifestError(f"{folder} holds a build of {found}, not of {suite}; give --suite {found} or the "
                                f"folder of a {suite} build")
    return manifest


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
