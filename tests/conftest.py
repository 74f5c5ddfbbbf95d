"""Shared fixtures: one miniature copy of the six releases per test session, and their scans; a real small file
system for the disk-fault tests, and what a failed write must not leave behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Tests never reach the network: the Hub clients must fail fast rather than wait for time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from imagenet_dg.build import BuildOptions, build  # noqa: E402
from imagenet_dg.layouts import SuiteScan, scan  # noqa: E402
from imagenet_dg.loading import load_task  # noqa: E402
from imagenet_dg.mini import MARKER, MiniReleases, make_mini_releases  # noqa: E402
from imagenet_dg.suites import IMAGENET_DG  # noqa: E402
from guidg.image_cache import BUILDING_PREFIX  # noqa: E402
from imagenet_dg.atomic import is_temporary_name  # noqa: E402


@pytest.fixture(scope="session")
def mini_releases(tmp_path_factory: pytest.TempPathFactory) -> MiniReleases:
    """The miniature releases, made once; tests must not modify them (copy them first)."""
    return make_mini_releases(tmp_path_factory.mktemp("mini") / "releases")


@pytest.fixture(scope="session")
def mini_scans(mini_releases: MiniReleases) -> SuiteScan:
    """ImageNet-DG scanned from every miniature release."""
    return scan(IMAGENET_DG, folders=mini_releases.paths)


@pytest.fixture(scope="session")
def unmarked_scans(mini_releases: MiniReleases, tmp_path_factory: pytest.TempPathFactory) -> SuiteScan:
    """ImageNet-DG scanned from a copy of the miniature releases without the generator's marker: what real
    releases look like to the build (their files linked, not copied)."""
    root = tmp_path_factory.mktemp("unmarked") / "releases"
    shutil.copytree(mini_releases.root, root, copy_function=os.link, ignore=shutil.ignore_patterns(MARKER))
    return scan(IMAGENET_DG, folders={d: root / p.relative_to(mini_releases.root) for d, p in mini_releases.paths.items()})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def mini_benchmark(mini_scans, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet-DG built from the miniature releases: task a, 16 shots, seed 1."""
    out = tmp_path_factory.mktemp("benchmark") / "imagenet-dg"
    build(mini_scans, out, BuildOptions(tasks=("a",), shots=(16,), seeds=(1,)))
    return out


@pytest.fixture(scope="session")
def mini_task(mini_benchmark: Path, mini_releases: MiniReleases):
    """The TaskData of task a (16 shots, seed 1) of the miniature benchmark."""
    return load_task(mini_benchmark, "a-16shot-seed1", dict(mini_releases.paths))


@pytest.fixture
def tiny_backbone():
    """A fresh tiny CLIP with random weights (drawn from the spec's fixed seed; fine-tuning changes it in place)."""
    from guidg.backbone import TINY_SPEC, load_backbone

    return load_backbone(TINY_SPEC)


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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], SmallDisk]]:
    """``small_disk("400k")``: a real tmpfs of that size under ``tmp_path``, mounted where the machine allows it
    (root in a container that permits mounts) and unmounted after the test; the test is skipped with the reason
    where it does not. The same faults are also injected by monkeypatching the write primitives, so every case is
    covered either way."""
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


@pytest.fixture
def leftovers() -> Callable[[Path], list[str]]:
    """``leftovers(folder)``: the temporary files and unfinished cache builds under ``folder``, what a failed or
    interrupted write must not leave."""

    def found(folder: Path) -> list[str]:
        return sorted(str(p) for p in folder.rglob("*")
                      if is_temporary_name(p.name) or p.name.startswith(BUILDING_PREFIX))

    return found
