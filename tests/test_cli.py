"""The command line: a thin layer whose commands reach the library and report errors clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.mini import MiniReleases
from imagenet_dg.mini_suites import make_mini_suite


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


# --- every suite through the same commands ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pacs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mini_suite("mini-pacs", tmp_path_factory.mktemp("suite"), images_per_class=5).root


@pytest.mark.parametrize("lists", [
    ["--shots", "1", "2", "--seeds", "1", "3", "--tasks", "photo", "sketch"],
    ["--shots", "1,2", "--seeds", "1,3", "--tasks", "photo,sketch"],
    ["--shots", "1", "--shots", "2", "--seeds=1", "3", "--targets", "photo", "--target", "sketch"],
])
def test_lists_are_given_alike_with_spaces_commas_or_repeats(runner: CliRunner, pacs_root: Path, tmp_path: Path,
                                                             lists: list[str]) -> None:
    out = tmp_path / "out"
    result = runner.invoke(main, ["build", "--suite", "mini-pacs", "--root", str(pacs_root), *lists, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "manifest.json").read_text())["configs"]) == {
        f"{t}-{k}shot-seed{s}" for t in ("photo", "sketch") for k in (1, 2) for s in (1, 3)}


def test_evaluate_takes_the_lists_as_build_does(runner: CliRunner, pacs_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(main, ["evaluate", "--suite", "mini-pacs", "--root", str(pacs_root), "--target",
                                  "photo,sketch", "--shots", "2", "--seeds", "1", "3", "--method", "zeroshot", "coop",
                                  "--model", "imagenet-dg-tiny", "--pretrained", "none", "--device", "cpu",
                                  "--runs", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "8 runs, 0 done, 8 to run" in result.output
    assert all(f"{t}-2shot-seed{s}" in result.output for t in ("photo", "sketch") for s in (1, 3))


def test_a_list_of_what_is_not_a_number_is_one_error_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["build", "--seeds", "1", "two", "--mini-dir", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "--seeds" in result.output


def test_stats_of_a_standard_suite_prints_its_per_task_table(runner: CliRunner, pacs_root: Path) -> None:
    result = runner.invoke(main, ["stats", "--suite", "mini-pacs", "--root", str(pacs_root)])
    assert result.exit_code == 0, result.output
    header, *rows = [line.split() for line in result.output.strip().splitlines()]
    assert header == ["task", "target", "classes", "target_images", "art_painting", "cartoon", "photo", "sketch",
                      "source_total"]
    assert [row[0] for row in rows] == ["art_painting", "cartoon", "photo", "sketch"]
    for index, row in enumerate(rows):  # 7 classes of 5 images in every domain; a target is no source of its task
        sources = row[4:8]
        assert row[2:4] == ["7", "35"] and sources[index] == "-"
        assert [s for i, s in enumerate(sources) if i != index] == ["35"] * 3 and row[8] == "105"


def test_verify_takes_the_suite_a_folder_must_hold(runner: CliRunner, pacs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(main, ["build", "--suite", "mini-pacs", "--root", str(pacs_root), "--protocol", "full",
                                "--seeds", "0", "--out", str(out)]).exit_code == 0
    intact = runner.invoke(main, ["verify", str(out), "--suite", "mini-pacs"])
    assert intact.exit_code == 0 and "intact" in intact.output and "full" in intact.output
    other = runner.invoke(main, ["verify", str(out), "--suite", "pacs"])
    assert other.exit_code == 2 and "holds a build of mini-pacs, not of pacs" in other.output


@pytest.mark.parametrize(("options", "message"), [
    (["--protocol", "full", "--shots", "4"], "the full protocol trains on every image"),
    (["--mini"], "--mini and the ImageNet release options apply to ImageNet-DG"),
    (["--imagenet-a", "somewhere"], "--mini and the ImageNet release options apply to ImageNet-DG"),
])
def test_build_refuses_options_the_suite_cannot_take_instead_of_ignoring_them(
    runner: CliRunner, pacs_root: Path, tmp_path: Path, options: list[str], message: str
) -> None:
    result = runner.invoke(main, ["build", "--suite", "mini-pacs", *options, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()
