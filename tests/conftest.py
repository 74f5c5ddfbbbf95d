"""Shared fixtures: one miniature copy of the six releases per test session, and their scans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the network: the Hub clients must fail fast rather than wait for time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from imagenet_dg.mini import MiniReleases, make_mini_releases  # noqa: E402
from imagenet_dg.releases import DomainScan, scan_releases  # noqa: E402


@pytest.fixture(scope="session")
def mini_releases(tmp_path_factory: pytest.TempPathFactory) -> MiniReleases:
    """The miniature releases, made once; tests must not modify them (copy them first)."""
    return make_mini_releases(tmp_path_factory.mktemp("mini") / "releases")


@pytest.fixture(scope="session")
def mini_scans(mini_releases: MiniReleases) -> dict[str, DomainScan]:
    """Scans of every miniature release."""
    return scan_releases(dict(mini_releases.paths))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
