"""A manifest's hashes mean something: altered, extra or missing shards are refused by name, and no name or
path read from a manifest leads outside the dataset folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest
from click.testing import CliRunner

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.errors import ManifestError, PathEscapeError
from imagenet_dg.hashing import file_sha256
from imagenet_dg.hub import upload_plan
from imagenet_dg.loading import load_task
from imagenet_dg.manifests import content_hash, read_manifest, verify_build
from imagenet_dg.mini import MiniReleases

CONFIG = "a-1shot-seed1"


@pytest.fixture(scope="module")
def reference(unmarked_scans, tmp_path_factory) -> Path:
    """A build that stands for one of real releases (publishing it is not refused as synthetic)."""
    out = tmp_path_factory.mktemp("reference") / "imagenet-dg"
    build(unmarked_scans, out, BuildOptions(tasks=("a",), shots=(1,), seeds=(1,)))
    return out


@pytest.fixture
def copy(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "imagenet-dg"
    shutil.copytree(reference, out)
    return out


def shard(folder: Path, split: str) -> Path:
    return folder / "data" / CONFIG / f"{split}-00000-of-00001.parquet"


def rewrite_manifest(folder: Path, change) -> None:
    """Apply ``change`` to the manifest and record a content hash consistent with the files it lists."""
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    manifest["content_hash"] = content_hash(
        (f["path"], f["sha256"]) for c in manifest["configs"].values() for s in c["splits"].values() for f in s["files"]
    )
    (folder / "manifest.json").write_text(json.dumps(manifest))


def roots(mini: MiniReleases) -> dict[str, Path]:
    return dict(mini.paths)


# --- altered, extra and missing shards -------------------------------------------------------------------


def test_a_shard_rewritten_with_other_labels_is_refused(copy: Path, mini_releases: MiniReleases) -> None:
    frame = pd.read_parquet(shard(copy, "test"))
    frame["label"] = 0
    frame.to_parquet(shard(copy, "test"), index=False)
    with pytest.raises(ManifestError, match=r"test-00000-of-00001\.parquet: content differs"):
        load_task(copy, CONFIG, roots(mini_releases))


def test_a_copied_extra_shard_is_refused_and_not_loaded_as_data(copy: Path, mini_releases: MiniReleases) -> None:
    extra = copy / "data" / CONFIG / "test-00001-of-00001.parquet"
    shutil.copyfile(shard(copy, "test"), extra)
    with pytest.raises(ManifestError, match=r"test-00001-of-00001\.parquet: not listed"):
        load_task(copy, CONFIG, roots(mini_releases))
    # The card names the split's files one by one, so datasets does not double the split either.
    expected = len(pd.read_parquet(shard(copy, "test")))
    assert len(datasets.load_dataset(str(copy), CONFIG, split="test")) == expected


def test_a_missing_shard_is_named(copy: Path, mini_releases: MiniReleases) -> None:
    shard(copy, "guide").unlink()
    with pytest.raises(ManifestError, match=r"guide-00000-of-00001\.parquet: missing"):
        load_task(copy, CONFIG, roots(mini_releases))


def test_an_intact_copy_loads(copy: Path, mini_releases: MiniReleases) -> None:
    task = load_task(copy, CONFIG, roots(mini_releases))
    assert len(task.test) == len(pd.read_parquet(shard(copy, "test")))


def test_a_hash_edited_without_the_content_hash_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["configs"][CONFIG]["splits"]["test"]["files"][0]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="content hash"):
        read_manifest(copy)


def test_a_shard_replaced_by_a_link_to_a_file_outside_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.parquet"
    shutil.copyfile(shard(copy, "test"), outside)
    shard(copy, "test").unlink()
    shard(copy, "test").symlink_to(outside)
    with pytest.raises(PathEscapeError, match="outside the root"):
        upload_plan(copy)


# --- names and paths that would leave the folder ----------------------------------------------------------


def test_a_configuration_name_climbing_out_is_refused(copy: Path, tmp_path: Path, mini_releases: MiniReleases) -> None:
    escaped = "../../outside-data"
    outside = (copy / "data" / escaped).resolve()
    shutil.copytree(copy / "data" / CONFIG, outside)

    def rename(manifest: dict) -> None:
        entry = manifest["configs"].pop(CONFIG)
        for split in entry["splits"].values():
            for f in split["files"]:
                f["path"] = f["path"].replace(CONFIG, escaped)
        manifest["configs"][escaped] = entry

    rewrite_manifest(copy, rename)
    with pytest.raises(PathEscapeError, match="outside-data"):
        load_task(copy, escaped, roots(mini_releases))
    result = CliRunner().invoke(main, ["push", str(copy), "--repo-id", "someone/x", "--dry-run"])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("escape", ["../../../etc/passwd", "/etc/passwd", f"data/{CONFIG}/../../manifest.json"])
def test_a_shard_path_leaving_the_folder_is_neither_read_nor_uploaded(copy: Path, escape: str) -> None:
    target = Path("/etc/passwd")

    def point_outside(manifest: dict) -> None:
        entry = manifest["configs"][CONFIG]["splits"]["test"]["files"][0]
        entry["path"] = escape
        entry["sha256"] = file_sha256(target) if target.is_file() else "0" * 64

    rewrite_manifest(copy, point_outside)
    with pytest.raises(PathEscapeError):
        upload_plan(copy)
    result = CliRunner().invoke(main, ["push", str(copy), "--repo-id", "someone/x", "--dry-run"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert "passwd  " not in result.output and result.output.count("\n") == 1


def test_a_shard_listed_under_another_split_is_refused(copy: Path) -> None:
    def swap(manifest: dict) -> None:
        splits = manifest["configs"][CONFIG]["splits"]
        splits["guide"]["files"], splits["test"]["files"] = splits["test"]["files"], splits["guide"]["files"]

    rewrite_manifest(copy, swap)
    with pytest.raises(PathEscapeError, match="expected data/a-1shot-seed1/guide-NNNNN-of-NNNNN.parquet"):
        read_manifest(copy)


# --- verifying a copy -------------------------------------------------------------------------------------


def test_verify_accepts_an_intact_copy_with_hub_metadata(copy: Path) -> None:
    (copy / ".gitattributes").write_text("*.parquet filter=lfs\n")
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 0 and "intact" in result.output
    assert verify_build(copy) == []


def test_verify_names_every_problem(copy: Path) -> None:
    (copy / "data" / CONFIG / "test-00001-of-00001.parquet").write_bytes(b"extra")
    shard(copy, "guide").write_bytes(b"damaged")
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "test-00001-of-00001.parquet: not part of the build" in result.output
    assert "guide-00000-of-00001.parquet: content differs" in result.output


@pytest.mark.parametrize(("field", "value"), [("format", True), ("rows", "many")])
def test_malformed_fields_are_refused_in_words(copy: Path, field: str, value) -> None:
    def spoil(manifest: dict) -> None:
        if field == "format":
            manifest["format"] = value
        else:
            manifest["configs"][CONFIG]["splits"]["test"]["files"][0]["rows"] = value

    rewrite_manifest(copy, spoil)
    with pytest.raises(ManifestError, match=field if field == "format" else "row count"):
        read_manifest(copy)


def test_a_card_linked_to_a_file_outside_is_not_uploaded(copy: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    (copy / "README.md").unlink()
    (copy / "README.md").symlink_to(secret)
    with pytest.raises(PathEscapeError, match="README.md"):
        upload_plan(copy)
