"""Shared fixtures: one miniature copy of the six releases per test session, and their scans."""

from __future__ import annotations

import os
import shutil
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
from small_disk import mounting  # noqa: E402


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


@pytest.fixture
def small_disk(tmp_path: Path):
    """``small_disk("400k")``: a real tmpfs of that size, unmounted after the test (see ``small_disk.py``)."""
    yield from mounting(tmp_path)
