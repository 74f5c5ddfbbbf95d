"""A build process killed with SIGKILL at any moment leaves nothing half-written, and the rerun ends with
exactly the files of an uninterrupted build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.manifests import verify_build
from imagenet_dg.mini import MiniReleases

OPTIONS = BuildOptions(tasks=("a",), shots=(1,), seeds=(1, 2))
OTHER = BuildOptions(tasks=("a",), shots=(2,), seeds=(1,))

# The child builds exactly as the library does, except that one call chosen by the test kills the process
# with SIGKILL: no cleanup handler, no finally clause, no flush runs after it.
CHILD = r"""
import json, os, signal, sys
import imagenet_dg.manifests as manifests
from imagenet_dg.build import BuildOptions, build
from imagenet_dg.layouts import scan

paths, out, mode, at, options, overwrite = json.loads(sys.argv[1])
calls = 0

def count_and_maybe_kill():
    global calls
    calls += 1
    return calls == at

if mode == "replace":
    # Killed just before the at-th rename: a temporary file written and not yet renamed, a state file not yet
    # updated, a card or manifest not yet in place, or an output moved aside and not yet replaced.
    real_replace = os.replace
    def replace(source, target):
        if count_and_maybe_kill():
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)
    os.replace = replace
elif mode == "rmtree":
    # Killed before the at-th folder removal: after a publish moved the new build in, before the old one
    # moved aside is deleted.
    import shutil
    real_rmtree = shutil.rmtree
    def rmtree(path, *args, **kwargs):
        if count_and_maybe_kill():
            os.kill(os.getpid(), signal.SIGKILL)
        real_rmtree(path, *args, **kwargs)
    shutil.rmtree = rmtree
else:
    # Killed in the middle of writing a shard: half of its bytes in the temporary file.
    real_write = manifests.pq.write_table
    def write_table(table, where, **kwargs):
        real_write(table, where, **kwargs)
        if count_and_maybe_kill():
            with open(where, "r+b") as handle:
                handle.truncate(os.path.getsize(where) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    manifests.pq.write_table = write_table

build(scan("imagenet-dg", folders=paths), out, BuildOptions(**options), overwrite=overwrite)
sys.exit(3)
"""


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def options_json(options: BuildOptions) -> dict:
    return {"tasks": list(options.tasks), "shots": list(options.shots), "seeds": list(options.seeds)}


@pytest.fixture(scope="module")
def clean(mini_scans, tmp_path_factory) -> tuple[dict[str, bytes], int]:
    """The files of an uninterrupted build, and how many renames it makes."""
    out = tmp_path_factory.mktemp("clean") / "imagenet-dg"
    real_replace = os.replace
    calls = []

    def counting(source, target):
        calls.append(target)
        real_replace(source, target)

    os.replace = counting
    try:
        build(mini_scans, out, OPTIONS)
    finally:
        os.replace = real_replace
    return folder_bytes(out), len(calls)


def kill_build(mini: MiniReleases, out: Path, mode: str, at: int, options: BuildOptions, overwrite: bool) -> None:
    argument = json.dumps([{d: str(p) for d, p in mini.paths.items()}, str(out), mode, at, options_json(options), overwrite])
    result = subprocess.run([sys.executable, "-c", CHILD, argument], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr


def test_the_clean_build_makes_enough_renames_to_kill_between(clean) -> None:
    files, renames = clean
    # Three shards per configuration, a state file per configuration, the card, the manifest, the publish.
    assert renames >= 2 * 3 + 2 + 2 + 1 and len(files) == 2 + 2 * 3


@pytest.mark.parametrize("moment", ["shard", "state", "manifest"])
def test_a_build_killed_before_a_rename_resumes_to_the_clean_files(
    moment: str, clean, mini_releases: MiniReleases, mini_scans, tmp_path: Path
) -> None:
    files, renames = clean
    # Rename 1 saves the first state; 2 is the first shard, 5 the state after the first configuration.
    at = {"shard": 2, "state": 5, "manifest": renames - 1}[moment]
    out = tmp_path / "imagenet-dg"
    kill_build(mini_releases, out, "replace", at, OPTIONS, overwrite=False)
    assert not out.exists()  # nothing half-written where the output goes
    build(mini_scans, out, OPTIONS)
    assert folder_bytes(out) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet-dg"]


@pytest.mark.parametrize("shard", [4])
def test_a_build_killed_while_writing_a_shard_resumes_to_the_clean_files(
    shard: int, clean, mini_releases: MiniReleases, mini_scans, tmp_path: Path
) -> None:
    files, _ = clean
    out = tmp_path / "imagenet-dg"
    kill_build(mini_releases, out, "write", shard, OPTIONS, overwrite=False)
    staging = tmp_path / ".imagenet-dg.partial"
    assert any(p.name.endswith(".tmp") for p in staging.rglob("*"))  # the fault really left a temporary file
    result = build(mini_scans, out, OPTIONS)
    assert folder_bytes(out) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet-dg"]
    assert len(result.resumed) == (1 if shard > 3 else 0)


def test_an_overwrite_killed_while_publishing_loses_nothing_it_was_not_asked_to_replace(
    clean, mini_releases: MiniReleases, mini_scans, tmp_path: Path
) -> None:
    files, renames = clean
    out = tmp_path / "imagenet-dg"
    build(mini_scans, out, OTHER)
    old = folder_bytes(out)
    # The last rename of an overwrite moves the new build in, after the old one was moved aside.
    kill_build(mini_releases, out, "replace", renames + 1, OPTIONS, overwrite=True)
    aside = tmp_path / ".imagenet-dg.replaced"
    assert not out.exists() and folder_bytes(aside) == old  # the old build is whole, beside the output
    build(mini_scans, out, OPTIONS, overwrite=True)
    assert folder_bytes(out) == files and verify_build(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet-dg"]


def test_an_overwrite_killed_before_removing_the_old_build_is_tidied_by_the_next_run(
    clean, mini_releases: MiniReleases, mini_scans, tmp_path: Path
) -> None:
    files, _ = clean
    out = tmp_path / "imagenet-dg"
    build(mini_scans, out, OTHER)
    kill_build(mini_releases, out, "rmtree", 1, OPTIONS, overwrite=True)
    assert folder_bytes(out) == files  # the new build is in place, whole
    assert build(mini_scans, out, OPTIONS).up_to_date
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet-dg"]
