"""Miniature releases: the official layouts and defects, deterministic bytes, domains that look different."""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from imagenet_dg.domains import DOMAINS
from imagenet_dg.errors import ImageNetDGError, OutputExistsError
from imagenet_dg.health import NEAR_BLACK_LUMINANCE
from imagenet_dg.layouts import discover_releases, scan_domain
from imagenet_dg.mini import MiniReleases, make_mini_releases
from imagenet_dg.taxonomy import imagenetv2_labels, load_taxonomy, val_labels

TAXONOMY = load_taxonomy()
OFFICIAL_FOLDERS = {
    "imagenet": "train",
    "imagenet-val": "val",
    "imagenet-a": "imagenet-a",
    "imagenet-r": "imagenet-r",
    "imagenet-sketch": "sketch",
    "imagenetv2": "imagenetv2-matched-frequency-format-val",
}
OFFICIAL_LAYOUTS = {
    "imagenet": "imagenet-train",
    "imagenet-val": "imagenet-val-flat",
    "imagenet-a": "imagenet-a",
    "imagenet-r": "imagenet-r",
    "imagenet-sketch": "imagenet-sketch",
    "imagenetv2": "imagenetv2-index",
}
PHOTO_DOMAINS = ("imagenet", "imagenet-val", "imagenetv2")
SMALL = {domain: 1 for domain in DOMAINS}


@pytest.fixture(scope="module")
def mini_set(mini_releases) -> MiniReleases:
    """The session's miniature set (default settings); tests must not modify it."""
    return mini_releases


def files_under(root: Path) -> dict[str, bytes]:
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def pixels(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken-EXIF file warns, as real ones do
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def images_of(mini: MiniReleases, domain: str) -> list[np.ndarray]:
    scan = scan_domain(domain, mini.paths[domain])
    return [pixels(scan.root / p) for p in scan.table["path"]]


def saturation(image: np.ndarray) -> float:
    high, low = image.max(axis=2), image.min(axis=2)
    return float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1e-9), 0.0)))


# --- Layouts ---------------------------------------------------------------------------------------------


def test_every_domain_is_written_under_its_official_folder_name(mini_set):
    assert mini_set.paths == {d: mini_set.root / folder for d, folder in OFFICIAL_FOLDERS.items()}
    for path in mini_set.paths.values():
        assert path.is_dir()


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_scan_recognises_the_official_layout_and_counts_match(mini_set, domain):
    scan = scan_domain(domain, mini_set.root)

    assert scan.layout == OFFICIAL_LAYOUTS[domain]
    assert scan.root == mini_set.paths[domain]
    assert dict(Counter(scan.table["class_id"])) == mini_set.expected_counts[domain]
    # Independently of the reader: the image files on disk.
    on_disk = [p for p in files_under(scan.root) if p.lower().endswith((".jpeg", ".jpg", ".png"))]
    assert len(on_disk) == sum(mini_set.expected_counts[domain].values())


def test_discovery_finds_all_six_releases(mini_set):
    assert discover_releases(mini_set.root) == mini_set.paths


def test_default_counts_per_class(mini_set):
    defaults = {"imagenet": 48, "imagenet-val": 20, "imagenet-a": 15, "imagenet-r": 60, "imagenetv2": 10}
    for domain, n in defaults.items():
        assert set(mini_set.expected_counts[domain].values()) == {n}
    sketch = sorted(mini_set.expected_counts["imagenet-sketch"].values())
    assert sketch == [40] * (len(mini_set.wnids) - 1) + [41]


def test_source_halves_hold_more_than_sixteen_images_except_imagenetv2_which_holds_its_real_ten(mini_set):
    for domain in ("imagenet", "imagenet-sketch"):
        assert min(mini_set.expected_counts[domain].values()) // 2 > 16, domain
    assert set(mini_set.expected_counts["imagenetv2"].values()) == {10}


def test_targets_are_sized_per_class_like_their_releases_relative_to_each_other(mini_set):
    def per_class(domain: str) -> float:
        counts = mini_set.expected_counts[domain].values()
        return sum(counts) / len(counts)

    real = {"imagenet-a": 7500 / 200, "imagenet-val": 50_000 / 1000, "imagenet-r": 30_000 / 200}
    for domain in ("imagenet-a", "imagenet-r"):
        ratio = per_class(domain) / per_class("imagenet-val")
        assert ratio == pytest.approx(real[domain] / real["imagenet-val"], rel=0.05), domain


def test_classes_are_real_wnids_covering_a_and_r_like_the_real_subsets(mini_set):
    a, r = set(mini_set.a_wnids), set(mini_set.r_wnids)
    assert list(mini_set.wnids) == sorted(mini_set.wnids) and len(mini_set.wnids) >= 10
    assert a == set(mini_set.wnids) & set(TAXONOMY.imagenet_a)
    assert r == set(mini_set.wnids) & set(TAXONOMY.imagenet_r)
    assert a & r and a - r and r - a and set(mini_set.wnids) - a - r
    assert set(mini_set.expected_counts["imagenet-a"]) == a
    assert set(mini_set.expected_counts["imagenet-r"]) == r
    for domain in ("imagenet", "imagenet-val", "imagenet-sketch", "imagenetv2"):
        assert set(mini_set.expected_counts[domain]) == set(mini_set.wnids)


def test_imagenetv2_folder_names_sort_differently_as_strings_than_as_integers(mini_set):
    folders = [p.name for p in mini_set.paths["imagenetv2"].iterdir()]

    assert {len(name) for name in folders} == {1, 2, 3}
    assert sorted(folders) != sorted(folders, key=int)
    # The files inside each folder are real V2 images of the class the integer names.
    labels = imagenetv2_labels()
    for folder in folders:
        for file in (mini_set.paths["imagenetv2"] / folder).iterdir():
            assert file.suffix == ".jpeg"
            assert labels[file.stem] == TAXONOMY.wnids[int(folder)]


def test_flat_val_file_names_are_real_ones_of_the_chosen_classes(mini_set):
    names = [p.name for p in mini_set.paths["imagenet-val"].iterdir()]
    labels = val_labels()

    assert all(re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", n) for n in names)
    assert Counter(labels[n] for n in names) == Counter(mini_set.expected_counts["imagenet-val"])


def test_train_file_names_follow_the_wnid_number_pattern(mini_set):
    for folder in mini_set.paths["imagenet"].iterdir():
        for file in folder.iterdir():
            assert re.fullmatch(rf"{folder.name}_\d+\.JPEG", file.name)


def test_imagenet_a_names_contain_spaces_and_a_readme_is_present(mini_set):
    release = mini_set.paths["imagenet-a"]
    names = [f.name for folder in release.iterdir() if folder.is_dir() for f in folder.iterdir()]

    assert (release / "README.txt").is_file()
    assert names and all(" " in n and n.endswith(".jpg") for n in names)


def test_imagenet_r_names_are_renditions_and_a_readme_is_present(mini_set):
    release = mini_set.paths["imagenet-r"]
    names = [f.name for folder in release.iterdir() if folder.is_dir() for f in folder.iterdir()]

    assert (release / "README.txt").is_file()
    assert all(re.fullmatch(r"[a-z]+_\d+\.jpg", n) for n in names)
    assert len({n.split("_")[0] for n in names}) >= 3


def test_sketch_names_and_one_class_with_an_extra_image(mini_set):
    release = mini_set.paths["imagenet-sketch"]
    per_class = {folder.name: sorted(f.name for f in folder.iterdir()) for folder in release.iterdir()}

    assert sorted(len(files) for files in per_class.values())[-2:] == [40, 41]
    for files in per_class.values():
        assert files == sorted(f"sketch_{i}.JPEG" for i in range(len(files)))


# --- Defects of the real data ----------------------------------------------------------------------------


def test_train_holds_a_cmyk_jpeg(mini_set):
    path = mini_set.quirks["cmyk"]
    assert path.parent.parent == mini_set.paths["imagenet"]
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.mode == "CMYK"


def test_train_holds_a_png_file_named_jpeg(mini_set):
    path = mini_set.quirks["png-as-jpeg"]
    assert path.parent.parent == mini_set.paths["imagenet"]
    assert path.suffix == ".JPEG"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_holds_a_jpeg_with_broken_exif(mini_set):
    path = mini_set.quirks["broken-exif"]
    assert path.parent.parent == mini_set.paths["imagenet"]
    assert b"Exif\x00\x00" in path.read_bytes()[:64]
    with pytest.warns(UserWarning, match="(?i)corrupt exif"):
        with Image.open(path) as image:
            image.getexif()
            image.load()  # the pixels are fine
            assert image.size == (64, 64)


def test_sketch_holds_a_near_black_image(mini_set):
    path = mini_set.quirks["near-black"]
    assert path.parent.parent == mini_set.paths["imagenet-sketch"]
    assert pixels(path).mean() < NEAR_BLACK_LUMINANCE / 255
    others = [p for p in path.parent.iterdir() if p != path]
    assert all(pixels(p).mean() > 0.7 for p in others)


# --- The domains look different, the classes stay recognisable -------------------------------------------


def test_sketches_have_no_colour_and_photos_do(mini_set):
    sketch = [saturation(image) for image in images_of(mini_set, "imagenet-sketch")]
    photo = [saturation(image) for d in PHOTO_DOMAINS for image in images_of(mini_set, d)]

    assert max(sketch) < 0.05
    assert np.mean(photo) > 0.2


def test_imagenet_a_is_much_noisier_than_the_photos(mini_set):
    def roughness(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image, axis=1)).mean())

    adversarial = [roughness(image) for image in images_of(mini_set, "imagenet-a")]
    photo = [roughness(image) for d in PHOTO_DOMAINS for image in images_of(mini_set, d)]

    assert min(adversarial) > 2 * np.median(photo)


def test_imagenet_r_renditions_are_flatter_than_the_photos(mini_set):
    def flat_share(image: np.ndarray) -> float:
        return float((np.abs(np.diff(image, axis=1)).max(axis=2) <= 4 / 255).mean())

    renditions = [flat_share(image) for image in images_of(mini_set, "imagenet-r")]
    photo = [flat_share(image) for d in PHOTO_DOMAINS for image in images_of(mini_set, d)]

    assert np.mean(renditions) > np.mean(photo) + 0.15


def edge_orientations(image: np.ndarray) -> np.ndarray:
    """Histogram of edge directions weighted by strength, folded so that a mirrored figure gives the same:
    a description of structure that knows nothing of colour or position."""
    with Image.fromarray(np.uint8(image * 255)) as rgb:
        grey = np.asarray(rgb.convert("L").filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float64) / 255.0
    gy, gx = np.gradient(grey)
    angle = np.arctan2(gy, gx) % np.pi
    folded = np.minimum(angle, np.pi - angle)
    bins = np.minimum((folded / (np.pi / 2) * 8).astype(int), 7)
    histogram = np.bincount(bins.ravel(), weights=np.hypot(gx, gy).ravel(), minlength=8)
    return histogram / max(histogram.sum(), 1e-9)


def test_the_class_structure_learnt_from_train_photos_is_recognised_in_every_other_domain(mini_set):
    def features(domain: str) -> tuple[np.ndarray, list[str]]:
        return np.array([edge_orientations(i) for i in images_of(mini_set, domain)]), scan_domain(
            domain, mini_set.paths[domain]).table["class_id"].tolist()

    train, train_wnids = features("imagenet")
    centroids = {w: train[[i for i, t in enumerate(train_wnids) if t == w]].mean(axis=0) for w in mini_set.wnids}
    for domain in ("imagenet-val", "imagenetv2", "imagenet-sketch", "imagenet-a", "imagenet-r"):
        test, wnids = features(domain)
        classes = sorted(set(wnids))
        predicted = [min(classes, key=lambda w: np.abs(centroids[w] - f).sum()) for f in test]
        accuracy = np.mean([p == w for p, w in zip(predicted, wnids)])
        assert accuracy > 1.8 / len(classes), domain  # chance is 1 / len(classes)


def test_images_have_the_requested_size(tmp_path):
    mini = make_mini_releases(tmp_path / "set", image_size=32, images_per_class=SMALL)

    for domain in DOMAINS:
        scan = scan_domain(domain, mini.paths[domain])
        for path in scan.table["path"]:
            assert pixels(scan.root / path).shape == (32, 32, 3)


# --- Determinism and writing -----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(mini_set, tmp_path):
    again = make_mini_releases(tmp_path / "again")

    assert files_under(again.root) == files_under(mini_set.root)


def test_different_seed_gives_different_images(tmp_path):
    first = files_under(make_mini_releases(tmp_path / "s0", seed=0, images_per_class=SMALL).root)
    second = files_under(make_mini_releases(tmp_path / "s1", seed=1, images_per_class=SMALL).root)

    shared_val = [p for p in first if p.startswith("val/") and p in second]
    assert shared_val  # val file names come from the label table, not from the seed
    assert all(first[p] != second[p] for p in shared_val)


def test_images_per_class_overrides_the_defaults(tmp_path):
    mini = make_mini_releases(tmp_path / "set", images_per_class={"imagenet": 3, "imagenetv2": 10, "imagenet-r": 1,
                                                                  "imagenet-sketch": 1})

    assert set(mini.expected_counts["imagenet"].values()) == {3}
    assert set(mini.expected_counts["imagenetv2"].values()) == {10}
    assert set(mini.expected_counts["imagenet-val"].values()) == {20}
    for domain in ("imagenet", "imagenetv2"):
        scan = scan_domain(domain, mini.paths[domain])
        assert dict(Counter(scan.table["class_id"])) == mini.expected_counts[domain]


@pytest.mark.parametrize("override", [{"imagenetv2": 11}, {"imagenet-val": 51}, {"imagenet": 0}, {"nope": 1}])
def test_impossible_counts_are_refused(tmp_path, override):
    with pytest.raises(ImageNetDGError):
        make_mini_releases(tmp_path / "set", images_per_class=override)
    assert not (tmp_path / "set").exists()


def test_writes_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()

    mini = make_mini_releases(tmp_path / "empty", images_per_class=SMALL)

    assert scan_domain("imagenet", mini.root).root == tmp_path / "empty" / "train"


def test_refuses_a_non_empty_folder_that_is_not_a_mini_set(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")

    with pytest.raises(OutputExistsError, match="precious|not empty"):
        make_mini_releases(tmp_path / "data", images_per_class=SMALL)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["precious.txt"]


def test_rerun_with_the_same_settings_changes_nothing(tmp_path):
    mini = make_mini_releases(tmp_path / "set", images_per_class=SMALL)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in mini.root.rglob("*") if p.is_file()}

    again = make_mini_releases(tmp_path / "set", images_per_class=SMALL)

    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in again.root.rglob("*") if p.is_file()}
    assert after == before
    assert again == mini


def test_rerun_with_the_same_settings_restores_a_damaged_file(tmp_path):
    mini = make_mini_releases(tmp_path / "set", images_per_class=SMALL)
    victim = mini.quirks["cmyk"]
    original = victim.read_bytes()
    victim.write_bytes(b"damaged")

    make_mini_releases(tmp_path / "set", images_per_class=SMALL)

    assert victim.read_bytes() == original


def test_rerun_with_other_settings_is_refused(tmp_path):
    make_mini_releases(tmp_path / "set", images_per_class=SMALL)
    before = files_under(tmp_path / "set")

    with pytest.raises(OutputExistsError, match="other settings"):
        make_mini_releases(tmp_path / "set", seed=1, images_per_class=SMALL)
    assert files_under(tmp_path / "set") == before


def test_rerun_refuses_a_set_with_foreign_files_added(tmp_path):
    mini = make_mini_releases(tmp_path / "set", images_per_class=SMALL)
    stray = mini.paths["imagenet"] / mini.wnids[0] / "stray.JPEG"
    stray.write_bytes(b"")

    with pytest.raises(OutputExistsError, match="stray.JPEG"):
        make_mini_releases(tmp_path / "set", images_per_class=SMALL)


def test_a_miniature_suite_kept_inside_the_set_is_not_a_foreign_file(tmp_path):
    # the harness writes the miniature PACS beside the releases (mini-releases/mini-pacs/PACS/...)
    from imagenet_dg.mini_suites import make_mini_suite

    mini = make_mini_releases(tmp_path / "set", images_per_class=SMALL)
    make_mini_suite("mini-pacs", tmp_path / "set" / "mini-pacs", images_per_class=1)
    assert make_mini_releases(tmp_path / "set", images_per_class=SMALL) == mini
    # a file beside the suite's folder, not written by its generator, is still foreign
    (tmp_path / "set" / "mini-pacs" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt"):
        make_mini_releases(tmp_path / "set", images_per_class=SMALL)


def test_the_set_folder_gets_the_mode_mkdir_would_give_under_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        make_mini_releases(tmp_path / "set", image_size=32, images_per_class=SMALL)
    finally:
        os.umask(previous)
    assert (tmp_path / "set").stat().st_mode & 0o777 == 0o750
