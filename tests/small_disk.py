"""A real small file system for the disk-fault tests (the ``small_disk`` fixture of ``conftest.py``): a tmpfs
of a few hundred kilobytes, mounted where the machine allows it (root in a container that permits mounts),
skipped with the reason where it does not. The same faults are also injected by monkeypatching the write
primitives (see the tests), so every case is covered either way."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagenet_dg.atomic import is_temporary_name


class SmallDisk:
    """A mounted tmpfs at :attr:`path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        """Give the file system ``size`` (``400k``, ``64m``): as if space had been freed (or used up)."""
        _mount(["-o", f"remount,size={size}", str(self.path)])

    def make_read_only(self) -> None:
        """Remount the file system read-only."""
        _mount(["-o", "remount,ro", str(self.path)])


def _mount(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *arguments], capture_output=True, text=True, timeout=30, check=False)


def mounting(tmp_path: Path) -> Iterator[Callable[[str], SmallDisk]]:
    """``mount("400k")`` mounts a tmpfs of that size under ``tmp_path`` and returns it (or skips the test
    where mounting is not allowed); everything mounted is unmounted when the iterator closes."""
    mounted: list[Path] = []

    def mount(size: str) -> SmallDisk:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
        if result.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs here (needs root where mounts are allowed): "
                        f"{(result.stderr or result.stdout).strip()}; the injected-fault tests cover the same cases")
        mounted.append(folder)
        return SmallDisk(folder)

    try:
        yield mount
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30, check=False)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and unfinished cache builds under ``folder``: what a failed write must not leave."""
    return sorted(str(p) for p in folder.rglob("*") if is_temporary_name(p.name) or p.name.startswith(".building-"))
