"""Manifest files: split tables written as parquet shards in a Hugging Face Hub dataset layout.

One configuration per (task, shots, seed) holds the splits ``expert``, ``guide`` and ``test`` as
``data/<config>/<split>-NNNNN-of-NNNNN.parquet``. The parquet schema carries the ``datasets`` feature types
(``label`` is a class label whose names are the task's wnids, since readable names repeat), so
``datasets.load_dataset`` restores them. ``manifest.json`` records what produced the files and their hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imagenet_dg.atomic import atomic_path, write_text_atomic
from imagenet_dg.errors import ManifestError
from imagenet_dg.hashing import file_sha256

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
DATA_DIR = "data"
COLUMNS = ("path", "release", "domain", "wnid", "class_name", "label", "pool")
DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024
"""Largest parquet shard to aim for when images are embedded (the Hub's recommended order of size)."""


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` of ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def split_pattern(config: str, split: str) -> str:
    """Glob, relative to the dataset folder, matching every shard of a split."""
    return f"{DATA_DIR}/{config}/{split}-*.parquet"


def features(classes: Sequence[str], embed_images: bool) -> datasets.Features:
    """Column types of a split table; ``label`` names are the task's wnids in label order."""
    columns: dict[str, datasets.features.FeatureType] = {
        "path": datasets.Value("string"),
        "release": datasets.Value("string"),
        "domain": datasets.Value("string"),
        "wnid": datasets.Value("string"),
        "class_name": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(classes)),
        "pool": datasets.Value("string"),
    }
    if embed_images:
        columns["image"] = datasets.Image()
    return datasets.Features(columns)


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
    frame: pd.DataFrame, schema: pa.Schema, images: Sequence[tuple[bytes, str]] | None
) -> pa.Table:
    arrays = {
        "path": pa.array(frame["path"].tolist(), pa.string()),
        "release": pa.array(frame["release"].tolist(), pa.string()),
        "domain": pa.array(frame["domain"].tolist(), pa.string()),
        "wnid": pa.array(frame["wnid"].tolist(), pa.string()),
        "class_name": pa.array(frame["class_name"].tolist(), pa.string()),
        "label": pa.array(frame["label"].tolist(), pa.int64()),
        "pool": pa.array(frame["pool"].tolist(), pa.string()),
    }
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
) -> list[ShardRecord]:
    """Write ``frame`` (columns :data:`COLUMNS`) as the shards of ``split`` of ``config`` under ``folder``.

    With ``image_roots`` (domain id -> release root), the original image bytes are embedded in an ``image``
    column; shards are then cut to about ``max_shard_bytes``. Each shard is written atomically. Returns the
    records of the written files in shard order.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"split {config}/{split}: the table lacks the columns {missing}")
    folder = Path(folder)
    schema = features(classes, embed_images=image_roots is not None).arrow_schema
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
        table = _arrow_table(frame.iloc[start:end], schema, images)
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


def read_manifest(folder: str | os.PathLike[str]) -> dict:
    """The manifest of a built dataset folder, checked for the fields every reader relies on."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; expected the output folder of 'imagenet-dg build'")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    for key in ("format", "protocol_version", "configs", "content_hash"):
        if key not in manifest:
            raise ManifestError(f"{path}: missing the field {key!r}; the file is damaged or not a manifest")
    if manifest["format"] != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: manifest format {manifest['format']}, this version reads {MANIFEST_FORMAT}")
    return manifest


def verify_files(folder: str | os.PathLike[str], manifest: Mapping[str, object]) -> list[str]:
    """Problems found when checking every data file listed in ``manifest`` against its recorded hash."""
    folder = Path(folder)
    problems = []
    for config in manifest["configs"].values():  # type: ignore[union-attr]
        for split in config["splits"].values():
            for shard in split["files"]:
                file = folder / shard["path"]
                if not file.is_file():
                    problems.append(f"{file}: missing")
                elif file_sha256(file) != shard["sha256"]:
                    problems.append(f"{file}: content differs from the hash in {MANIFEST_FILE}")
    return problems
