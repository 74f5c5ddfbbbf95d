"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader never sees a half-written file: either the old content (or nothing) or the new content. The
temporary file is created with the mode an ordinary ``open(target, "w")`` would give (0666 less the umask),
so a file written here is as readable by others as any other file the user writes.

Temporary files are named ``.<target name>.<random>.tmp`` (:func:`is_temporary_name` recognises them): a
process killed between creating and renaming one leaves it behind, and whoever cleans a folder of ours up
can tell it from every file we meant to keep.

A write the file system refuses (no space, a quota, read-only, no permission) is raised as one
:class:`~imagenet_dg.errors.WriteError` naming the folder and the file (:mod:`imagenet_dg.disk`), after the
temporary file is removed: the target keeps its old content, or stays absent.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imagenet_dg.disk import reporting_write_faults

TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is the name of a temporary file made by :func:`atomic_path`."""
    return _TEMPORARY_NAME.match(name) is not None


def _create_temporary(target: Path) -> Path:
    """A new, empty file beside ``target`` with a fresh random name, created with mode 0666 less the umask."""
    while True:
        candidate = target.parent / f".{target.name}.{secrets.token_hex(8)}{TEMPORARY_SUFFIX}"
        try:
            # os.open applies the process umask to 0o666, as open() does; tempfile.mkstemp would give 0600.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], what: str | None = None, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto ``target``.

    On an exception the temporary file is removed and ``target`` is left as it was; a write fault becomes a
    :class:`~imagenet_dg.errors.WriteError` about writing ``what`` (default: the file's name) of ``size``
    bytes, when known. The file gets mode 0666 less the umask, like any file the user creates.
    """
    target = Path(target)
    with reporting_write_faults(target, what, size):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(target)
        try:
            yield tmp
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str], what: str | None = None, size: int | None = None) -> Iterator[BinaryIO]:
    """:func:`atomic_path` with the temporary file open for binary writing.

    For writers that hide the operating system's error behind their own (``torch.save`` reports a full disk as
    a ``RuntimeError`` about stream positions): the handle remembers the error of its first failed write, and
    that error is the one reported.
    """
    with atomic_path(target, what, size) as tmp:
        raw = _RememberingFile(tmp)
        try:
            with io.BufferedWriter(raw) as handle:
                yield handle  # type: ignore[misc]
        except Exception as error:
            if raw.failure is not None and raw.failure is not error:
                raise raw.failure from error
            raise


class _RememberingFile(io.RawIOBase):
    """A raw file open for writing that keeps the first ``OSError`` its writes raised."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        self.failure: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        try:
            return os.write(self._fd, data)
        except OSError as error:
            self.failure = self.failure or error
            raise

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target, size=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically, with Unix newlines on every platform."""
    write_bytes_atomic(target, text.encode("utf-8"))
