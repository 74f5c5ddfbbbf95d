"""Synthetic data never pass for real: decided once, from the data, whatever route the data took."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from guidg import harness
from guidg.backbone import TINY_MODEL
from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.manifests import read_manifest
from imagenet_dg.mini import MARKER as RELEASES_MARKER
from imagenet_dg.mini import MiniReleases
from imagenet_dg.mini_suites import MARKER as SUITE_MARKER
from imagenet_dg.mini_suites import make_mini_suite
from imagenet_dg.sources import is_synthetic
from imagenet_dg.suites import IMAGENET_DG, get_suite


def sweep(tmp_path: Path, **changes) -> harness.Sweep:
    base = harness.Sweep(methods=("zeroshot",), model=TINY_MODEL, pretrained="none", device="cpu", seeds=(1,),
                         targets=("a",), runs=tmp_path / "runs")
    return dataclasses.replace(base, **changes)


def prepared(the_sweep: harness.Sweep) -> harness.Prepared:
    return harness.prepare(harness.validate(the_sweep), on_build=lambda text: None)


# --- the one function ------------------------------------------------------------------------------------------


def test_a_generators_marker_beside_or_inside_a_domain_folder_makes_the_data_synthetic(tmp_path: Path) -> None:
    real = tmp_path / "real" / "train"
    real.mkdir(parents=True)
    assert not is_synthetic([real])
    releases = tmp_path / "mini" / "train"
    releases.mkdir(parents=True)
    (tmp_path / "mini" / RELEASES_MARKER).write_text("{}")
    assert is_synthetic([real, releases])
    domain = tmp_path / "suite" / "PACS" / "photo"
    domain.mkdir(parents=True)
    (tmp_path / "suite" / "PACS" / SUITE_MARKER).write_text("{}")
    assert is_synthetic([domain])


def test_a_manifests_flag_or_its_miniature_suite_makes_the_data_synthetic() -> None:
    assert is_synthetic(manifest={"suite": "imagenet-dg", "synthetic": True})
    assert is_synthetic(manifest={"suite": "mini-pacs", "synthetic": False})
    assert not is_synthetic(manifest={"suite": "pacs", "synthetic": False})
    assert not is_synthetic(manifest={"synthetic": False})


# --- every route to the data -------------------------------------------------------------------------------------


def test_the_miniature_releases_found_under_a_root_are_built_as_synthetic_by_the_harness(
    mini_releases: MiniReleases, tmp_path: Path
) -> None:
    # The harness's own build: recording anything but the truth (a hard-coded flag) fails here.
    result = prepared(sweep(tmp_path, root=mini_releases.root))
    assert result.built and result.synthetic
    assert read_manifest(result.benchmark)["synthetic"] is True


def test_the_miniature_releases_given_one_by_one_are_built_as_synthetic(
    mini_releases: MiniReleases, tmp_path: Path
) -> None:
    result = prepared(sweep(tmp_path, release_paths=dict(mini_releases.paths)))
    assert result.built and result.synthetic and read_manifest(result.benchmark)["synthetic"] is True


def test_prebuilt_manifests_of_the_miniature_releases_stay_synthetic(
    mini_benchmark: Path, mini_releases: MiniReleases, tmp_path: Path
) -> None:
    result = prepared(sweep(tmp_path, benchmark=mini_benchmark, root=mini_releases.root))
    assert not result.built and result.synthetic


def test_prebuilt_manifests_recording_real_data_are_refused_for_synthetic_images(
    unmarked_scans, mini_releases: MiniReleases, tmp_path: Path
) -> None:
    benchmark = tmp_path / "real-looking"
    build(unmarked_scans, benchmark, BuildOptions(tasks=("a",), shots=(16,), seeds=(1,)))
    assert read_manifest(benchmark)["synthetic"] is False
    with pytest.raises(ImageNetDGError, match="records real data, but the images .* are synthetic"):
        prepared(sweep(tmp_path, benchmark=benchmark, root=mini_releases.root))


def test_a_miniature_suite_given_by_root_is_synthetic_even_scanned_as_the_real_suite(tmp_path: Path) -> None:
    root = make_mini_suite("mini-pacs", tmp_path / "suites", images_per_class=3).root
    result = prepared(sweep(tmp_path, suite="pacs", protocol="full", targets=("sketch",), seeds=(0,), root=root))
    assert result.synthetic and read_manifest(result.benchmark)["synthetic"] is True


def test_evaluate_on_the_miniature_releases_by_root_runs_them_as_synthetic_data(
    mini_releases: MiniReleases, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["evaluate", "--root", str(mini_releases.root), "--target", "a", "--method",
                                       "zeroshot", "--model", TINY_MODEL, "--pretrained", "none", "--seeds", "1",
                                       "--device", "cpu", "--runs", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "preset mini " in result.output  # the preset of synthetic data, chosen from the data
    [manifest] = (tmp_path / "runs" / "manifests").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["synthetic"] is True


def test_build_then_evaluate_keeps_the_miniature_releases_synthetic(mini_releases: MiniReleases, tmp_path: Path) -> None:
    out = tmp_path / "built"
    built = CliRunner().invoke(main, ["build", "--root", str(mini_releases.root), "--tasks", "a", "--shots", "16",
                                      "--seeds", "1", "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert "synthetic ImageNet-DG" in built.output and read_manifest(out)["synthetic"] is True
    result = prepared(sweep(tmp_path, benchmark=out, release_paths=dict(mini_releases.paths)))
    assert result.synthetic and harness.default_preset(get_suite(IMAGENET_DG), "a", result.synthetic) == "mini"
