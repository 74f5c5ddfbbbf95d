"""Manifest files: split tables written as parquet shards in a Hugging Face Hub dataset layout.

One configuration per (task, shots, seed) holds its protocol's splits (``expert``, ``guide`` and ``test``;
``train``, ``validation`` and ``test`` under ``full``) as ``data/<config>/<split>-NNNNN-of-NNNNN.parquet``, with
the columns :data:`COLUMNS` (a suite read from the ImageNet releases) or :data:`SUITE_COLUMNS` (a suite read from
its folders; ``docs/protocol.md#manifests``). The parquet schema carries the ``datasets`` feature types (``label``
is a class label whose names are the task's class ids, since readable names repeat), so
``datasets.load_dataset`` restores them. ``manifest.json`` records what produced the files and their hashes.

A reader lists a split's shards from ``manifest.json``, never from the folder, and checks each against its
recorded SHA-256 before use: a shard copied in, removed or altered is found and named. Configuration names and
shard paths read from a manifest are checked to stay inside the dataset folder.

``manifest.json`` carries its ``format`` (:data:`MANIFEST_FORMAT` when written by this version). Format 2 keys
each class of a configuration by ``id`` (``{"id", "name"}``; ImageNet-DG adds ``wnid``, equal to ``id``), so
that suites whose classes are folder names, not wnids, have manifests too. Format 1 keyed them by ``wnid``
(``{"wnid", "name"}``). This version reads both; a higher format is refused as written by a later version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imagenet_dg.atomic import atomic_path, write_text_atomic
from imagenet_dg.confinement import lexical_problem, resolve_path
from imagenet_dg.errors import ManifestError, PathEscapeError
from imagenet_dg.hashing import file_sha256

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 2
"""The format of the manifests this version writes; it reads every format from 1 up to it."""
CLASS_ID_KEY: Mapping[int, str] = MappingProxyType({1: "wnid", 2: "id"})
"""Manifest format -> the key of a class entry that holds the class id."""
DATA_DIR = "data"
COLUMNS = ("path", "release", "domain", "wnid", "class_name", "label", "pool")
"""Columns of the split files of a suite read from the ImageNet releases (ImageNet-DG)."""
SUITE_COLUMNS = ("path", "domain", "class_id", "class_name", "label", "pool")
"""Columns of the split files of a suite read from its folders (the standard suites)."""
DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024
"""Largest parquet shard to aim for when images are embedded (the Hub's recommended order of size)."""
CARD_FILE = "README.md"
HUB_METADATA = (".gitattributes", ".git", ".cache/huggingface")
"""Entries a copy downloaded from (or cloned off) the Hub carries besides the dataset's own files."""

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-\d{5}-of-\d{5}\.parquet$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` of ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def features(classes: Sequence[str], embed_images: bool, columns: Sequence[str] = COLUMNS) -> datasets.Features:
    """Column types of a split file with ``columns`` (text, but ``label``: a class label whose names are the
    task's class ids in label order), and ``image`` after them when the images are embedded."""
    types: dict[str, datasets.features.FeatureType] = {
        c: datasets.ClassLabel(names=list(classes)) if c == "label" else datasets.Value("string") for c in columns
    }
    if embed_images:
        types["image"] = datasets.Image()
    return datasets.Features(types)


@dataclass(frozen=True)
class ShardRecord:
    """One written parquet file."""

    path: str
    """POSIX path relative to the dataset folder."""
    rows: int
    sha256: str


def plan_shards(sizes: Sequence[int], max_shard_bytes: int) -> list[tuple[int, int]]:
    """Cut consecutive rows of the given byte sizes into [start, end) ranges of at most ``max_shard_bytes``.

    A single row larger than the limit gets a shard of its own. There is always at least one shard, so an
    empty split still has a (schema-only) file and loads as an empty split.
    """
    ranges: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, size in enumerate(sizes):
        if i > start and used + size > max_shard_bytes:
            ranges.append((start, i))
            start, used = i, 0
        used += size
    ranges.append((start, len(sizes)))
    return ranges


def _arrow_table(
    frame: pd.DataFrame, schema: pa.Schema, columns: Sequence[str], images: Sequence[tuple[bytes, str]] | None
) -> pa.Table:
    arrays = {c: pa.array(frame[c].tolist(), pa.int64() if c == "label" else pa.string()) for c in columns}
    if images is not None:
        arrays["image"] = pa.array(
            [{"bytes": data, "path": name} for data, name in images], schema.field("image").type
        )
    return pa.Table.from_pydict(arrays, schema=schema)


def write_split(
    folder: str | os.PathLike[str],
    config: str,
    split: str,
    frame: pd.DataFrame,
    classes: Sequence[str],
    image_roots: Mapping[str, Path] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    columns: Sequence[str] = COLUMNS,
) -> list[ShardRecord]:
    """Write ``frame`` (its ``columns``: :data:`COLUMNS` or :data:`SUITE_COLUMNS`) as the shards of ``split`` of
    ``config`` under ``folder``.

    With ``image_roots`` (domain id -> the folder its paths are relative to), the original image bytes are
    embedded in an ``image`` column; shards are then cut to about ``max_shard_bytes``. Each shard is written
    atomically. Returns the records of the written files in shard order.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ManifestError(f"split {config}/{split}: the table lacks the columns {missing}")
    folder = Path(folder)
    schema = features(classes, embed_images=image_roots is not None, columns=columns).arrow_schema
    frame = frame.reset_index(drop=True)
    if image_roots is not None:
        files = [image_roots[d] / p for d, p in zip(frame["domain"], frame["path"])]
        ranges = plan_shards([f.stat().st_size for f in files], max_shard_bytes)
    else:
        files = []
        ranges = [(0, len(frame))]
    records = []
    for index, (start, end) in enumerate(ranges):
        images = None
        if image_roots is not None:
            images = [(files[i].read_bytes(), str(frame.at[i, "path"])) for i in range(start, end)]
        table = _arrow_table(frame.iloc[start:end], schema, columns, images)
        relative = f"{DATA_DIR}/{config}/{shard_name(split, index, len(ranges))}"
        with atomic_path(folder / relative) as tmp:
            # Fixed writer settings keep the bytes identical for identical tables.
            pq.write_table(table, tmp, compression="zstd", write_statistics=False, store_schema=True)
        records.append(ShardRecord(relative, end - start, file_sha256(folder / relative)))
    return records


def content_hash(entries: Iterable[tuple[str, str]]) -> str:
    """Hash identifying a dataset's content: SHA-256 over sorted (relative path, file SHA-256) pairs."""
    digest = hashlib.sha256()
    for path, sha in sorted(entries):
        digest.update(f"{path}\t{sha}\n".encode())
    return digest.hexdigest()


def dumps_json(value: object) -> str:
    """Canonical JSON text (sorted keys, two-space indent, trailing newline), so equal content gives equal bytes."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_manifest(folder: str | os.PathLike[str], manifest: Mapping[str, object]) -> None:
    """Write ``manifest.json`` atomically in canonical JSON."""
    write_text_atomic(Path(folder) / MANIFEST_FILE, dumps_json(manifest))


def config_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a configuration name (one folder under ``data/``), or None when it can."""
    if not isinstance(name, str) or not _CONFIG_NAME.match(name):
        return (
            f"configuration name {name!r} is not a single folder name (letters, digits and _ . + -, not "
            "starting with a dot)"
        )
    return None


def shard_path_problem(path: object, config: str, split: str) -> str | None:
    """Why ``path`` cannot be the path of a shard of ``split`` of ``config``, or None when it can.

    A shard path is exactly ``data/<config>/<split>-NNNNN-of-NNNNN.parquet``, so it can neither leave the
    dataset folder nor stand for a file of another split or configuration.
    """
    problem = lexical_problem(path)
    if problem is not None:
        return f"shard path {path!r}: {problem}"
    parts = str(path).split("/")
    match = _SHARD_NAME.match(parts[-1])
    if len(parts) != 3 or parts[0] != DATA_DIR or parts[1] != config or not match or match["split"] != split:
        return f"shard path {path!r}: expected {DATA_DIR}/{config}/{split}-NNNNN-of-NNNNN.parquet"
    return None


def _check_structure(path: Path, manifest: object) -> None:
    """Raise ManifestError unless ``manifest`` has the fields and the confined names every reader relies on."""

    def refuse(what: str, error: type[ManifestError] = ManifestError) -> ManifestError:
        return error(f"{path}: {what}; the file is damaged or not a manifest of imagenet-dg: rebuild or "
                     "re-download the dataset")

    if not isinstance(manifest, dict):
        raise refuse(f"expected a JSON object, found {type(manifest).__name__}")
    for key in ("format", "protocol_version", "configs", "content_hash"):
        if key not in manifest:
            raise refuse(f"missing the field {key!r}")
    fmt = manifest["format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or not 1 <= fmt <= MANIFEST_FORMAT:
        raise ManifestError(
            f"{path}: manifest format {manifest['format']!r}, this version reads 1 to {MANIFEST_FORMAT}; "
            "install the imagenet-dg version that wrote it, or rebuild the dataset"
        )
    configs = manifest["configs"]
    if not isinstance(configs, dict):
        raise refuse("'configs' is not an object")
    entries = []
    for name, config in configs.items():
        problem = config_name_problem(name)
        if problem is not None:
            raise refuse(problem, PathEscapeError)
        splits = config.get("splits") if isinstance(config, dict) else None
        if not isinstance(splits, dict) or not splits:
            raise refuse(f"configuration {name!r} lists no splits")
        for split, record in splits.items():
            files = record.get("files") if isinstance(record, dict) else None
            if not isinstance(files, list) or not files:
                raise refuse(f"split {split!r} of configuration {name!r} lists no files")
            for shard in files:
                if not isinstance(shard, dict):
                    raise refuse(f"a file of split {split!r} of {name!r} is not an object")
                problem = shard_path_problem(shard.get("path"), name, str(split))
                if problem is not None:
                    raise refuse(problem, PathEscapeError)
                if not isinstance(shard.get("sha256"), str) or not _SHA256.match(shard["sha256"]):
                    raise refuse(f"{shard['path']} has no SHA-256 (64 hexadecimal digits)")
                rows = shard.get("rows", 0)
                if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
                    raise refuse(f"{shard['path']} has the row count {rows!r}; expected a whole number")
                entries.append((shard["path"], shard["sha256"]))
    if len({p for p, _ in entries}) != len(entries):
        raise refuse("a shard is listed twice")
    if content_hash(entries) != manifest["content_hash"]:
        raise refuse(
            f"the content hash {manifest['content_hash']!r} is not the hash of the files it lists "
            f"({content_hash(entries)})"
        )


def read_manifest(folder: str | os.PathLike[str]) -> dict:
    """The manifest of a built dataset folder, checked for the fields every reader relies on.

    Configuration names must be single folder names and every shard path must be
    ``data/<config>/<split>-NNNNN-of-NNNNN.parquet`` (raises :class:`PathEscapeError` otherwise); the content
    hash must be the hash of the listed files. The files themselves are checked by :func:`verify_files`.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; expected the output folder of 'imagenet-dg build'")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not valid JSON ({error}); rebuild or re-download the dataset") from None
    _check_structure(path, manifest)
    return manifest


def config_classes(manifest: Mapping, config: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The class ids and readable names of ``config`` in label order, read as the manifest's format says.

    Format 2 keys a class by ``id``. Format 1 keyed it by ``wnid``; a format-1 entry with ``id`` and no
    ``wnid`` (suite manifests written before the format was raised) is read by its ``id``. Raises
    ManifestError naming the configuration and the expected shape when a class entry lacks either.
    """
    fmt = int(manifest["format"])
    key = CLASS_ID_KEY[fmt]

    def refuse(found: object) -> ManifestError:
        return ManifestError(
            f"configuration {config!r}: expected its classes as a list of {{{key!r}: ..., 'name': ...}} "
            f"(manifest format {fmt}), found {found!r}; rebuild or re-download the dataset"
        )

    classes = manifest["configs"][config].get("classes")
    if not isinstance(classes, list):
        raise refuse(classes)
    ids, names = [], []
    for entry in classes:
        if not isinstance(entry, dict):
            raise refuse(entry)
        class_id = entry.get(key, entry.get("id") if fmt == 1 else None)
        if not isinstance(class_id, str) or not isinstance(entry.get("name"), str):
            raise refuse(entry)
        ids.append(class_id)
        names.append(entry["name"])
    return tuple(ids), tuple(names)


def split_shards(manifest: Mapping, config: str, split: str) -> list[ShardRecord]:
    """The shards of ``split`` of ``config`` as listed in ``manifest``, in their listed order."""
    files = manifest["configs"][config]["splits"][split]["files"]
    return [ShardRecord(str(f["path"]), int(f.get("rows", 0)), str(f["sha256"])) for f in files]


def listed_shards(manifest: Mapping, configs: Iterable[str] | None = None) -> list[ShardRecord]:
    """Every shard ``manifest`` lists (of ``configs`` only, when given), in manifest order."""
    chosen = manifest["configs"] if configs is None else configs
    return [s for c in chosen for split in manifest["configs"][c]["splits"] for s in split_shards(manifest, c, split)]


def shard_file(folder: str | os.PathLike[str], shard: ShardRecord) -> Path:
    """The file of ``shard`` in ``folder``, checked to lie inside it, symbolic links followed."""
    return resolve_path(folder, shard.path)


def read_listed_shard(folder: str | os.PathLike[str], shard: ShardRecord) -> bytes:
    """The bytes of ``shard``'s file in ``folder``, read once and checked against the SHA-256 recorded for it.

    A reader parses the table from these very bytes, so a file replaced after the check cannot be what it
    reads. Raises ManifestError ``<file>: missing`` or ``<file>: content differs ...`` (as
    :func:`verify_files` words them), or naming why the file cannot be read.
    """
    file = shard_file(folder, shard)
    try:
        data = file.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise ManifestError(f"{file}: missing") from None
    except OSError as error:
        raise ManifestError(f"{file}: cannot be read ({error.strerror or error})") from None
    if hashlib.sha256(data).hexdigest() != shard.sha256:
        raise ManifestError(f"{file}: content differs from the SHA-256 recorded in {MANIFEST_FILE}")
    return data


def _shard_problems(folder: Path, shards: Iterable[ShardRecord]) -> list[str]:
    problems = []
    for shard in shards:
        file = shard_file(folder, shard)
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file_sha256(file) != shard.sha256:
            problems.append(f"{file}: content differs from the SHA-256 recorded in {MANIFEST_FILE}")
    return problems


def _unlisted(folder: Path, under: Path, listed: set[str], ignored: Sequence[str] = ()) -> list[str]:
    """Paths (relative to ``folder``) of the files and empty folders under ``under`` that are not listed."""
    found = []
    for path in sorted(under.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if any(relative == i or relative.startswith(f"{i}/") for i in ignored):
            continue
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                found.append(relative + "/")
            continue
        if relative not in listed:
            found.append(relative)
    return found


def unlisted_in_config(folder: str | os.PathLike[str], manifest: Mapping, config: str) -> list[str]:
    """Problems of the folder of ``config``: each file (or empty folder) in it that ``manifest`` does not list."""
    folder = Path(folder)
    config_dir = resolve_path(folder, f"{DATA_DIR}/{config}")
    if not config_dir.is_dir():
        return []
    extra = _unlisted(folder, config_dir, {s.path for s in listed_shards(manifest, [config])})
    return [f"{folder / e}: not listed in {MANIFEST_FILE}" for e in extra]


def config_error(folder: str | os.PathLike[str], config: str, problems: Sequence[str]) -> ManifestError:
    """The error refusing ``config`` of ``folder`` for ``problems`` (as :func:`verify_files` words them)."""
    return ManifestError(
        f"configuration {config} of {folder} does not match its {MANIFEST_FILE}, so it cannot be scored:\n"
        + "\n".join(f"  {p}" for p in problems)
        + "\nRebuild the dataset (imagenet-dg build ... --overwrite) or download it again; remove files you "
        "added under data/."
    )


def verify_files(folder: str | os.PathLike[str], manifest: Mapping[str, object]) -> list[str]:
    """Problems found when checking every data file listed in ``manifest`` against its recorded hash."""
    return _shard_problems(Path(folder), listed_shards(manifest))


def verify_build(folder: str | os.PathLike[str]) -> list[str]:
    """Every problem of a built dataset folder: its manifest unreadable or inconsistent, a listed shard
    missing or altered, a file that is neither the card, the manifest, a listed shard nor Hub metadata
    (:data:`HUB_METADATA`). Empty when the folder is intact. Raises ManifestError when there is no readable
    manifest at all.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = {s.path for s in listed_shards(manifest)} | {MANIFEST_FILE, CARD_FILE}
    problems = verify_files(folder, manifest)
    if not (folder / CARD_FILE).is_file():
        problems.append(f"{folder / CARD_FILE}: missing")
    problems += [f"{folder / e}: not part of the build" for e in _unlisted(folder, folder, listed, HUB_METADATA)]
    return problems


def check_build(folder: str | os.PathLike[str]) -> dict:
    """The manifest of ``folder`` once :func:`verify_build` finds nothing wrong; raises ManifestError naming
    every problem otherwise."""
    problems = verify_build(folder)
    if problems:
        raise ManifestError(
            f"{folder} does not match its {MANIFEST_FILE} ({len(problems)} problem(s)):\n"
            + "\n".join(f"  {p}" for p in problems)
            + "\nDownload or build it again; remove files that are not part of it"
        )
    return read_manifest(folder)


def unlisted_files(folder: str | os.PathLike[str], manifest: Mapping) -> list[str]:
    """Relative paths of the entries of ``folder`` that are not the card, the manifest or a listed shard."""
    folder = Path(folder)
    listed = {s.path for s in listed_shards(manifest)} | {MANIFEST_FILE, CARD_FILE}
    return _unlisted(folder, folder, listed)
