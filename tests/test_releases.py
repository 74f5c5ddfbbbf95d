"""Release readers and discovery: every official layout, read the same whatever the listing order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from imagenet_dg.domains import DOMAINS
from imagenet_dg.errors import ReleaseNotFoundError
from imagenet_dg.layouts import RELEASE_LAYOUTS, discover_releases, scan_domain, scan_releases
from imagenet_dg.taxonomy import load_taxonomy, val_labels

TAXONOMY = load_taxonomy()
TENCH, GOLDFISH, STINGRAY = "n01440764", "n01443537", "n01498041"  # class indices 0, 1, 6
A_ONLY = "n01558993"  # American robin: ImageNet-A, not ImageNet-R
R_ONLY = GOLDFISH
BOTH = STINGRAY


def touch(root: Path, relative_paths: list[str]) -> Path:
    """Create empty files (the readers never open them) and return ``root``."""
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def table_of(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """The table a reader must return for these (path, wnid) pairs, computed independently."""
    pairs = sorted(pairs)
    return pd.DataFrame({"path": [p for p, _ in pairs], "class_id": [w for _, w in pairs]})


def assert_table(scan_table: pd.DataFrame, pairs: list[tuple[str, str]]) -> None:
    expected = table_of(pairs)
    assert list(scan_table.columns) == ["path", "class_id"]
    assert isinstance(scan_table.index, pd.RangeIndex) and scan_table.index.start == 0
    assert scan_table["path"].tolist() == expected["path"].tolist()
    assert scan_table["class_id"].tolist() == expected["class_id"].tolist()


# --- ILSVRC-2012 train -----------------------------------------------------------------------------------


def test_train_folders_give_one_row_per_image_labelled_by_folder(tmp_path):
    files = [f"{w}/{w}_{n}.JPEG" for w in (TENCH, GOLDFISH, STINGRAY) for n in (9, 10, 1234)]
    touch(tmp_path / "train", files)

    scan = scan_domain("imagenet", tmp_path / "train")

    assert scan.domain == "imagenet"
    assert scan.layout == "imagenet-train"
    assert scan.root == tmp_path / "train"
    assert_table(scan.table, [(f, f.split("/")[0]) for f in files])


def test_only_image_files_count_whatever_the_case_of_their_extension(tmp_path):
    images = [f"{TENCH}/a.JPEG", f"{TENCH}/b.jpeg", f"{TENCH}/c.JPG", f"{TENCH}/d.jpg", f"{TENCH}/e.PNG"]
    others = [f"{TENCH}/notes.txt", f"{TENCH}/.hidden.JPEG", f"{TENCH}/._a.JPEG", f"{TENCH}/f.gif", "README.txt"]
    touch(tmp_path, images + others)
    (tmp_path / ".cache").mkdir()

    scan = scan_domain("imagenet", tmp_path)

    assert_table(scan.table, [(f, TENCH) for f in images])


def test_table_is_sorted_in_plain_string_order_not_numeric_order(tmp_path):
    files = [f"{TENCH}/{TENCH}_{n}.JPEG" for n in (2, 10, 100, 9)]
    touch(tmp_path, files)

    paths = scan_domain("imagenet", tmp_path).table["path"].tolist()

    assert paths == [f"{TENCH}/{TENCH}_{n}.JPEG" for n in (10, 100, 2, 9)]


def test_result_does_not_depend_on_the_order_files_were_created(tmp_path):
    files = [f"{w}/{w}_{n}.JPEG" for w in (STINGRAY, TENCH, GOLDFISH) for n in range(30)]
    first = touch(tmp_path / "one" / "train", files)
    second = touch(tmp_path / "two" / "train", list(reversed(files)))

    table_1 = scan_domain("imagenet", first).table
    table_2 = scan_domain("imagenet", second).table

    pd.testing.assert_frame_equal(table_1, table_2)
    assert table_1["path"].tolist() == sorted(files)


def test_parent_folder_and_release_folder_give_identical_scans(tmp_path):
    touch(tmp_path / "ILSVRC2012" / "train", [f"{TENCH}/{TENCH}_1.JPEG", f"{GOLDFISH}/{GOLDFISH}_2.JPEG"])

    from_parent = scan_domain("imagenet", tmp_path / "ILSVRC2012")
    from_folder = scan_domain("imagenet", tmp_path / "ILSVRC2012" / "train")

    assert from_parent.root == from_folder.root == tmp_path / "ILSVRC2012" / "train"
    pd.testing.assert_frame_equal(from_parent.table, from_folder.table)


def test_root_is_absolute_even_for_a_relative_path(tmp_path, monkeypatch):
    touch(tmp_path / "train", [f"{TENCH}/{TENCH}_1.JPEG"])
    monkeypatch.chdir(tmp_path)

    scan = scan_domain("imagenet", "train")

    assert scan.root.is_absolute()
    assert scan.root == tmp_path / "train"


def test_unknown_class_folder_is_an_error_naming_it(tmp_path):
    touch(tmp_path / "train", [f"{TENCH}/{TENCH}_1.JPEG", "n99999999/x.JPEG", "extras/y.JPEG"])

    with pytest.raises(ReleaseNotFoundError) as error:
        scan_domain("imagenet", tmp_path / "train")

    message = str(error.value)
    assert "n99999999" in message and "extras" in message
    assert str(tmp_path / "train") in message
    assert "wnids" in message


def test_loose_images_beside_class_folders_are_an_error_naming_them(tmp_path):
    touch(tmp_path / "train", [f"{TENCH}/{TENCH}_1.JPEG", "stray.JPEG"])

    with pytest.raises(ReleaseNotFoundError, match="stray.JPEG"):
        scan_domain("imagenet", tmp_path / "train")


def test_class_folders_without_any_image_are_an_error(tmp_path):
    (tmp_path / "train" / TENCH).mkdir(parents=True)
    touch(tmp_path / "train", [f"{GOLDFISH}/readme.txt"])

    with pytest.raises(ReleaseNotFoundError, match="no image files"):
        scan_domain("imagenet", tmp_path / "train")


# --- ILSVRC-2012 val -------------------------------------------------------------------------------------


def test_flat_val_is_labelled_from_the_devkit_table(tmp_path):
    # Facts of the ILSVRC-2012 devkit: the first and the last validation images.
    known = {"ILSVRC2012_val_00000001.JPEG": "n01751748", "ILSVRC2012_val_00050000.JPEG": "n02437616"}
    others = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (2, 3, 12345, 49999)]
    touch(tmp_path / "val", [*known, *others, "LOC_val_solution.csv"])

    scan = scan_domain("imagenet-val", tmp_path / "val")

    assert scan.layout == "imagenet-val-flat"
    assert scan.root == tmp_path / "val"
    labels = val_labels()
    assert_table(scan.table, [*known.items(), *((name, labels[name]) for name in others)])


def test_flat_val_file_missing_from_the_label_table_is_an_error_naming_it(tmp_path):
    touch(tmp_path / "val", ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00099999.JPEG"])

    with pytest.raises(ReleaseNotFoundError, match="ILSVRC2012_val_00099999.JPEG"):
        scan_domain("imagenet-val", tmp_path / "val")


def test_val_sorted_into_wnid_folders_is_read_by_folder(tmp_path):
    labels = val_labels()
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3, 4)]
    files = [f"{labels[n]}/{n}" for n in names]
    touch(tmp_path / "val", files)

    scan = scan_domain("imagenet-val", tmp_path)

    assert scan.layout == "imagenet-val-folders"
    assert scan.root == tmp_path / "val"
    assert_table(scan.table, [(f, f.split("/")[0]) for f in files])


def test_val_image_in_the_wrong_folder_is_an_error_naming_it(tmp_path):
    name = "ILSVRC2012_val_00000001.JPEG"  # devkit label n01751748, not tench
    touch(tmp_path / "val", [f"{TENCH}/{name}"])

    with pytest.raises(ReleaseNotFoundError, match=name):
        scan_domain("imagenet-val", tmp_path / "val")


def test_val_mixing_flat_files_and_folders_is_an_error(tmp_path):
    labels = val_labels()
    name = "ILSVRC2012_val_00000002.JPEG"
    touch(tmp_path / "val", ["ILSVRC2012_val_00000001.JPEG", f"{labels[name]}/{name}"])

    with pytest.raises(ReleaseNotFoundError, match=labels[name]):
        scan_domain("imagenet-val", tmp_path / "val")


# --- ImageNetV2 ------------------------------------------------------------------------------------------


def test_imagenetv2_integer_folders_are_class_indices_by_value_not_string_order(tmp_path):
    folders = ["5", "35", "100", "639"]
    files = [f"{k}/{k}{h}.jpeg" for k in folders for h in ("aa", "bb")]
    release = touch(tmp_path / "imagenetv2-matched-frequency-format-val", files)

    scan = scan_domain("imagenetv2", release)

    assert scan.layout == "imagenetv2-index"
    got = dict(zip(scan.table["path"], scan.table["class_id"]))
    for path in files:
        assert got[path] == TAXONOMY.wnids[int(path.split("/")[0])]
    # Facts of the sorted wnid list: electric ray, mud turtle, black swan, one-piece bathing suit.
    assert got["5/5aa.jpeg"] == "n01496331"
    assert got["35/35aa.jpeg"] == "n01667114"
    assert got["100/100aa.jpeg"] == "n01860187"
    assert got["639/639aa.jpeg"] == "n03710721"
    # The trap: pairing string-sorted folder names with sorted wnids would mislabel.
    string_order = dict(zip(sorted(folders), sorted(TAXONOMY.wnids[int(k)] for k in folders)))
    assert any(string_order[k] != TAXONOMY.wnids[int(k)] for k in folders)


@pytest.mark.parametrize("bad", ["1000", "007", "-1", "x12"])
def test_imagenetv2_folder_that_is_not_a_class_index_is_an_error_naming_it(tmp_path, bad):
    release = touch(tmp_path / "v2", ["3/a.jpeg", f"{bad}/b.jpeg"])

    with pytest.raises(ReleaseNotFoundError, match=f"'{bad}'"):
        scan_domain("imagenetv2", release)


def test_imagenetv2_with_wnid_folders_is_read_by_folder(tmp_path):
    files = [f"{TENCH}/abc.jpeg", f"{STINGRAY}/def.jpeg"]
    release = touch(tmp_path / "imagenetv2-matched-frequency-format-val", files)

    scan = scan_domain("imagenetv2", tmp_path)

    assert scan.layout == "imagenetv2-wnid"
    assert scan.root == release
    assert_table(scan.table, [(f, f.split("/")[0]) for f in files])


# --- ImageNet-A, ImageNet-R, ImageNet-Sketch -------------------------------------------------------------


def test_imagenet_a_file_names_with_spaces_and_readme(tmp_path):
    files = [f"{A_ONLY}/0.000116_digital clock _ digital clock_0.865662.jpg", f"{BOTH}/0.1_jay _ stingray_0.2.jpg"]
    touch(tmp_path / "imagenet-a", [*files, "README.txt"])

    scan = scan_domain("imagenet-a", tmp_path)

    assert scan.layout == "imagenet-a"
    assert scan.root == tmp_path / "imagenet-a"
    assert_table(scan.table, [(f, f.split("/")[0]) for f in files])


def test_imagenet_a_rejects_a_class_outside_its_200(tmp_path):
    touch(tmp_path / "imagenet-a", [f"{A_ONLY}/x.jpg", f"{R_ONLY}/y.jpg"])

    with pytest.raises(ReleaseNotFoundError, match=R_ONLY):
        scan_domain("imagenet-a", tmp_path / "imagenet-a")


def test_imagenet_r_renditions(tmp_path):
    files = [f"{R_ONLY}/art_0.jpg", f"{R_ONLY}/cartoon_1.jpg", f"{BOTH}/sketch_12.jpg"]
    touch(tmp_path / "imagenet-r", [*files, "README.txt"])

    scan = scan_domain("imagenet-r", tmp_path / "imagenet-r")

    assert scan.layout == "imagenet-r"
    assert_table(scan.table, [(f, f.split("/")[0]) for f in files])


def test_imagenet_r_rejects_a_class_outside_its_200(tmp_path):
    touch(tmp_path / "imagenet-r", [f"{R_ONLY}/art_0.jpg", f"{A_ONLY}/art_1.jpg"])

    with pytest.raises(ReleaseNotFoundError, match=A_ONLY):
        scan_domain("imagenet-r", tmp_path / "imagenet-r")


@pytest.mark.parametrize("folder", ["sketch", "imagenet-sketch", "ImageNet-Sketch"])
def test_imagenet_sketch_under_each_of_its_folder_names(tmp_path, folder):
    files = [f"{TENCH}/sketch_{n}.JPEG" for n in range(3)] + [f"{GOLDFISH}/sketch_{n}.JPEG" for n in range(4)]
    touch(tmp_path / folder, files)

    scan = scan_domain("imagenet-sketch", tmp_path)

    assert scan.layout == "imagenet-sketch"
    assert scan.root == tmp_path / folder
    assert_table(scan.table, [(f, f.split("/")[0]) for f in files])
    assert discover_releases(tmp_path) == {"imagenet-sketch": tmp_path / folder}


# --- The combined tree of the reference code -------------------------------------------------------------

COMBINED = {
    "imagenet-a": ("a", [A_ONLY, BOTH]),
    "imagenet": ("i/train", [TENCH, GOLDFISH]),
    "imagenet-val": ("i/val", [TENCH, STINGRAY]),
    "imagenet-r": ("r", [R_ONLY, BOTH]),
    "imagenet-sketch": ("s", [TENCH, A_ONLY]),
    "imagenetv2": ("v2", [GOLDFISH, STINGRAY]),
}


def make_combined(parent: Path) -> Path:
    tree = parent / "ImageNet"
    for sub, wnids in COMBINED.values():
        touch(tree / sub, [f"{w}/img_{n}.jpg" for w in wnids for n in range(2)])
        (tree / sub / "classnames.txt").write_text("".join(f"{w} {TAXONOMY.names[w]}\n" for w in wnids))
    return tree


@pytest.mark.parametrize("domain", list(COMBINED))
def test_combined_tree_is_read_from_its_top_folder(tmp_path, domain):
    tree = make_combined(tmp_path)
    sub, wnids = COMBINED[domain]

    scan = scan_domain(domain, tree)

    assert scan.root == tree / sub
    assert scan.layout.startswith("combined-")
    assert RELEASE_LAYOUTS[scan.layout].domain == domain
    assert_table(scan.table, [(f"{w}/img_{n}.jpg", w) for w in wnids for n in range(2)])


def test_combined_tree_from_its_parent_and_from_its_sub_folder_agree(tmp_path):
    tree = make_combined(tmp_path)

    scans = [scan_domain("imagenet", p) for p in (tmp_path, tree, tree / "i", tree / "i" / "train")]

    assert {s.root for s in scans} == {tree / "i" / "train"}
    for scan in scans[1:]:
        pd.testing.assert_frame_equal(scan.table, scans[0].table)


def test_discover_finds_the_combined_tree(tmp_path):
    tree = make_combined(tmp_path / "data")

    found = discover_releases(tmp_path)

    assert found == {domain: tree / sub for domain, (sub, _) in COMBINED.items()}


# --- Missing releases, discovery, scanning all domains ---------------------------------------------------


def test_missing_release_error_names_the_place_the_domain_and_what_was_expected(tmp_path):
    touch(tmp_path, ["holiday.jpg", "notes/todo.txt"])

    with pytest.raises(ReleaseNotFoundError) as error:
        scan_domain("imagenet-r", tmp_path)

    message = str(error.value)
    assert str(tmp_path) in message
    assert "imagenet-r" in message
    for layout in RELEASE_LAYOUTS.values():
        if layout.domain == "imagenet-r":
            assert layout.expected in message
    assert "holiday.jpg" in message and "notes/" in message


def test_nonexistent_path_is_reported_as_such(tmp_path):
    with pytest.raises(ReleaseNotFoundError, match="does not exist"):
        scan_domain("imagenet", tmp_path / "nowhere")


def test_discover_looks_in_the_root_and_in_folders_one_and_two_levels_below_it(tmp_path):
    touch(tmp_path / "ILSVRC2012" / "train", [f"{TENCH}/{TENCH}_1.JPEG"])
    touch(tmp_path / "ILSVRC2012" / "val", ["ILSVRC2012_val_00000001.JPEG"])
    touch(tmp_path / "imagenet-a", [f"{A_ONLY}/x.jpg"])
    touch(tmp_path / "more" / "variants" / "imagenet-r", [f"{R_ONLY}/art_0.jpg"])
    touch(tmp_path / "far" / "away" / "deep" / "sketch", [f"{TENCH}/sketch_0.JPEG"])  # "deep" is not searched

    found = discover_releases(tmp_path)

    assert found == {
        "imagenet": tmp_path / "ILSVRC2012" / "train",
        "imagenet-val": tmp_path / "ILSVRC2012" / "val",
        "imagenet-a": tmp_path / "imagenet-a",
        "imagenet-r": tmp_path / "more" / "variants" / "imagenet-r",
    }


def test_discover_skips_folders_with_an_official_name_but_another_content(tmp_path):
    touch(tmp_path / "PACS" / "train", ["dog/1.jpg", "cat/2.jpg"])
    touch(tmp_path / "imagenet" / "train", [f"{TENCH}/{TENCH}_1.JPEG"])

    assert discover_releases(tmp_path) == {"imagenet": tmp_path / "imagenet" / "train"}


def test_discover_prefers_the_shallowest_release(tmp_path):
    touch(tmp_path / "backup" / "train", [f"{TENCH}/{TENCH}_1.JPEG"])
    touch(tmp_path / "train", [f"{GOLDFISH}/{GOLDFISH}_1.JPEG"])

    assert discover_releases(tmp_path) == {"imagenet": tmp_path / "train"}


def test_discover_on_a_missing_root_is_an_error(tmp_path):
    with pytest.raises(ReleaseNotFoundError, match="nowhere"):
        discover_releases(tmp_path / "nowhere")


def test_scan_releases_scans_every_domain_found_under_the_root(tmp_path):
    tree = make_combined(tmp_path)

    scans = scan_releases({}, root=tmp_path)

    assert list(scans) == list(DOMAINS)
    for domain, (sub, wnids) in COMBINED.items():
        assert scans[domain].root == tree / sub
        assert sorted(set(scans[domain].table["class_id"])) == sorted(wnids)


def test_scan_releases_explicit_path_wins_over_discovery(tmp_path):
    touch(tmp_path / "root" / "train", [f"{TENCH}/{TENCH}_1.JPEG"])
    elsewhere = touch(tmp_path / "elsewhere" / "train", [f"{GOLDFISH}/{GOLDFISH}_1.JPEG"])

    scans = scan_releases({"imagenet": elsewhere}, root=tmp_path / "root", domains=["imagenet"])

    assert list(scans) == ["imagenet"]
    assert scans["imagenet"].root == elsewhere
    assert scans["imagenet"].table["class_id"].tolist() == [GOLDFISH]


def test_scan_releases_reports_every_missing_domain_at_once(tmp_path):
    touch(tmp_path / "train", [f"{TENCH}/{TENCH}_1.JPEG"])
    broken_a = touch(tmp_path / "other", ["photo.jpg"])

    with pytest.raises(ReleaseNotFoundError) as error:
        scan_releases({"imagenet-a": broken_a}, root=tmp_path)

    message = str(error.value)
    for domain in ("imagenet-val", "imagenet-r", "imagenet-sketch", "imagenetv2"):
        assert f"domain {domain!r}" in message
        for layout in RELEASE_LAYOUTS.values():
            if layout.domain == domain:
                assert layout.expected in message
    assert "domain 'imagenet-a'" in message and str(broken_a) in message
    assert "domain 'imagenet'" not in message
    assert str(tmp_path) in message


def test_scan_releases_without_path_or_root_says_so(tmp_path):
    with pytest.raises(ReleaseNotFoundError, match="no path was given"):
        scan_releases({"imagenet": None}, domains=["imagenet"])


def test_every_layout_belongs_to_a_known_domain_and_every_domain_has_a_layout():
    assert {layout.domain for layout in RELEASE_LAYOUTS.values()} == set(DOMAINS)
    for layout_id, layout in RELEASE_LAYOUTS.items():
        assert layout.id == layout_id
        assert layout.expected and layout.folder_names
