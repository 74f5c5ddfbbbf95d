"""The manifest format: what this version writes, which formats it reads, and how an older output is rebuilt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.errors import ManifestError, OutputExistsError
from imagenet_dg.layouts import scan_suite
from imagenet_dg.manifests import CLASS_ID_KEY, MANIFEST_FILE, MANIFEST_FORMAT, config_classes, read_manifest
from imagenet_dg.mini_suites import make_mini_suite

ONE = BuildOptions(tasks=("a",), shots=(1,), seeds=(1,))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest.update(changes)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture(scope="module")
def imagenet_dg_build(mini_scans, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("format") / "imagenet-dg"
    build(mini_scans, out, ONE)
    return out


@pytest.fixture(scope="module")
def suite_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_mini_suite("mini-pacs", tmp_path_factory.mktemp("suite"), images_per_class=5).root
    out = tmp_path_factory.mktemp("format") / "mini-pacs"
    build(scan_suite("mini-pacs", root), out, BuildOptions(shots=(1,), seeds=(1,), tasks=("photo",)))
    return out


@pytest.mark.parametrize("built", ["imagenet_dg_build", "suite_build"])
def test_every_class_entry_has_the_key_its_declared_format_names(built: str, request: pytest.FixtureRequest) -> None:
    # A reader of the declared format finds each class by that key: a suite's classes (no wnid) must not be
    # labelled with the format that keyed classes by wnid.
    manifest = read_manifest(request.getfixturevalue(built))
    assert manifest["format"] == MANIFEST_FORMAT
    key = CLASS_ID_KEY[manifest["format"]]
    for config in manifest["configs"].values():
        assert config["classes"] and all(key in c for c in config["classes"])


def test_imagenet_dg_classes_keep_their_wnid_beside_the_id(imagenet_dg_build: Path) -> None:
    for config in read_manifest(imagenet_dg_build)["configs"].values():
        assert all(c["wnid"] == c["id"] for c in config["classes"])


def test_the_card_names_the_format(imagenet_dg_build: Path, suite_build: Path) -> None:
    for folder in (imagenet_dg_build, suite_build):
        assert f"manifest format {read_manifest(folder)['format']}" in (folder / "README.md").read_text()


def test_a_format_1_manifest_is_read_by_its_wnids(imagenet_dg_build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(imagenet_dg_build, copy)
    manifest = read_manifest(copy)
    config = next(iter(manifest["configs"]))
    classes = manifest["configs"][config]["classes"]
    for entry in classes:  # as format 1 wrote them: no id, and wnids that differ from what id would say
        entry["wnid"] = entry.pop("id") + "-wnid"
    edit_manifest(copy, format=1, configs=manifest["configs"])
    ids, names = config_classes(read_manifest(copy), config)
    assert ids == tuple(c["wnid"] for c in classes) and names == tuple(c["name"] for c in classes)


def test_a_suite_manifest_labelled_format_1_before_the_format_was_raised_is_read_by_its_ids(suite_build: Path) -> None:
    manifest = read_manifest(suite_build)
    manifest["format"] = 1  # what suite builds wrote then: classes as {"id", "name"} under format 1
    config = next(iter(manifest["configs"]))
    ids, _ = config_classes(manifest, config)
    assert ids == tuple(c["id"] for c in manifest["configs"][config]["classes"]) and "dog" in ids


def test_a_format_2_class_without_an_id_is_refused_in_words(imagenet_dg_build: Path) -> None:
    manifest = read_manifest(imagenet_dg_build)
    config = next(iter(manifest["configs"]))
    del manifest["configs"][config]["classes"][1]["id"]
    with pytest.raises(ManifestError, match=rf"configuration '{config}': expected its classes .*'id'.*format 2"):
        config_classes(manifest, config)


def test_a_higher_format_is_refused_naming_the_formats_this_version_reads(
    imagenet_dg_build: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(imagenet_dg_build, copy)
    edit_manifest(copy, format=MANIFEST_FORMAT + 1)
    with pytest.raises(ManifestError, match=rf"manifest format {MANIFEST_FORMAT + 1}, this version reads 1 to "
                                            rf"{MANIFEST_FORMAT}; install the imagenet-dg version that wrote it"):
        read_manifest(copy)


def test_an_output_in_an_earlier_format_is_rebuilt_only_when_asked(
    imagenet_dg_build: Path, mini_scans, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(imagenet_dg_build, out)
    # What a version writing format 1 left: the same data files, an older format and build key.
    edit_manifest(out, format=1, build_fingerprint="0" * 64)
    before = folder_bytes(out)
    with pytest.raises(OutputExistsError, match=rf"manifest format 1; this version writes format {MANIFEST_FORMAT}: "
                                                r"pass --overwrite"):
        build(mini_scans, out, ONE)
    assert folder_bytes(out) == before
    result = build(mini_scans, out, ONE, overwrite=True)
    assert not result.up_to_date and folder_bytes(out) == folder_bytes(imagenet_dg_build)
