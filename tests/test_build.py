"""Building the benchmark folder: layout, loading, determinism, resumption, image health, publishing plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest
import yaml

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.errors import BadImageError, ManifestError, OutputExistsError
from imagenet_dg.hub import upload_plan
from imagenet_dg.layouts import scan
from imagenet_dg.loading import load_task
from imagenet_dg.manifests import read_manifest, verify_files
from imagenet_dg.mini import MiniReleases
from imagenet_dg.protocols import task_statistics
from imagenet_dg.suites import IMAGENET_DG, get_suite

SMALL = BuildOptions(tasks=("a", "r"), shots=(2,), seeds=(1, 2))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_in_reverse_order(source: Path, target: Path) -> None:
    """Copy a tree creating its entries in reverse name order, so directory listings differ."""
    for path in sorted(source.rglob("*"), reverse=True):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


@pytest.fixture(scope="module")
def built(mini_scans, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "imagenet-dg"
    build(mini_scans, out, SMALL)
    return out


@pytest.fixture(scope="module")
def publishable(unmarked_scans, tmp_path_factory) -> Path:
    """A build of releases without the generator's marker, as of real ones: publishing is not refused."""
    out = tmp_path_factory.mktemp("publishable") / "imagenet-dg"
    build(unmarked_scans, out, SMALL)
    return out


def test_output_has_the_hub_dataset_layout(built: Path) -> None:
    assert (built / "README.md").is_file() and (built / "manifest.json").is_file()
    names = sorted(p.relative_to(built).as_posix() for p in (built / "data").rglob("*.parquet"))
    expected = sorted(
        f"data/{task}-2shot-seed{seed}/{split}-00000-of-00001.parquet"
        for task in ("a", "r") for seed in (1, 2) for split in ("expert", "guide", "test")
    )
    assert names == expected
    readme = (built / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    config = next(c for c in front["configs"] if c["config_name"] == "a-2shot-seed1")
    assert {f["split"]: f["path"] for f in config["data_files"]} == {
        split: [f"data/a-2shot-seed1/{split}-00000-of-00001.parquet"] for split in ("expert", "guide", "test")
    }


def test_readme_carries_the_dataset_card(built: Path) -> None:
    card = (Path(__file__).parents[1] / "DATASET_CARD.md").read_text()
    assert card.strip() in (built / "README.md").read_text()


def test_load_dataset_reads_every_split_with_wnid_labels(built: Path, mini_releases: MiniReleases) -> None:
    splits = datasets.load_dataset(str(built), "a-2shot-seed1")
    assert set(splits) == {"expert", "guide", "test"}
    assert splits["guide"].features["label"].names == list(mini_releases.a_wnids)
    assert len(splits["test"]) == sum(mini_releases.expected_counts["imagenet-a"].values())
    row = splits["guide"][0]
    assert set(row) >= {"path", "release", "domain", "wnid", "class_name", "label", "pool"}
    assert splits["guide"].features["label"].names[row["label"]] == row["wnid"]


def test_manifest_records_seeds_counts_and_hashes(built: Path) -> None:
    manifest = read_manifest(built)
    assert manifest["protocol_version"] and manifest["partition_seed"] == 0
    config = manifest["configs"]["r-2shot-seed2"]
    assert (config["task"], config["shots"], config["seed"]) == ("r", 2, 2)
    frame = pd.read_parquet(built / config["splits"]["expert"]["files"][0]["path"])
    assert config["splits"]["expert"]["rows"] == len(frame)
    assert config["splits"]["expert"]["per_domain"] == frame["domain"].value_counts().to_dict()
    assert verify_files(built, manifest) == []


def test_tampered_file_is_detected(publishable: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(publishable, copy)
    victim = next((copy / "data").rglob("guide-*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-10])
    problems = verify_files(copy, read_manifest(copy))
    assert len(problems) == 1 and victim.name in problems[0]
    with pytest.raises(ManifestError, match="not intact"):
        upload_plan(copy)


def test_same_inputs_give_byte_identical_output(built: Path, mini_scans, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build(mini_scans, again, SMALL)
    assert folder_bytes(again) == folder_bytes(built)


def test_output_does_not_depend_on_listing_order_or_location(
    built: Path, mini_releases: MiniReleases, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "releases"
    copy_in_reverse_order(mini_releases.root, moved)
    scans = scan(IMAGENET_DG, folders={d: moved / p.relative_to(mini_releases.root) for d, p in mini_releases.paths.items()})
    out = tmp_path / "out"
    build(scans, out, SMALL)
    assert folder_bytes(out) == folder_bytes(built)


def test_rebuilding_into_the_same_folder_is_a_no_op(built: Path, mini_scans) -> None:
    before = folder_bytes(built)
    result = build(mini_scans, built, SMALL)
    assert result.up_to_date and folder_bytes(built) == before


def test_other_options_never_overwrite_silently(built: Path, mini_scans, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    other = BuildOptions(tasks=("a",), shots=(1,), seeds=(1,))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        build(mini_scans, copy, other)
    assert folder_bytes(copy) == folder_bytes(built)
    build(mini_scans, copy, other, overwrite=True)
    assert list(read_manifest(copy)["configs"]) == ["a-1shot-seed1"]


def test_a_non_empty_foreign_folder_is_refused(mini_scans, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        build(mini_scans, tmp_path, SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_interrupted_build_leaves_no_output_and_a_rerun_resumes(built: Path, mini_scans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written: list[str] = []

    def interrupt_after_two(config: str) -> None:
        written.append(config)
        if len(written) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(mini_scans, out, SMALL, on_config=interrupt_after_two)
    assert not out.exists()
    result = build(mini_scans, out, SMALL)
    assert list(result.resumed) == written and len(result.written) == 2
    assert folder_bytes(out) == folder_bytes(built)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_statistics_match_counts_computed_from_the_generator(mini_releases: MiniReleases, mini_scans) -> None:
    counts = mini_releases.expected_counts
    stats = task_statistics(get_suite(IMAGENET_DG), mini_scans.tables).set_index("task")
    for task, target, classes in (
        ("a", "imagenet-a", mini_releases.a_wnids),
        ("r", "imagenet-r", mini_releases.r_wnids),
        ("i", "imagenet-val", mini_releases.wnids),
    ):
        assert stats.loc[task, "classes"] == len(classes)
        assert stats.loc[task, "target_images"] == sum(counts[target].values())
        expected_sources = [sum(counts[d].get(w, 0) for w in classes) for d in ("imagenet", "imagenet-sketch", "imagenetv2")]
        assert list(stats.loc[task, ["imagenet", "imagenet-sketch", "imagenetv2"]]) == expected_sources
        assert stats.loc[task, "source_total"] == sum(expected_sources)


def test_embedded_images_load_as_images(unmarked_scans, tmp_path: Path) -> None:
    out = tmp_path / "embedded"
    build(unmarked_scans, out, BuildOptions(tasks=("a",), shots=(1,), seeds=(1,), embed_images=True))
    guide = datasets.load_dataset(str(out), "a-1shot-seed1", split="guide")
    image = guide[0]["image"]
    assert image.size[0] > 0
    with pytest.raises(ManifestError, match="redistribut"):
        upload_plan(out)
    assert len(upload_plan(out, allow_embedded_images=True)) == 2 + 3


def test_upload_plan_lists_card_manifest_and_data(publishable: Path) -> None:
    plan = [f.path for f in upload_plan(publishable)]
    assert plan[:2] == ["README.md", "manifest.json"]
    assert len(plan) == 2 + 4 * 3 and all(p.startswith("data/") for p in plan[2:])


def test_upload_plan_of_a_folder_given_relative_to_the_current_one(publishable: Path, monkeypatch) -> None:
    monkeypatch.chdir(publishable.parent)
    assert [f.path for f in upload_plan(Path(publishable.name))] == [f.path for f in upload_plan(publishable)]


@pytest.fixture
def broken_releases(mini_releases: MiniReleases, tmp_path: Path) -> tuple[dict, str]:
    """A copy of the miniature releases in which one ImageNet-Sketch image is truncated."""
    root = tmp_path / "releases"
    shutil.copytree(mini_releases.root, root)
    paths = {d: root / p.relative_to(mini_releases.root) for d, p in mini_releases.paths.items()}
    victim = paths["imagenet-sketch"] / mini_releases.a_wnids[0] / "sketch_1.JPEG"
    victim.write_bytes(victim.read_bytes()[:200])
    return paths, f"{mini_releases.a_wnids[0]}/sketch_1.JPEG"


def test_verify_stops_on_an_unusable_image_and_names_it(broken_releases, tmp_path: Path) -> None:
    paths, victim = broken_releases
    options = BuildOptions(tasks=("a",), shots=(16,), seeds=(1,), verify=True, workers=1)
    with pytest.raises(BadImageError, match=victim):
        build(scan(IMAGENET_DG, folders=paths), tmp_path / "out", options)
    assert not (tmp_path / "out").exists()


def test_skip_excludes_unusable_images_and_records_them(broken_releases, tmp_path: Path) -> None:
    paths, victim = broken_releases
    options = BuildOptions(tasks=("a",), shots=(16,), seeds=(1,), verify=True, on_bad_image="skip", workers=1)
    result = build(scan(IMAGENET_DG, folders=paths), tmp_path / "out", options)
    excluded = result.manifest["excluded"]
    assert [(e["domain"], e["path"]) for e in excluded] == [("imagenet-sketch", victim)]
    assert excluded[0]["kind"] == "truncated"
    for split in ("expert", "guide"):
        frame = pd.read_parquet(tmp_path / "out" / result.manifest["configs"]["a-16shot-seed1"]["splits"][split]["files"][0]["path"])
        assert victim not in set(frame["path"])
    assert result.manifest["quirks"]  # the miniature train set carries CMYK and PNG-as-JPEG files
    assert result.health is not None and result.health.checked > 0


def test_load_task_opens_images_from_the_release_roots(built: Path, mini_releases: MiniReleases) -> None:
    task = load_task(built, "a-2shot-seed1", dict(mini_releases.paths))
    assert task.class_ids == mini_releases.a_wnids
    assert task.sources == ("imagenet", "imagenet-sketch", "imagenetv2") and task.target == "imagenet-a"
    assert all(p.is_file() for pool in task.expert.values() for p in pool.paths)
    assert len(task.test) == sum(mini_releases.expected_counts["imagenet-a"].values())


def test_manifest_lists_the_class_names_by_wnid(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    classes = manifest["configs"]["a-2shot-seed1"]["classes"]
    assert [c["wnid"] for c in classes] == sorted(c["wnid"] for c in classes)
    assert all(c["name"] for c in classes)
