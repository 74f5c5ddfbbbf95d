"""A suite read from a parquet dataset laid out as a Hugging Face Hub repository."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
import yaml
from PIL import Image

from imagenet_dg.build import BuildOptions, build, build_from
from imagenet_dg.errors import OutputExistsError
from imagenet_dg.hub_suite_source import (
    SOURCE_FILE,
    HubColumns,
    HubSourceError,
    materialise_hub_suite,
    resolve_revision,
)
from imagenet_dg.layouts import scan_suite, suite_roots
from imagenet_dg.loading import load_task
from imagenet_dg.sources import DataRequest
from imagenet_dg.suites import get_suite

PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]


def _jpeg(value: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, (7 * value) % 256)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_hub_repo(folder: Path, *, domain_names: list[str], per_class: int = 3, duplicate: bool = False) -> None:
    """A dataset repository as the Hub stores a parquet mirror: a card with configs and data/ shards, with
    ``domain`` and ``label`` as class labels."""
    classes = list(get_suite("pacs").classes)
    images, domains, labels = [], [], []
    for d, _ in enumerate(domain_names):
        for c, _ in enumerate(classes):
            for i in range(per_class):
                images.append({"bytes": _jpeg(40 * d + 5 * c + i, (20 + i, 16 + c)), "path": None})
                domains.append(d)
                labels.append(c)
    if duplicate:
        images.append(images[0])
        domains.append(domains[0])
        labels.append(labels[0])
    features = datasets.Features(
        {"image": datasets.Image(), "domain": datasets.ClassLabel(names=domain_names),
         "label": datasets.ClassLabel(names=classes)}
    )
    data = datasets.Dataset.from_dict({"image": images, "domain": domains, "label": labels}, features=features)
    (folder / "data").mkdir(parents=True)
    half = len(data) // 2
    data.select(range(half)).to_parquet(str(folder / "data" / "train-00000-of-00002.parquet"))
    data.select(range(half, len(data))).to_parquet(str(folder / "data" / "train-00001-of-00002.parquet"))
    card = {"configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]}
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n# PACS mirror\n", encoding="utf-8")


@pytest.fixture
def hub_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "hub" / "pacs"
    write_hub_repo(repo, domain_names=["art painting", "Cartoon", "photo", "sketch"])
    return repo


def test_a_hub_dataset_is_materialised_in_the_suites_folder_layout(hub_repo: Path, tmp_path: Path) -> None:
    result = materialise_hub_suite("pacs", str(hub_repo), tmp_path / "images", cache_dir=tmp_path / "cache")
    assert result.folder == tmp_path / "images" / "PACS"
    scan = scan_suite("pacs", tmp_path / "images")
    assert {d: len(t) for d, t in scan.tables.items()} == {d: 21 for d in PACS_DOMAINS}
    for domain, table in scan.tables.items():
        for path in table["path"]:
            data = (result.folder / domain / path).read_bytes()
            assert Image.open(io.BytesIO(data)).format == "JPEG"
    # Content-addressed names: the file name is the hash of the original bytes.
    import hashlib

    one = next((result.folder / "sketch" / "horse").iterdir())
    assert one.name == hashlib.sha256(one.read_bytes()).hexdigest()[:32] + ".jpg"


def test_the_revision_and_repository_are_recorded_in_the_build(hub_repo: Path, tmp_path: Path) -> None:
    materialise_hub_suite("pacs", str(hub_repo), tmp_path / "images", cache_dir=tmp_path / "cache")
    scan = scan_suite("pacs", tmp_path / "images")
    result = build(scan, tmp_path / "out", BuildOptions(shots=(2,), seeds=(1,), tasks=("photo",)))
    source = result.manifest["source"]
    assert source["kind"] == "hub" and source["repo_id"] == "pacs"
    assert source["revision"].startswith("sha256:") and len(source["revision"]) == len("sha256:") + 64
    assert str(tmp_path) not in json.dumps(result.manifest)
    task = load_task(tmp_path / "out", "photo-2shot-seed1", suite_roots("pacs", tmp_path / "images"))
    assert len(task.test) == 7 and all(p.is_file() for p in task.test.paths)


def test_a_changed_repository_gets_another_revision(hub_repo: Path, tmp_path: Path) -> None:
    first = materialise_hub_suite("pacs", str(hub_repo), tmp_path / "a", cache_dir=tmp_path / "cache")
    other = tmp_path / "hub2" / "pacs"
    write_hub_repo(other, domain_names=["art painting", "Cartoon", "photo", "sketch"], per_class=2)
    second = materialise_hub_suite("pacs", str(other), tmp_path / "b", cache_dir=tmp_path / "cache")
    assert first.source["revision"] != second.source["revision"]
    with pytest.raises(OutputExistsError, match="was not written from pacs"):
        materialise_hub_suite("pacs", str(other), tmp_path / "a", cache_dir=tmp_path / "cache")


def test_materialising_again_reuses_the_folder(hub_repo: Path, tmp_path: Path) -> None:
    first = materialise_hub_suite("pacs", str(hub_repo), tmp_path / "images", cache_dir=tmp_path / "cache")
    stamp = (first.folder / SOURCE_FILE).stat().st_mtime_ns
    again = materialise_hub_suite("pacs", str(hub_repo), tmp_path / "images", cache_dir=tmp_path / "cache")
    assert again.source == first.source
    assert (first.folder / SOURCE_FILE).stat().st_mtime_ns == stamp


def test_identical_images_are_written_once(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "pacs"
    write_hub_repo(repo, domain_names=PACS_DOMAINS, per_class=1, duplicate=True)
    result = materialise_hub_suite("pacs", str(repo), tmp_path / "images", cache_dir=tmp_path / "cache")
    record = json.loads((result.folder / SOURCE_FILE).read_text())
    assert record["rows"] == 29 and record["duplicates_merged"] == 1
    assert sum(len(t) for t in scan_suite("pacs", tmp_path / "images").tables.values()) == 28


def test_a_domain_that_matches_no_suite_domain_is_named(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "pacs"
    write_hub_repo(repo, domain_names=["art_painting", "cartoon", "photo", "quickdraw"], per_class=1)
    with pytest.raises(HubSourceError, match="domain value 'quickdraw' matches none of PACS's domains"):
        materialise_hub_suite("pacs", str(repo), tmp_path / "images", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "images" / "PACS").exists()


def test_a_missing_column_is_named_with_the_columns_present(hub_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(HubSourceError, match="no column\\(s\\) env; it has image, domain, label"):
        materialise_hub_suite("pacs", str(hub_repo), tmp_path / "images", columns=HubColumns(domain="env"),
                              cache_dir=tmp_path / "cache")


def test_a_remote_dataset_needs_a_revision() -> None:
    with pytest.raises(HubSourceError, match="--revision is required"):
        resolve_revision("flwrlabs/pacs", None)
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert resolve_revision("flwrlabs/pacs", commit) == commit


def test_build_from_a_hub_folder_in_one_call(hub_repo: Path, tmp_path: Path) -> None:
    request = DataRequest(get_suite("pacs"), root=tmp_path / "images", hub=str(hub_repo))
    result = build_from(request, tmp_path / "out", BuildOptions(protocol="full", seeds=(0,), tasks=("sketch",)))
    assert result.manifest["source"]["kind"] == "hub"
    assert result.manifest["synthetic"] is False
    assert set(result.manifest["configs"]) == {"sketch-full-trial0"}


def test_a_remote_branch_is_pinned_to_its_commit_before_loading(
    hub_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    import imagenet_dg.hub_suite_source as source

    commit = "89abcdef" * 5
    asked: list[tuple[str, str | None]] = []

    class Info:
        sha = commit

    def dataset_info(self, repo_id: str, revision: str | None = None) -> Info:
        asked.append((repo_id, revision))
        return Info()

    def load(repo_id: str, revision: str | None, cache_dir: object):
        asked.append((repo_id, revision))
        return real_load(str(hub_repo), None, tmp_path / "cache")

    real_load = source._load
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(source, "_load", load)
    result = materialise_hub_suite("pacs", "someone/pacs-mirror", tmp_path / "images", revision="main")
    assert asked == [("someone/pacs-mirror", "main"), ("someone/pacs-mirror", commit)]
    assert result.source["repo_id"] == "someone/pacs-mirror" and result.source["revision"] == commit
    built = build(scan_suite("pacs", tmp_path / "images"), tmp_path / "out",
                  BuildOptions(shots=(1,), seeds=(1,), tasks=("photo",)))
    assert built.manifest["source"]["revision"] == commit
