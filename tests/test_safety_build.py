"""What a build may replace, when an output is up to date, and the modes of what it writes."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.errors import BadImageError, OutputExistsError
from imagenet_dg.layouts import scan
from imagenet_dg.manifests import read_manifest, verify_build
from imagenet_dg.mini import MiniReleases
from imagenet_dg.suites import IMAGENET_DG

ONE = BuildOptions(tasks=("a",), shots=(1,), seeds=(1,))
TWO = BuildOptions(tasks=("a",), shots=(1,), seeds=(1, 2))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(mini_scans, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "imagenet-dg"
    build(mini_scans, out, ONE)
    return out


@pytest.fixture
def releases_copy(mini_releases: MiniReleases, tmp_path: Path) -> dict[str, Path]:
    """The miniature releases with a copy of ImageNet-Sketch (under ``releases/``) that a test may damage."""
    paths = dict(mini_releases.paths)
    sketch = tmp_path / "releases" / paths["imagenet-sketch"].relative_to(mini_releases.root)
    shutil.copytree(paths["imagenet-sketch"], sketch)
    paths["imagenet-sketch"] = sketch
    return paths


def release_args(paths: dict[str, Path]) -> list[str]:
    return [arg for domain, path in paths.items() for arg in (f"--{domain}", str(path))]


# --- --overwrite replaces only an earlier build ------------------------------------------------------------


def test_overwrite_refuses_a_folder_holding_no_build(mini_scans, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an ImageNet-DG build"):
        build(mini_scans, tmp_path, ONE, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_build_beside_which_the_user_put_a_file(reference: Path, mini_scans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "data" / "my-notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="my-notes.txt"):
        build(mini_scans, out, TWO, overwrite=True)
    assert (out / "data" / "my-notes.txt").read_text() == "mine"
    assert read_manifest(out) == read_manifest(reference)


def test_the_current_folder_is_never_replaced(mini_releases: MiniReleases, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["build", *release_args(dict(mini_releases.paths)), "--tasks", "a", "--shots", "1", "--seeds", "1"]
    with runner.isolated_filesystem(temp_dir=tmp_path) as here:
        Path("notes.txt").write_text("mine")
        for out in (".", str(Path(here).parent)):
            for extra in ([], ["--overwrite"]):
                result = runner.invoke(main, [*args, "--out", out, *extra])
                assert result.exit_code == 2 and result.output.count("error:") == 1
                assert "current folder" in result.output and "Traceback" not in result.output
        assert [p.name for p in Path(here).iterdir()] == ["notes.txt"] and Path("notes.txt").read_text() == "mine"


def test_a_folder_holding_the_releases_is_never_replaced(releases_copy: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "releases"
    (tmp_path / "notes.txt").write_text("mine")
    before = folder_bytes(tmp_path)
    scans = scan(IMAGENET_DG, folders=releases_copy)
    for out in (root, tmp_path):
        with pytest.raises(OutputExistsError, match="release folder"):
            build(scans, out, ONE, overwrite=True)
    assert folder_bytes(tmp_path) == before


def test_a_foreign_folder_where_the_staging_folder_goes_is_not_deleted(mini_scans, tmp_path: Path) -> None:
    staging = tmp_path / ".out.partial"
    staging.mkdir()
    (staging / "thesis.tex").write_text("mine")
    with pytest.raises(OutputExistsError, match="thesis.tex"):
        build(mini_scans, tmp_path / "out", ONE)
    assert (staging / "thesis.tex").read_text() == "mine"


# --- "up to date" means the files match the manifest -----------------------------------------------------


def test_a_damaged_output_is_named_and_rebuilt_only_when_asked(reference: Path, mini_scans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    victim = out / read_manifest(out)["configs"]["a-1shot-seed1"]["splits"]["guide"]["files"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(OutputExistsError, match=victim.name):
        build(mini_scans, out, ONE)
    result = build(mini_scans, out, ONE, overwrite=True)
    assert not result.up_to_date and folder_bytes(out) == folder_bytes(reference)


def test_a_stale_card_makes_the_output_out_of_date(reference: Path, mini_scans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "README.md").write_text("---\nconfigs: []\n---\n")
    assert not build(mini_scans, out, ONE, overwrite=True).up_to_date
    assert folder_bytes(out) == folder_bytes(reference)


def test_an_intact_output_is_up_to_date(reference: Path, mini_scans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    assert build(mini_scans, out, ONE).up_to_date


# --- the resume key covers what verification and embedding read -----------------------------------------


def truncate(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:200])
    return original


def selected_sketch_image(out: Path, paths: dict[str, Path]) -> Path:
    import pandas as pd

    manifest = read_manifest(out)
    frame = pd.read_parquet(out / manifest["configs"]["a-1shot-seed1"]["splits"]["guide"]["files"][0]["path"])
    return paths["imagenet-sketch"] / frame.loc[frame["domain"] == "imagenet-sketch", "path"].iloc[0]


def test_a_restored_image_is_noticed_and_the_rebuild_equals_a_fresh_one(releases_copy, tmp_path: Path) -> None:
    options = BuildOptions(tasks=("a",), shots=(1,), seeds=(1,), verify=True, on_bad_image="skip", workers=1)
    probe = tmp_path / "probe"
    build(scan(IMAGENET_DG, folders=releases_copy), probe, options)
    victim = selected_sketch_image(probe, releases_copy)
    original = truncate(victim)
    out = tmp_path / "out"
    damaged = build(scan(IMAGENET_DG, folders=releases_copy), out, options)
    assert [e["path"] for e in damaged.manifest["excluded"]] == [victim.relative_to(releases_copy["imagenet-sketch"]).as_posix()]
    victim.write_bytes(original)
    with pytest.raises(OutputExistsError, match="image contents"):
        build(scan(IMAGENET_DG, folders=releases_copy), out, options)
    rebuilt = build(scan(IMAGENET_DG, folders=releases_copy), out, options, overwrite=True)
    assert rebuilt.manifest["excluded"] == [] and folder_bytes(out) == folder_bytes(probe)


def test_an_image_damaged_after_a_verified_build_is_found_by_the_next_one(releases_copy, tmp_path: Path) -> None:
    options = BuildOptions(tasks=("a",), shots=(1,), seeds=(1,), verify=True, workers=1)
    out = tmp_path / "out"
    build(scan(IMAGENET_DG, folders=releases_copy), out, options)
    victim = selected_sketch_image(out, releases_copy)
    truncate(victim)
    with pytest.raises(BadImageError, match=victim.name):
        build(scan(IMAGENET_DG, folders=releases_copy), out, options)


def test_an_embedded_image_changed_on_disk_makes_the_output_out_of_date(releases_copy, tmp_path: Path) -> None:
    options = BuildOptions(tasks=("a",), shots=(1,), seeds=(1,), embed_images=True)
    out = tmp_path / "out"
    build(scan(IMAGENET_DG, folders=releases_copy), out, options)
    victim = selected_sketch_image(out, releases_copy)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(victim, format="JPEG")
    with pytest.raises(OutputExistsError, match="image contents"):
        build(scan(IMAGENET_DG, folders=releases_copy), out, options)
    build(scan(IMAGENET_DG, folders=releases_copy), out, options, overwrite=True)
    fresh = tmp_path / "fresh"
    build(scan(IMAGENET_DG, folders=releases_copy), fresh, options)
    assert folder_bytes(out) == folder_bytes(fresh)


# --- what a resumed build says -----------------------------------------------------------------------------


def test_a_resumed_build_does_not_claim_to_have_written_what_it_kept(
    mini_releases: MiniReleases, mini_scans, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "out"

    def stop_after_first(config: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(mini_scans, out, TWO, on_config=stop_after_first)
    with caplog.at_level(logging.INFO, logger="imagenet_dg"):
        result = CliRunner().invoke(main, ["build", *release_args(dict(mini_releases.paths)), "--out", str(out),
                                           "--tasks", "a", "--shots", "1", "--seeds", "1,2"])
    assert result.exit_code == 0, result.output
    messages = [r.getMessage() for r in caplog.records]
    assert "wrote a-1shot-seed2" in messages and "wrote a-1shot-seed1" not in messages
    assert any(m.startswith("kept 1 configuration") and "a-1shot-seed1" in m for m in messages)


# --- modes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_gives(mini_scans, tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        build(mini_scans, tmp_path / "out", ONE)
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}
    assert verify_build(tmp_path / "out") == []


def test_an_output_given_as_a_symbolic_link_is_refused(reference: Path, mini_scans, tmp_path: Path) -> None:
    real = tmp_path / "real"
    shutil.copytree(reference, real)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        build(mini_scans, tmp_path / "link", TWO, overwrite=True)
    assert folder_bytes(real) == folder_bytes(reference) and (tmp_path / "link").is_symlink()
