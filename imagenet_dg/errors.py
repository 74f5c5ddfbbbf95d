"""Exceptions raised by imagenet_dg. Each message says what was expected, what was found and what to do."""

from __future__ import annotations

from pathlib import Path


class ImageNetDGError(Exception):
    """Base class of every error this package raises on purpose."""


class ReleaseNotFoundError(ImageNetDGError):
    """A release folder is missing or its layout is not one we recognise."""


class ProtocolError(ImageNetDGError):
    """The split protocol was asked for something it does not define."""


class ManifestError(ImageNetDGError):
    """A manifest is malformed, inconsistent with its hash, or points outside its root."""


class PathEscapeError(ManifestError):
    """A manifest path resolves outside the release root it is relative to."""


class OutputExistsError(ImageNetDGError):
    """An output already exists and would be overwritten."""


class BadImageError(ImageNetDGError):
    """One or more images could not be used; the message lists them."""


class WriteError(ImageNetDGError, OSError):
    """The file system refused a write: no space, a quota, a read-only folder or no permission
    (:mod:`imagenet_dg.disk`). The message names the folder and what was being written; nothing was marked
    complete, so the same command resumes once the cause is fixed."""

    def __init__(self, message: str, *, folder: Path | None = None, errno: int | None = None,
                 needed: int | None = None, free: int | None = None) -> None:
        Exception.__init__(self, message)
        self.folder = folder
        self.errno = errno
        self.needed = needed
        """Bytes the write needed, when known."""
        self.free = free
        """Bytes free on the folder's file system when the write failed, when known."""

    def __str__(self) -> str:
        return str(self.args[0])


class NotEnoughSpaceError(WriteError):
    """A large write was refused before it began: its estimated size exceeds the free space."""
