"""The two tables that flow through the data pipeline, their columns named once.

A *scan table* lists the images of one domain as a layout reader found them (:mod:`imagenet_dg.layouts`):
``path`` (POSIX, relative to the folder the domain's images are read from) and ``class_id`` (an ImageNet wnid,
or a class folder name). A *split table* is one split of one configuration as a protocol made it
(:mod:`imagenet_dg.protocols`): ``path``, ``domain``, ``class_id``, ``label`` (the position of the class in the
task's class list) and ``pool`` (the split's name). See ``docs/protocol.md#tables``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd

from imagenet_dg.errors import ProtocolError

SCAN_COLUMNS = ("path", "class_id")
"""Columns of a scan table."""

SPLIT_COLUMNS = ("path", "domain", "class_id", "label", "pool")
"""Columns of a split table."""


def scan_table(paths: Sequence[str], class_ids: Sequence[str], *, sort: bool = False) -> pd.DataFrame:
    """A scan table of ``paths`` and their ``class_ids``, in the order given or, with ``sort``, by path in plain
    code-point order (so that nothing depends on the order a file system lists a folder in)."""
    if sort:
        order = sorted(range(len(paths)), key=paths.__getitem__)
        paths, class_ids = [paths[i] for i in order], [class_ids[i] for i in order]
    return pd.DataFrame({"path": list(paths), "class_id": list(class_ids)}, columns=list(SCAN_COLUMNS))


def check_scan_table(table: pd.DataFrame, what: str) -> None:
    """Raise ProtocolError naming ``what`` unless ``table`` has the scan columns and unique paths."""
    missing = set(SCAN_COLUMNS) - set(table.columns)
    if missing:
        raise ProtocolError(f"{what}: expected columns {', '.join(map(repr, SCAN_COLUMNS))}, missing {sorted(missing)}")
    if table["path"].duplicated().any():
        repeats = table.loc[table["path"].duplicated(), "path"].head(3).tolist()
        raise ProtocolError(f"{what}: paths must be unique, found repeats such as {repeats}")


def empty_split_table() -> pd.DataFrame:
    """A split table without rows (``label`` typed as integers, the other columns as text)."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "label" else object) for c in SPLIT_COLUMNS})


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a scan table's (path, class) rows in path order: identifies what was scanned."""
    digest = hashlib.sha256()
    ordered = table.sort_values("path", kind="stable")
    for path, class_id in zip(ordered["path"].tolist(), ordered["class_id"].tolist()):
        digest.update(f"{path}\t{class_id}\n".encode())
    return digest.hexdigest()
