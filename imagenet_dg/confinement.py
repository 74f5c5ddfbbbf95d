"""Keeping paths read from a manifest inside the folder they are relative to.

Manifests name files (images, parquet shards) by POSIX paths relative to a root folder: a release root, or
the dataset folder itself. A manifest from elsewhere must not make us read, list or upload any other file of
the machine, so every such path is checked twice: by its text (normalised, relative, no ``..``) and, once
joined to its root, by where it really leads after following symbolic links.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from imagenet_dg.errors import PathEscapeError


def lexical_problem(relative: object) -> str | None:
    """Why ``relative`` is not a normalised relative POSIX path, or None when it is one.

    Refused: a non-string, the empty string, a backslash or NUL character, an absolute path, a ``..``,
    ``.`` or empty component.
    """
    if not isinstance(relative, str):
        return f"expected a string, found {type(relative).__name__}"
    if not relative:
        return "the path is empty"
    if "\\" in relative:
        return "it contains a backslash"
    if "\x00" in relative:
        return "it contains a NUL character"
    if posixpath.isabs(relative):
        return "it is absolute"
    parts = relative.split("/")
    if ".." in parts:
        return "it climbs out with '..'"
    if "." in parts or "" in parts:
        return "it is not normalised (a '.' or empty component)"
    return None


def resolve_path(root: str | os.PathLike[str], relative: str) -> Path:
    """``root / relative`` as an absolute path, guaranteed to lie inside ``root``.

    ``relative`` must be a normalised POSIX path relative to ``root``: not empty, not absolute, no
    backslash, no ``.``, ``..`` or empty component. After following symbolic links it must still be inside
    ``root`` (itself followed through links). Raises :class:`~imagenet_dg.errors.PathEscapeError` otherwise.
    """
    base = Path(root).absolute()
    return resolve_inside(base, base.resolve(), relative)


def resolve_inside(base: Path, real_base: Path, relative: object) -> Path:
    """:func:`resolve_path` with the root already made absolute (``base``) and resolved (``real_base``)."""

    def refuse(why: str) -> PathEscapeError:
        return PathEscapeError(
            f"manifest path {relative!r} under root {base}: {why}; expected a normalised POSIX path inside the "
            "root. The manifest is damaged or was not written by imagenet-dg: rebuild or re-download it."
        )

    problem = lexical_problem(relative)
    if problem is not None:
        raise refuse(problem)
    candidate = base / str(relative)
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symbolic-link loop, on Python < 3.13
        raise refuse(f"it cannot be resolved ({error})") from None
    if not real.is_relative_to(real_base):
        raise refuse(f"it resolves, through a symbolic link, to {real}, outside the root")
    return candidate
