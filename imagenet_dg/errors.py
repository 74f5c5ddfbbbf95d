"""Exceptions raised by imagenet_dg. Each message says what was expected, what was found and what to do."""

from __future__ import annotations


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
