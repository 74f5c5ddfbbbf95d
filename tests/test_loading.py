"""Loading manifests into datasets: paths stay inside their release roots, rows become labelled images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from imagenet_dg.errors import ImageNetDGError, ManifestError, PathEscapeError, ReleaseNotFoundError
from imagenet_dg.loading import (
    ImageDataset,
    LabeledImages,
    labeled_images,
    load_task,
    resolve_path,
    task_data_from_frames,
)
from imagenet_dg.hashing import file_sha256
from imagenet_dg.manifests import MANIFEST_FORMAT, content_hash

RNG = np.random.default_rng(5)


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


# --- resolve_path -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    ["../x", "/etc/passwd", "a/../../x", "a/../b", "", "a\\b", "..", "./a", "a//b", "a/", "a/\x00b"],
)
def test_paths_that_are_not_normalised_relative_paths_are_rejected(tmp_path: Path, relative: str) -> None:
    with pytest.raises(PathEscapeError):
        resolve_path(tmp_path, relative)


def test_rejection_names_the_root_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(PathEscapeError) as caught:
        resolve_path(tmp_path, "a/../../secret.txt")
    assert str(tmp_path) in str(caught.value) and "a/../../secret.txt" in str(caught.value)


def test_symlink_pointing_outside_the_root_is_rejected(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "n01").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.JPEG").write_bytes(b"x")
    (root / "n01" / "leak.JPEG").symlink_to(outside / "secret.JPEG")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError, match="outside the root"):
        resolve_path(root, "n01/leak.JPEG")
    with pytest.raises(PathEscapeError, match="outside the root"):
        resolve_path(root, "elsewhere/secret.JPEG")


def test_symlinks_that_stay_inside_the_root_are_accepted(tmp_path: Path) -> None:
    real_root = tmp_path / "real"
    (real_root / "n01").mkdir(parents=True)
    (real_root / "n01" / "a.JPEG").write_bytes(b"x")
    (real_root / "n01" / "alias.JPEG").symlink_to(real_root / "n01" / "a.JPEG")
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(real_root, target_is_directory=True)
    assert resolve_path(real_root, "n01/alias.JPEG") == real_root / "n01" / "alias.JPEG"
    assert resolve_path(linked_root, "n01/a.JPEG") == linked_root / "n01" / "a.JPEG"


def test_normal_paths_are_accepted_as_root_joined_with_path(tmp_path: Path) -> None:
    for relative in ("n01440764/n01440764_10026.JPEG", "imagenet-a/n01498041/0.000116_digital clock.jpg", "x"):
        resolved = resolve_path(tmp_path, relative)
        assert resolved == tmp_path / relative and resolved.is_absolute()


def test_paths_need_not_exist_yet(tmp_path: Path) -> None:
    assert resolve_path(tmp_path, "not/yet/there.JPEG") == tmp_path / "not" / "yet" / "there.JPEG"


# --- labeled_images and LabeledImages ----------------------------------------------------------------------


def test_rows_become_validated_absolute_paths_with_labels_and_domains(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "path": ["n02/b.JPEG", "n01/a.JPEG", "0/c.jpeg"],
            "domain": ["imagenet", "imagenet", "imagenetv2"],
            "label": [1, 0, 0],
            "wnid": ["n02", "n01", "n01"],
        }
    )
    roots = {"imagenet": tmp_path / "train", "imagenetv2": tmp_path / "v2"}
    for root in roots.values():
        root.mkdir()
    images = labeled_images(rows, roots)
    assert images.paths == (tmp_path / "train/n02/b.JPEG", tmp_path / "train/n01/a.JPEG", tmp_path / "v2/0/c.jpeg")
    assert images.labels == (1, 0, 0)
    assert images.domains == ("imagenet", "imagenet", "imagenetv2")
    assert len(images) == 3


def test_missing_roots_error_lists_every_missing_domain_and_how_to_give_it(tmp_path: Path) -> None:
    rows = pd.DataFrame({"path": ["a", "b", "c"], "domain": ["imagenet", "imagenet-a", "imagenetv2"], "label": 0})
    with pytest.raises(ReleaseNotFoundError) as caught:
        labeled_images(rows, {"imagenet": tmp_path})
    message = str(caught.value)
    assert "imagenet-a" in message and "imagenetv2" in message
    assert "roots=" in message and "--imagenet-a" in message


def test_a_root_that_is_not_a_folder_is_named(tmp_path: Path) -> None:
    rows = pd.DataFrame({"path": ["a"], "domain": ["imagenet"], "label": [0]})
    with pytest.raises(ReleaseNotFoundError, match="not a folder"):
        labeled_images(rows, {"imagenet": tmp_path / "absent"})


def test_an_escaping_row_is_rejected(tmp_path: Path) -> None:
    rows = pd.DataFrame({"path": ["n01/a.JPEG", "../../etc/passwd"], "domain": ["imagenet"] * 2, "label": [0, 0]})
    with pytest.raises(PathEscapeError, match="etc/passwd"):
        labeled_images(rows, {"imagenet": tmp_path})


def test_rows_without_the_needed_columns_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="label"):
        labeled_images(pd.DataFrame({"path": ["a"], "domain": ["imagenet"]}), {"imagenet": tmp_path})


def test_subset_keeps_one_domain_in_order() -> None:
    images = LabeledImages(
        paths=(Path("/r/a"), Path("/s/b"), Path("/r/c")), labels=(2, 0, 1), domains=("r", "s", "r")
    )
    assert images.subset("r") == LabeledImages((Path("/r/a"), Path("/r/c")), (2, 1), ("r", "r"))
    with pytest.raises(ImageNetDGError, match="r, s"):
        images.subset("t")


def test_concat_joins_parts_in_order() -> None:
    first = LabeledImages((Path("/r/a"),), (0,), ("r",))
    second = LabeledImages((Path("/s/b"), Path("/s/c")), (1, 2), ("s", "s"))
    joined = LabeledImages.concat([first, second])
    assert joined.paths == (Path("/r/a"), Path("/s/b"), Path("/s/c"))
    assert joined.labels == (0, 1, 2) and joined.domains == ("r", "s", "s")


def test_labeled_images_need_one_label_and_domain_per_path() -> None:
    with pytest.raises(ImageNetDGError, match="2 paths, 1 labels"):
        LabeledImages((Path("/a"), Path("/b")), (0,), ("r", "r"))


# --- ImageDataset ------------------------------------------------------------------------------------------


def test_dataset_yields_transformed_images_with_their_labels(tmp_path: Path) -> None:
    pixels = [RNG.integers(0, 256, (8, 12, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pixels):
        write_png(tmp_path / f"c{i}" / f"{i}.JPEG", p)  # PNG content, .JPEG name, as in the raw data
    rows = pd.DataFrame({"path": [f"c{i}/{i}.JPEG" for i in range(3)], "domain": "imagenet", "label": [4, 7, 1]})
    dataset = ImageDataset(
        labeled_images(rows, {"imagenet": tmp_path}),
        transform=lambda image: torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1),
    )
    assert len(dataset) == 3
    for i in range(3):
        tensor, label = dataset[i]
        assert label == [4, 7, 1][i]
        assert torch.equal(tensor, torch.from_numpy(pixels[i]).permute(2, 0, 1))
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch.shape == (3, 3, 8, 12) and labels.tolist() == [4, 7, 1]


def test_dataset_without_transform_yields_rgb_pictures(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (8, 12), dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    image, label = ImageDataset(LabeledImages((tmp_path / "g.png",), (3,), ("imagenet",)))[0]
    assert image.mode == "RGB" and image.size == (12, 8) and label == 3


# --- task_data_from_frames and load_task --------------------------------------------------------------------

CLASSES = [{"wnid": "n01", "name": "missile"}, {"wnid": "n02", "name": "missile"}, {"wnid": "n03", "name": "ox"}]
SPLIT_ROWS = {
    "expert": [("src1", "n01/e1.JPEG", 0), ("src1", "n03/e2.JPEG", 2), ("src2", "n02/e3.JPEG", 1)],
    "guide": [("src1", "n01/g1.JPEG", 0), ("src2", "n02/g2.JPEG", 1), ("src2", "n03/g3.JPEG", 2)],
    "test": [("tgt", "n01/t1.jpg", 0), ("tgt", "n02/t2.jpg", 1), ("tgt", "n03/t3.jpg", 2), ("tgt", "n03/t4.jpg", 2)],
}


def split_frame(split: str) -> pd.DataFrame:
    rows = SPLIT_ROWS[split]
    return pd.DataFrame(
        {
            "path": [p for _, p, _ in rows],
            "release": "some release",
            "domain": [d for d, _, _ in rows],
            "wnid": [CLASSES[label]["wnid"] for _, _, label in rows],
            "class_name": [CLASSES[label]["name"] for _, _, label in rows],
            "label": pd.Series([label for _, _, label in rows], dtype="int64"),
            "pool": split,
        }
    )


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    roots = {d: tmp_path / "releases" / d for d in ("src1", "src2", "tgt")}
    for root in roots.values():
        root.mkdir(parents=True)
    # The images the splits name: tiny pictures, since loading a task decodes a sample of them.
    for rows in SPLIT_ROWS.values():
        for domain, path, _ in rows:
            write_png(roots[domain] / path, RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return roots


CONFIG = "t-2shot-seed1"


def record_files(folder: Path) -> None:
    """Record every shard's hash in the manifest, and the content hash, as a build does."""
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = []
    for split, record in manifest["configs"][CONFIG]["splits"].items():
        for shard in record["files"]:
            shard["sha256"] = file_sha256(folder / shard["path"])
            entries.append((shard["path"], shard["sha256"]))
    manifest["content_hash"] = content_hash(entries)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def classes_in_format(fmt: int) -> list[dict[str, str]]:
    """:data:`CLASSES` as a manifest of format ``fmt`` lists them (format 1 by wnid, format 2 by id)."""
    if fmt == 1:
        return CLASSES
    return [{"id": c["wnid"], "name": c["name"]} for c in CLASSES]


def write_dataset_folder(folder: Path, shards_per_split: int = 1, fmt: int = MANIFEST_FORMAT) -> None:
    """A built dataset folder by hand: manifest.json (of format ``fmt``) and parquet shards of one configuration."""
    splits = {}
    for split in SPLIT_ROWS:
        frame = split_frame(split)
        cuts = np.array_split(np.arange(len(frame)), shards_per_split)
        files = []
        for i, rows in enumerate(cuts):
            relative = f"data/{CONFIG}/{split}-{i:05d}-of-{shards_per_split:05d}.parquet"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            frame.iloc[rows].to_parquet(folder / relative, index=False)
            files.append({"path": relative, "rows": len(rows), "sha256": ""})
        splits[split] = {"rows": len(frame), "files": files}
    manifest = {
        "format": fmt,
        "protocol_version": 1,
        "content_hash": "",
        "configs": {
            CONFIG: {"task": "t", "target": "tgt", "sources": ["src1", "src2"], "classes": classes_in_format(fmt),
                     "shots": 2,
                     "splits": splits}
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    record_files(folder)


@pytest.mark.parametrize(("shards_per_split", "fmt"), [(1, MANIFEST_FORMAT), (2, MANIFEST_FORMAT), (1, 1)])
def test_load_task_reads_a_hand_written_dataset_folder(
    tmp_path: Path, roots: dict[str, Path], shards_per_split: int, fmt: int
) -> None:
    write_dataset_folder(tmp_path / "out", shards_per_split, fmt)
    task = load_task(tmp_path / "out", "t-2shot-seed1", roots)
    assert task.name == "t-2shot-seed1"
    assert task.class_ids == ("n01", "n02", "n03")
    assert task.class_names == ("missile", "missile", "ox")
    assert task.target == "tgt" and task.sources == ("src1", "src2")
    for split, by_domain in (("expert", task.expert), ("guide", task.guide)):
        assert set(by_domain) == {"src1", "src2"}
        for domain, images in by_domain.items():
            expected = [(roots[d] / p, label) for d, p, label in SPLIT_ROWS[split] if d == domain]
            assert list(zip(images.paths, images.labels)) == expected
            assert set(images.domains) == {domain}
    assert list(zip(task.test.paths, task.test.labels)) == [(roots["tgt"] / p, lab) for _, p, lab in SPLIT_ROWS["test"]]


def test_load_task_names_a_missing_parquet_file(tmp_path: Path, roots: dict[str, Path]) -> None:
    write_dataset_folder(tmp_path / "out")
    (tmp_path / "out/data/t-2shot-seed1/guide-00000-of-00001.parquet").unlink()
    with pytest.raises(ManifestError, match=r"data/t-2shot-seed1/guide-00000-of-00001\.parquet: missing"):
        load_task(tmp_path / "out", "t-2shot-seed1", roots)


def test_load_task_names_a_missing_manifest(tmp_path: Path, roots: dict[str, Path]) -> None:
    with pytest.raises(ManifestError, match="manifest.json"):
        load_task(tmp_path, "t-2shot-seed1", roots)


def test_load_task_lists_the_configurations_when_one_is_unknown(tmp_path: Path, roots: dict[str, Path]) -> None:
    write_dataset_folder(tmp_path / "out")
    with pytest.raises(ManifestError, match="t-2shot-seed1"):
        load_task(tmp_path / "out", "t-16shot-seed9", roots)


def test_load_task_names_a_shard_lacking_columns(tmp_path: Path, roots: dict[str, Path]) -> None:
    write_dataset_folder(tmp_path / "out")
    shard = tmp_path / "out/data/t-2shot-seed1/test-00000-of-00001.parquet"
    split_frame("test").drop(columns=["label"]).to_parquet(shard, index=False)
    record_files(tmp_path / "out")
    with pytest.raises(ManifestError, match=r"test-00000-of-00001\.parquet.*label"):
        load_task(tmp_path / "out", "t-2shot-seed1", roots)


def test_a_shard_swapped_right_after_its_hash_was_taken_is_not_what_loads(
    tmp_path: Path, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset_folder(tmp_path / "out")
    shard = tmp_path / f"out/data/{CONFIG}/test-00000-of-00001.parquet"
    recorded = file_sha256(shard)
    real_sha256 = hashlib.sha256
    swapped = []

    class SwapOnceHashed:
        """hashlib.sha256, except that the moment the shard's hash is taken another valid shard (every row
        relabelled 0) replaces the file, as a concurrent writer could."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            self._digest = real_sha256(*args, **kwargs)

        def update(self, data: bytes) -> None:
            self._digest.update(data)

        def hexdigest(self) -> str:
            value = self._digest.hexdigest()
            if value == recorded and not swapped:
                swapped.append(True)
                split_frame("test").assign(label=0).to_parquet(shard, index=False)
            return value

    monkeypatch.setattr(hashlib, "sha256", SwapOnceHashed)
    task = load_task(tmp_path / "out", CONFIG, roots)
    assert swapped and file_sha256(shard) != recorded  # the file did change after its hash was taken
    assert list(task.test.labels) == [label for _, _, label in SPLIT_ROWS["test"]]


def frames() -> dict[str, pd.DataFrame]:
    return {split: split_frame(split) for split in SPLIT_ROWS}


def make_task(splits: dict[str, pd.DataFrame], roots: dict[str, Path]) -> None:
    task_data_from_frames("t", splits, roots, ["n01", "n02", "n03"], ["a", "b", "c"], "tgt", ["src1", "src2"])


def test_a_source_image_in_the_test_split_is_refused(roots: dict[str, Path]) -> None:
    splits = frames()
    splits["test"] = pd.concat([splits["test"], split_frame("expert").assign(pool="test")], ignore_index=True)
    with pytest.raises(ManifestError, match="split test holds images of src1, src2"):
        make_task(splits, roots)


def test_a_label_outside_the_class_list_is_refused(roots: dict[str, Path]) -> None:
    splits = frames()
    splits["guide"].loc[0, "label"] = 3
    with pytest.raises(ManifestError, match="labels \\[3\\] outside 0..2"):
        make_task(splits, roots)


def test_rows_of_another_pool_are_refused(roots: dict[str, Path]) -> None:
    splits = frames()
    splits["expert"].loc[1, "pool"] = "guide"
    with pytest.raises(ManifestError, match="split expert holds rows of pool"):
        make_task(splits, roots)


def test_a_source_without_expert_images_is_refused(roots: dict[str, Path]) -> None:
    splits = frames()
    splits["expert"] = splits["expert"].loc[splits["expert"]["domain"] == "src1"]
    with pytest.raises(ManifestError, match="no images of the source.*src2"):
        make_task(splits, roots)
