"""One process at a time per run folder: an OS file lock that the kernel releases when its holder dies.

Two ``evaluate`` processes (on one machine or on several sharing a file system that supports ``flock``)
given the same runs folder would otherwise both train a run neither finds done. Each takes an exclusive
``fcntl.flock`` on ``<run folder>/lock`` before looking at the folder; a killed process loses its lock
without leaving anything to clean up, and the next one resumes the run.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from imagenet_dg.disk import write_error
from imagenet_dg.errors import ImageNetDGError

LOCK_FILE = "lock"


class RunLockError(ImageNetDGError):
    """A run folder's lock cannot be taken (not a folder, or a file system without locks)."""


class RunLock:
    """The exclusive lock of one run folder. Use :meth:`acquire` / :meth:`release`, or ``with``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock (waiting for it with ``blocking``); False when ``blocking`` is off and it is held.

        Creates the run folder and its lock file if needed. A lock file removed by its previous holder (when
        a failed run's folder was cleared) while this process waited for it is noticed, and the new file is
        locked instead, so two processes can never both hold the lock of one folder.
        """
        if self._fd is not None:
            return True
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                refused = write_error(error, self.path, "the run's lock file")
                if refused is not None:
                    raise refused from None
                raise RunLockError(f"{self.path}: cannot open the run's lock file ({error})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise RunLockError(
                    f"{self.path}: the file system refuses file locks ({error}); put the runs folder on a file "
                    "system that supports flock"
                ) from None
            if self._same_file(fd):
                self._fd = fd
                return True
            os.close(fd)  # the file was replaced or removed while we waited: lock the current one

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def release(self, *, remove: bool = False) -> None:
        """Give the lock up; with ``remove``, delete the lock file first (while still holding it)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
