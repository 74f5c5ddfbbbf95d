"""The command line: a thin layer whose commands reach the library and report errors clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.mini import MiniReleases


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def release_args(mini: MiniReleases) -> list[str]:
    args = []
    for domain, path in mini.paths.items():
        args += [f"--{domain}", str(path)]
    return args


def test_build_with_mini_uses_the_miniature_set(runner: CliRunner, tmp_path: Path) -> None:
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(main, ["build", "--mini", "--tasks", "a", "--shots", "1", "--seeds", "1"])
        assert result.exit_code == 0, result.output
        assert "miniature synthetic releases" in result.output
        assert Path("imagenet-dg/data/a-1shot-seed1/test-00000-of-00001.parquet").is_file()
        assert Path("mini-releases/train").is_dir()


def test_build_without_releases_is_refused_and_names_mini(runner: CliRunner, tmp_path: Path) -> None:
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(main, ["build", "--tasks", "a", "--shots", "1", "--seeds", "1"])
        assert result.exit_code == 2
        assert "error: no release given" in result.output and "--mini" in result.output
        assert not Path("mini-releases").exists() and not Path("imagenet-dg").exists()


def test_mini_beside_release_folders_is_refused(runner: CliRunner, mini_releases: MiniReleases, tmp_path: Path) -> None:
    result = runner.invoke(main, ["build", "--mini", "--root", str(mini_releases.root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--mini" in result.output and "--root" in result.output


def test_build_from_explicit_release_folders(runner: CliRunner, mini_releases: MiniReleases, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(main, ["build", *release_args(mini_releases), "--out", str(out), "--tasks", "r", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "data" / "r-16shot-seed2").is_dir() and "content hash" in result.output


def test_root_is_searched_for_the_usual_folder_names(runner: CliRunner, mini_releases: MiniReleases, tmp_path: Path) -> None:
    result = runner.invoke(main, ["stats", "--root", str(mini_releases.root)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["task", "target", "classes", "target_images"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "i", "r"]


def test_missing_releases_are_reported_with_what_was_expected(runner: CliRunner, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    result = runner.invoke(main, ["build", "--root", str(empty), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "error:" in result.output
    for domain in ("imagenet-a", "imagenetv2"):
        assert domain in result.output
    assert not (tmp_path / "out").exists()


def test_bad_option_values_are_refused(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["build", "--shots", "3", "--out", str(tmp_path / "o"), "--mini-dir", str(tmp_path / "m")])
    assert result.exit_code == 2 and "shots must be among" in result.output


def test_push_dry_run_lists_the_files(runner: CliRunner, unmarked_scans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(unmarked_scans, out, BuildOptions(tasks=("a",), seeds=(1,)))  # no generator's marker: stands for real data
    result = runner.invoke(main, ["push", str(out), "--repo-id", "someone/imagenet-dg", "--dry-run", "--token", "hf_secret_value"])
    assert result.exit_code == 0, result.output
    assert "README.md" in result.output and "manifest.json" in result.output and "(dry run)" in result.output
    assert "hf_secret_value" not in result.output


def test_a_build_of_the_miniature_releases_says_synthetic_and_push_refuses_it(
    runner: CliRunner, mini_releases: MiniReleases, tmp_path: Path
) -> None:
    import json

    out = tmp_path / "out"
    assert runner.invoke(main, ["build", *release_args(mini_releases), "--out", str(out), "--tasks", "a", "--seeds", "1"]).exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["synthetic"] is True
    assert "Synthetic data" in (out / "README.md").read_text()
    result = runner.invoke(main, ["push", str(out), "--repo-id", "someone/imagenet-dg", "--dry-run"])
    assert result.exit_code == 2 and "synthetic" in result.output and "README.md" not in result.output


def test_make_mini_prints_every_release(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["make-mini", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.output.strip().splitlines()] == [
        "imagenet", "imagenet-val", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenetv2"
    ]
