"""The suites' two split protocols, the suite builds and the tasks loaded from them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torchvision

from guidg.model_selection import validation_images
from imagenet_dg.build import BuildOptions, build
from imagenet_dg.errors import OutputExistsError
from imagenet_dg.layouts import SuiteScan, scan_suite, suite_roots
from imagenet_dg.loading import load_task
from imagenet_dg.manifests import read_manifest, verify_files
from imagenet_dg.mini_suites import make_mini_suite
from imagenet_dg.protocols import (
    fewshot_guide_size,
    fewshot_splits,
    fewshot_test_size,
    full_splits,
    imagefolder_order,
    partition_domain,
)
from imagenet_dg.suites import get_suite

IMAGES_PER_CLASS = 13  # 91 images per domain: 20% of it is not a whole number
ENV = {d: get_suite("mini-pacs").env_index(d) for d in get_suite("mini-pacs").domain_ids}


@pytest.fixture(scope="session")
def pacs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mini_suite("mini-pacs", tmp_path_factory.mktemp("suites"), images_per_class=IMAGES_PER_CLASS).root


@pytest.fixture(scope="session")
def pacs_scan(pacs_root: Path) -> SuiteScan:
    return scan_suite("mini-pacs", pacs_root)


def _domainbed_holdout(domain_folder: Path, trial_seed: int, env_index: int) -> set[str]:
    """What DomainBed holds out of one environment, written from its train.py and lib/misc.py."""
    env = torchvision.datasets.ImageFolder(str(domain_folder))
    seed = int(hashlib.md5(str((trial_seed, env_index)).encode("utf-8")).hexdigest(), 16) % (2**31)
    keys = list(range(len(env)))
    np.random.RandomState(seed).shuffle(keys)
    out = keys[: int(len(env) * 0.2)]
    return {Path(env.samples[i][0]).relative_to(domain_folder).as_posix() for i in out}


# --- full -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trial_seed", [0, 1, 2])
def test_full_holds_out_exactly_domainbeds_images(pacs_root: Path, pacs_scan: SuiteScan, trial_seed: int) -> None:
    suite = get_suite("mini-pacs")
    folder = pacs_scan.location.folder
    # DomainBed numbers environments by the sorted sub-folders of the dataset folder.
    environments = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    for target in suite.domain_ids:
        splits = full_splits(suite, pacs_scan.tables, target, trial_seed, ENV).splits
        for domain in suite.domain_ids:
            expected = _domainbed_holdout(folder / domain, trial_seed, environments.index(domain))
            assert len(expected) == int(IMAGES_PER_CLASS * 7 * 0.2) == 18
            if domain == target:
                test = set(splits["test"]["path"])
                assert not test & expected
                assert len(test) == IMAGES_PER_CLASS * 7 - 18
            else:
                rows = splits["validation"].loc[splits["validation"]["domain"] == domain]
                assert set(rows["path"]) == expected
                train = splits["train"].loc[splits["train"]["domain"] == domain]
                assert not set(train["path"]) & expected
                assert len(train) + len(rows) == IMAGES_PER_CLASS * 7


def test_full_splits_do_not_depend_on_the_order_of_the_table(pacs_scan: SuiteScan) -> None:
    suite = get_suite("mini-pacs")
    shuffled = {d: t.sample(frac=1.0, random_state=3).reset_index(drop=True) for d, t in pacs_scan.tables.items()}
    one = full_splits(suite, pacs_scan.tables, "photo", 0, ENV).splits
    two = full_splits(suite, shuffled, "photo", 0, ENV).splits
    for split in one:
        pd.testing.assert_frame_equal(one[split], two[split])


def test_imagefolder_order_sorts_by_class_then_folder_then_file() -> None:
    # os.walk visits .../a, .../a/sub, .../a/sub b, .../a/sub/deep: full folder paths in string order.
    paths = ["b/z.jpg", "a/sub/a.jpg", "a/y.jpg", "a-b/x.jpg", "a/sub b/c.jpg", "a/sub/deep/d.jpg"]
    table = pd.DataFrame({"path": paths, "class_id": [p.split("/")[0] for p in paths]})
    assert imagefolder_order(table)["path"].tolist() == [
        "a/y.jpg", "a/sub/a.jpg", "a/sub b/c.jpg", "a/sub/deep/d.jpg", "a-b/x.jpg", "b/z.jpg"
    ]


def test_full_labels_index_the_sorted_classes(pacs_scan: SuiteScan) -> None:
    splits = full_splits(get_suite("mini-pacs"), pacs_scan.tables, "sketch", 0, ENV).splits
    classes = get_suite("mini-pacs").classes
    for frame in splits.values():
        assert (frame["label"].map(lambda i: classes[i]) == frame["class_id"]).all()
        assert (frame["path"].str.split("/").str[0] == frame["class_id"]).all()


# --- fewshot ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "test", "guide"), [(1, 0, 0), (5, 1, 2), (13, 3, 5), (10, 2, 4), (12, 2, 5)])
def test_fewshot_parts_are_20_40_40_rounded_half_to_even(n: int, test: int, guide: int) -> None:
    assert (fewshot_test_size(n), fewshot_guide_size(n)) == (test, guide)


def test_fewshot_partition_is_stratified_disjoint_and_complete(pacs_scan: SuiteScan) -> None:
    table = pacs_scan.tables["cartoon"]
    parts = partition_domain(table, "cartoon")
    assert sorted(parts["path"]) == sorted(table["path"])
    for _, rows in parts.groupby("class_id"):
        counts = rows["pool"].value_counts().to_dict()
        assert counts == {"test": 3, "guide": 5, "expert": 5}


def test_fewshot_partition_ignores_listing_order_and_follows_the_seed(pacs_scan: SuiteScan) -> None:
    table = pacs_scan.tables["photo"]
    reordered = table.iloc[::-1].reset_index(drop=True)
    pd.testing.assert_frame_equal(partition_domain(table, "photo"), partition_domain(reordered, "photo"))
    assert not partition_domain(table, "photo").equals(partition_domain(table, "photo", partition_seed=1))


def test_fewshot_task_draws_from_the_sources_pools_and_scores_the_targets_test_part(pacs_scan: SuiteScan) -> None:
    suite = get_suite("mini-pacs")
    splits = fewshot_splits(suite, pacs_scan.tables, "sketch", 4, 1).splits
    parts = {d: partition_domain(pacs_scan.tables[d], d).set_index("path")["pool"] for d in suite.domain_ids}
    for pool in ("expert", "guide"):
        frame = splits[pool]
        assert set(frame["domain"]) == {"art_painting", "cartoon", "photo"}
        assert (frame.groupby(["domain", "class_id"]).size() == 4).all()
        assert all(parts[d][p] == pool for d, p in zip(frame["domain"], frame["path"]))
    test = splits["test"]
    assert set(test["domain"]) == {"sketch"}
    assert set(test["path"]) == set(parts["sketch"].index[parts["sketch"] == "test"])


def test_fewshot_samples_are_nested_across_shots_and_change_with_the_seed(pacs_scan: SuiteScan) -> None:
    suite = get_suite("mini-pacs")
    two = fewshot_splits(suite, pacs_scan.tables, "photo", 2, 1).splits["guide"]
    four = fewshot_splits(suite, pacs_scan.tables, "photo", 4, 1).splits["guide"]
    other = fewshot_splits(suite, pacs_scan.tables, "photo", 2, 2).splits["guide"]
    assert set(two["path"] + two["domain"]) < set(four["path"] + four["domain"])
    assert set(two["path"] + two["domain"]) != set(other["path"] + other["domain"])


# --- builds and loading -----------------------------------------------------------------------------------


def test_a_fewshot_build_records_suite_protocol_source_and_classes(pacs_scan: SuiteScan, tmp_path: Path) -> None:
    options = BuildOptions(shots=(2,), seeds=(1,), tasks=("sketch",))
    result = build(pacs_scan, tmp_path / "out", options)
    manifest = read_manifest(tmp_path / "out")
    assert result.written == ("sketch-2shot-seed1",)
    assert (manifest["suite"], manifest["protocol"], manifest["synthetic"]) == ("mini-pacs", "fewshot", True)
    assert manifest["source"] == {"kind": "folder", "folder": "PACS"}
    assert manifest["domains"]["photo"]["folder"] == "PACS/photo"
    config = manifest["configs"]["sketch-2shot-seed1"]
    assert config["classes"][0] == {"id": "dog", "name": "dog"}
    assert list(config["splits"]) == ["expert", "guide", "test"]
    assert verify_files(tmp_path / "out", manifest) == []
    assert "data/sketch-2shot-seed1/test-00000-of-00001.parquet" in (tmp_path / "out" / "README.md").read_text()


def test_a_rebuild_is_byte_identical_and_a_second_run_is_up_to_date(pacs_scan: SuiteScan, tmp_path: Path) -> None:
    options = BuildOptions(protocol="full", seeds=(0,), tasks=("photo",))
    build(pacs_scan, tmp_path / "one", options)
    build(pacs_scan, tmp_path / "two", options)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
    assert build(pacs_scan, tmp_path / "one", options).up_to_date


def test_a_full_task_trains_on_the_sources_80_and_selects_on_their_20(
    pacs_root: Path, pacs_scan: SuiteScan, tmp_path: Path
) -> None:
    build(pacs_scan, tmp_path / "out", BuildOptions(protocol="full", seeds=(1,), tasks=("cartoon",)))
    task = load_task(tmp_path / "out", "cartoon-full-trial1", suite_roots("mini-pacs", pacs_root))
    assert task.protocol == "full" and task.target == "cartoon"
    assert task.sources == ("art_painting", "photo", "sketch")
    folder = pacs_scan.location.folder
    for index, domain in enumerate(get_suite("pacs").domain_ids):
        if domain == "cartoon":
            continue
        assert task.expert[domain] == task.guide[domain]
        held_out = {p.relative_to(folder / domain).as_posix() for p in task.held_out[domain].paths}
        assert validation_images(task)[domain] == task.held_out[domain]
        assert held_out == _domainbed_holdout(folder / domain, 1, index)
        assert len(task.expert[domain]) == IMAGES_PER_CLASS * 7 - 18
    assert len(task.test) == IMAGES_PER_CLASS * 7 - 18
    assert all(p.is_file() for p in task.test.paths)


def test_a_fewshot_task_selects_on_the_guide_sample(pacs_root: Path, pacs_scan: SuiteScan, tmp_path: Path) -> None:
    build(pacs_scan, tmp_path / "out", BuildOptions(shots=(4,), seeds=(2,), tasks=("photo",)))
    task = load_task(tmp_path / "out", "photo-4shot-seed2", suite_roots("mini-pacs", pacs_root))
    assert task.protocol == "fewshot"
    assert task.class_ids == get_suite("pacs").classes
    assert task.class_names[0] == "dog"
    assert dict(task.held_out) == {}
    for domain in task.sources:
        assert validation_images(task)[domain] == task.guide[domain]
        assert not set(task.expert[domain].paths) & set(task.guide[domain].paths)
        assert len(task.expert[domain]) == len(task.guide[domain]) == 4 * 7
    assert len(task.test) == 3 * 7


def test_a_built_suite_loads_with_datasets_as_from_the_hub(pacs_scan: SuiteScan, tmp_path: Path) -> None:
    build(pacs_scan, tmp_path / "out", BuildOptions(protocol="full", seeds=(0,), tasks=("sketch",)))
    loaded = datasets.load_dataset(str(tmp_path / "out"), "sketch-full-trial0", cache_dir=str(tmp_path / "cache"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(loaded) == {"train", "validation", "test"}
    for split, data in loaded.items():
        assert len(data) == manifest["configs"]["sketch-full-trial0"]["splits"][split]["rows"]
    assert loaded["test"].features["label"].names == list(get_suite("pacs").classes)


def test_a_miniature_built_as_the_real_suite_is_still_recorded_synthetic(pacs_root: Path, tmp_path: Path) -> None:
    scan = scan_suite("pacs", pacs_root)
    result = build(scan, tmp_path / "out", BuildOptions(shots=(1,), seeds=(1,), tasks=("photo",)))
    assert result.manifest["suite"] == "pacs"
    assert result.manifest["synthetic"] is True


def test_an_interrupted_suite_build_publishes_nothing_and_resumes(pacs_scan: SuiteScan, tmp_path: Path) -> None:
    options = BuildOptions(shots=(1,), seeds=(1,), tasks=("photo", "sketch"))

    def stop_after_the_first(config: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(pacs_scan, tmp_path / "out", options, on_config=stop_after_the_first)
    assert not (tmp_path / "out").exists()
    result = build(pacs_scan, tmp_path / "out", options)
    assert result.resumed == ("photo-1shot-seed1",) and result.written == ("sketch-1shot-seed1",)
    fresh = build(pacs_scan, tmp_path / "fresh", options)
    assert fresh.manifest["content_hash"] == result.manifest["content_hash"]


def test_a_suite_build_whose_card_was_changed_is_not_taken_as_up_to_date(pacs_scan: SuiteScan, tmp_path: Path) -> None:
    options = BuildOptions(shots=(1, 16), seeds=(1,), tasks=("photo",))  # card order differs from sorted names
    build(pacs_scan, tmp_path / "out", options)
    readme = tmp_path / "out" / "README.md"
    card = readme.read_text()
    assert build(pacs_scan, tmp_path / "out", options).up_to_date  # the card matches the manifest read back
    readme.write_text(card.replace("Leave-one-domain-out", "Some"))
    with pytest.raises(OutputExistsError, match="README.md: not the card this version writes"):
        build(pacs_scan, tmp_path / "out", options)
    assert not build(pacs_scan, tmp_path / "out", options, overwrite=True).up_to_date
    assert readme.read_text() == card
