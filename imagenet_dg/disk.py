"""Writing where a disk may be full, read-only, over quota or closed to us.

A sweep writes for hours to shared disks. Every write the operating system refuses for one of those reasons
(:data:`WRITE_FAULTS`) becomes one :class:`~imagenet_dg.errors.WriteError` that names the folder, what was
being written and, where the size is known, how much it needs and how much is free; the command line prints it
as one ``error:`` line. The writers of this package remove their temporary files and mark nothing complete
when a write fails, so the same command run again, once there is room, resumes.

Libraries report these faults in several ways: Python and pyarrow raise an ``OSError`` with its ``errno``;
safetensors and some others only say ``(os error 28)`` in the message. :func:`fault_errno` reads all of them.
Before a large write starts (a build that embeds images, a decoded-image cache), :func:`require_free_space`
compares its estimated size with the free space and refuses at once with both figures.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from imagenet_dg.errors import ImageNetDGError, NotEnoughSpaceError, WriteError

WRITE_FAULTS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than the file system allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
"""The errors of a write that the user, not the program, must fix, with how each is said."""
if TYPE_CHECKING:  # tables are only passed through here; the command line starts without pandas
    import pandas as pd

_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\s*(\d+)", re.IGNORECASE)
_RESUME = "then run the same command again: what was finished is kept and the rest resumes"


def format_bytes(count: int) -> str:
    """``count`` bytes in binary units, as ``df -h`` shows them: ``0 B``, ``2.1 KiB``, ``9.8 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def existing_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it is a folder, else its nearest existing parent: the file system it writes to."""
    here = Path(path).absolute()
    while not here.is_dir() and here != here.parent:
        here = here.parent
    return here


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free for this user on the file system ``path`` is (or would be) written to; None if unknown."""
    try:
        return shutil.disk_usage(existing_folder(path)).free
    except OSError:
        return None


def fault_errno(error: BaseException) -> int | None:
    """The write fault (:data:`WRITE_FAULTS`) behind ``error`` or the errors it was raised from, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = current.errno if isinstance(current, OSError) else None
        if code is None:
            found = _ERRNO_IN_TEXT.search(str(current))
            code = int(found.group(1)) if found else None
        if code in WRITE_FAULTS:
            return code
        current = current.__cause__ or current.__context__
    return None


def write_error(
    error: BaseException, target: str | os.PathLike[str] | None, what: str | None = None, size: int | None = None,
) -> WriteError | None:
    """The :class:`WriteError` saying that writing ``what`` to ``target`` (a file, or a folder) failed with
    ``error``; None when ``error`` is not a write fault. ``size`` is how many bytes the write needed, if known."""
    code = fault_errno(error)
    if code is None:
        return None
    if target is None and isinstance(error, OSError) and error.filename:
        target = error.filename
    if target is None:
        return WriteError(f"cannot write {what or 'a file'}: {WRITE_FAULTS[code]}; {_advice(code)}", errno=code)
    target = Path(target).absolute()
    folder = target if target.is_dir() else target.parent
    described = what or (target.name if target != folder else "files")
    if what is not None and target != folder:
        described += f" ({target.name})"
    figures = ""
    free = None
    if code in _NO_ROOM:
        free = free_bytes(folder)
        parts = ([f"{format_bytes(size)} needed"] if size is not None else []) + (
            [f"{format_bytes(free)} free"] if free is not None else [])
        figures = f" ({', '.join(parts)})" if parts else ""
    return WriteError(f"{folder}: cannot write {described}: {WRITE_FAULTS[code]}{figures}; {_advice(code)}",
                      folder=folder, errno=code, needed=size, free=free)


def refused(error: BaseException) -> ImageNetDGError | None:
    """One error for an ``OSError`` fault (:data:`WRITE_FAULTS`) raised where no writer of ours could say what it
    was doing (reading or writing): naming the file and the cause. None for any other error."""
    code = fault_errno(error)
    if code is None:
        return None
    path = getattr(error, "filename", None)
    if code in _NO_ROOM or code == errno.EROFS:  # only ever a write's
        return write_error(error, path)
    where = f"{Path(path).absolute()}: " if path else ""
    return ImageNetDGError(f"{where}{WRITE_FAULTS[code]}; make it readable (and writable where this command writes) "
                           "or use another folder, then run the same command again")


def _advice(code: int) -> str:
    if code in _NO_ROOM:
        return f"free some space there or write elsewhere, {_RESUME}"
    return f"make the folder writable or write elsewhere, {_RESUME}"


@contextlib.contextmanager
def reporting_write_faults(
    target: str | os.PathLike[str], what: str | None = None, size: int | None = None,
) -> Iterator[None]:
    """Within the block, a write fault is raised as a :class:`WriteError` about writing ``what`` to ``target``
    (see :func:`write_error`); every other exception passes unchanged."""
    try:
        yield
    except WriteError:
        raise
    except Exception as error:
        converted = write_error(error, target, what, size)
        if converted is None:
            raise
        raise converted from error


def embedded_bytes(frames: Iterable[pd.DataFrame], roots: Mapping[str, Path]) -> int:
    """The bytes of the image files that tables of (``domain``, ``path``) rows embed, each row once: about
    what a build that copies their bytes into its shards writes (images are stored as they are)."""
    sizes: dict[tuple[str, str], int] = {}
    total = 0
    for frame in frames:
        for domain, path in zip(frame["domain"].tolist(), frame["path"].tolist()):
            key = (str(domain), str(path))
            if key not in sizes:
                try:
                    sizes[key] = (Path(roots[key[0]]) / key[1]).stat().st_size
                except OSError:
                    sizes[key] = 0  # a missing image fails the build with its own error, naming it
            total += sizes[key]
    return total


def require_free_space(folder: str | os.PathLike[str], needed: int, what: str) -> None:
    """Refuse (:class:`NotEnoughSpaceError`) to start writing ``what``, estimated at ``needed`` bytes, into
    ``folder`` when its file system has less free space than that. Nothing is written either way."""
    free = free_bytes(folder)
    if free is None or free >= needed:
        return
    raise NotEnoughSpaceError(
        f"{folder}: not enough free space for {what}: about {format_bytes(needed)} needed, {format_bytes(free)} "
        "free; free some space there or write elsewhere, then run the same command again",
        folder=Path(folder), errno=errno.ENOSPC, needed=needed, free=free,
    )
