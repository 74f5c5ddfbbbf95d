"""ImageNet-DG's few-shot split protocol (docs/protocol.md#imagenet-dg-fewshot), rule by rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imagenet_dg.errors import ProtocolError
from imagenet_dg.protocols import (
    config_name,
    draw_shots,
    guide_size,
    halves_splits,
    label_column,
    split_pools,
    task_statistics,
)
from imagenet_dg.suites import IMAGENET_DG, SuiteError, Task, get_suite

IDG = get_suite(IMAGENET_DG)
TASKS = {t.name: t for t in IDG.tasks()}

A_CLASSES = ["n01498041", "n01531178", "n01534433"]
OTHER_CLASSES = ["n01440764", "n01443537"]


def domain_table(counts: dict[str, int], prefix: str = "img") -> pd.DataFrame:
    rows = [(f"{wnid}/{prefix}_{i:03d}.JPEG", wnid) for wnid, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "class_id"])


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    everything = A_CLASSES + OTHER_CLASSES
    return {
        "imagenet": domain_table({w: 20 + i for i, w in enumerate(everything)}),
        "imagenet-sketch": domain_table({w: 7 for w in everything}, "sketch"),
        "imagenetv2": domain_table({w: 10 for w in everything}, "v2"),
        "imagenet-a": domain_table({w: 4 for w in A_CLASSES}, "a"),
        "imagenet-val": domain_table({w: 3 for w in everything}, "val"),
    }


def test_guide_pool_gets_half_rounded_to_even() -> None:
    assert [guide_size(n) for n in (1, 2, 3, 4, 5, 7, 10, 51)] == [0, 1, 2, 2, 2, 4, 5, 26]


def test_pools_partition_each_class_with_the_guide_half(tables: dict[str, pd.DataFrame]) -> None:
    pools = split_pools(tables["imagenet"], "imagenet")
    assert sorted(pools["path"]) == sorted(tables["imagenet"]["path"])
    for wnid, group in pools.groupby("class_id"):
        n = len(group)
        assert (group["pool"] == "guide").sum() == round(n / 2)
        assert (group["pool"] == "expert").sum() == n - round(n / 2)


def test_pools_do_not_depend_on_row_order(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["imagenet"]
    shuffled = table.sample(frac=1.0, random_state=7).reset_index(drop=True)
    a = split_pools(table, "imagenet").set_index("path")["pool"].sort_index()
    b = split_pools(shuffled, "imagenet").set_index("path")["pool"].sort_index()
    pd.testing.assert_series_equal(a, b)


def test_pools_of_a_class_do_not_depend_on_other_classes(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["imagenet"]
    alone = table.loc[table["class_id"] == A_CLASSES[1]]
    with_all = split_pools(table, "imagenet").set_index("path")["pool"]
    only = split_pools(alone, "imagenet").set_index("path")["pool"]
    pd.testing.assert_series_equal(with_all.loc[only.index], only)


def test_partition_seed_changes_the_halves(tables: dict[str, pd.DataFrame]) -> None:
    a = split_pools(tables["imagenet"], "imagenet", partition_seed=0)["pool"].tolist()
    b = split_pools(tables["imagenet"], "imagenet", partition_seed=1)["pool"].tolist()
    assert a != b


def test_the_same_class_is_shuffled_differently_in_different_domains() -> None:
    table = domain_table({A_CLASSES[0]: 40})
    a = split_pools(table, "imagenet")["pool"].tolist()
    b = split_pools(table, "imagenet-sketch")["pool"].tolist()
    assert a != b


def test_draw_takes_k_per_class_and_pool_without_replacement(tables: dict[str, pd.DataFrame]) -> None:
    pools = split_pools(tables["imagenet"], "imagenet")
    sample = draw_shots(pools, "imagenet", 4, seed=1)
    assert not sample["path"].duplicated().any()
    assert (sample.groupby(["class_id", "pool"]).size() == 4).all()
    assert len(sample) == 4 * 2 * tables["imagenet"]["class_id"].nunique()


def test_draw_takes_everything_when_a_pool_holds_fewer_than_k(tables: dict[str, pd.DataFrame]) -> None:
    pools = split_pools(tables["imagenetv2"], "imagenetv2")  # 10 per class: 5 guide, 5 expert
    sample = draw_shots(pools, "imagenetv2", 16, seed=1)
    assert (sample.groupby(["class_id", "pool"]).size() == 5).all()
    assert sorted(sample["path"]) == sorted(pools["path"])


def test_drawn_images_keep_their_pool(tables: dict[str, pd.DataFrame]) -> None:
    pools = split_pools(tables["imagenet"], "imagenet")
    membership = pools.set_index("path")["pool"]
    for seed in (1, 2, 3):
        sample = draw_shots(pools, "imagenet", 8, seed)
        assert (sample["pool"].to_numpy() == membership.loc[sample["path"]].to_numpy()).all()


def test_seed_changes_the_draw(tables: dict[str, pd.DataFrame]) -> None:
    pools = split_pools(tables["imagenet"], "imagenet")
    draws = [set(draw_shots(pools, "imagenet", 2, seed)["path"]) for seed in (1, 2, 3)]
    assert draws[0] != draws[1] and draws[1] != draws[2]


def test_seed_changes_only_the_draw(tables: dict[str, pd.DataFrame]) -> None:
    splits = [halves_splits(IDG, TASKS["a"], tables, 2, seed) for seed in (1, 2)]
    assert not splits[0].split("expert").equals(splits[1].split("expert"))
    assert splits[0].classes == splits[1].classes
    pd.testing.assert_frame_equal(splits[0].split("test"), splits[1].split("test"))
    pools = split_pools(tables["imagenet"], "imagenet").set_index("path")["pool"]
    for splits_of_seed in splits:
        for name in ("expert", "guide"):
            frame = splits_of_seed.split(name)
            rows = frame.loc[frame["domain"] == "imagenet"]
            assert (pools.loc[rows["path"]] == name).all()


def test_smaller_draws_are_nested_in_larger_ones(tables: dict[str, pd.DataFrame]) -> None:
    pools = split_pools(tables["imagenet"], "imagenet")
    previous: set[str] = set()
    for k in (1, 2, 4, 8):
        current = set(draw_shots(pools, "imagenet", k, seed=3)["path"])
        assert previous <= current
        previous = current


def test_sources_are_restricted_to_the_target_classes(tables: dict[str, pd.DataFrame]) -> None:
    splits = halves_splits(IDG, TASKS["a"], tables, 16, 1)
    assert splits.classes == tuple(A_CLASSES)
    for frame in (splits.split("expert"), splits.split("guide")):
        assert set(frame["class_id"]) == set(A_CLASSES)
        assert set(frame["domain"]) == {"imagenet", "imagenet-sketch", "imagenetv2"}


def test_labels_index_the_sorted_target_wnids(tables: dict[str, pd.DataFrame]) -> None:
    splits = halves_splits(IDG, TASKS["i"], tables, 1, 1)
    classes = sorted(A_CLASSES + OTHER_CLASSES)
    assert splits.classes == tuple(classes)
    for frame in (splits.split("expert"), splits.split("guide"), splits.split("test")):
        assert (frame["label"] == frame["class_id"].map(classes.index)).all()


def test_the_test_split_is_the_whole_target(tables: dict[str, pd.DataFrame]) -> None:
    splits = halves_splits(IDG, TASKS["a"], tables, 1, 1)
    assert sorted(splits.split("test")["path"]) == sorted(tables["imagenet-a"]["path"])
    assert set(splits.split("test")["pool"]) == {"test"} and set(splits.split("test")["domain"]) == {"imagenet-a"}


def test_a_source_image_has_the_same_pool_in_every_task(tables: dict[str, pd.DataFrame]) -> None:
    a = halves_splits(IDG, TASKS["a"], tables, 16, 1)
    i = halves_splits(IDG, TASKS["i"], tables, 16, 1)
    for name in ("expert", "guide"):
        in_a = set(a.split(name)["path"] + "@" + a.split(name)["domain"])
        in_i = set(i.split(name)["path"] + "@" + i.split(name)["domain"])
        assert in_a <= in_i


def test_splits_do_not_depend_on_listing_order(tables: dict[str, pd.DataFrame]) -> None:
    shuffled = {d: t.sample(frac=1.0, random_state=3).reset_index(drop=True) for d, t in tables.items()}
    a = halves_splits(IDG, TASKS["i"], tables, 4, 2)
    b = halves_splits(IDG, TASKS["i"], shuffled, 4, 2)
    for name in ("expert", "guide", "test"):
        pd.testing.assert_frame_equal(a.split(name), b.split(name))


def test_missing_domain_table_is_named(tables: dict[str, pd.DataFrame]) -> None:
    del tables["imagenetv2"]
    with pytest.raises(ProtocolError, match="imagenetv2"):
        halves_splits(IDG, TASKS["a"], tables, 1, 1)


def test_labels_refuse_unsorted_classes() -> None:
    with pytest.raises(ProtocolError):
        label_column(domain_table({"n02": 1, "n01": 1}), ["n02", "n01"])


def test_duplicate_paths_are_refused() -> None:
    table = pd.DataFrame({"path": ["x/1.jpg", "x/1.jpg"], "class_id": ["n01440764", "n01440764"]})
    with pytest.raises(ProtocolError, match="unique"):
        split_pools(table, "imagenet")


def test_statistics_count_sources_restricted_to_target_classes(tables: dict[str, pd.DataFrame]) -> None:
    stats = task_statistics(IDG, tables, ["a", "i"]).set_index("task")
    # imagenet has 20, 21, 22 images in the three A classes (positions 0-2) and 23, 24 in the others.
    assert stats.loc["a", "imagenet"] == 20 + 21 + 22
    assert stats.loc["a", "imagenet-sketch"] == 3 * 7
    assert stats.loc["a", "imagenetv2"] == 3 * 10
    assert stats.loc["a", "target_images"] == 12 and stats.loc["a", "classes"] == 3
    assert stats.loc["a", "source_total"] == 63 + 21 + 30
    assert stats.loc["i", "imagenet"] == sum(range(20, 25)) and stats.loc["i", "classes"] == 5


def test_config_names_carry_task_shots_and_seed() -> None:
    assert config_name("a", "fewshot", shots=16, seed=1) == "a-16shot-seed1"
    assert len({config_name(t, "fewshot", shots=k, seed=s) for t in TASKS for k in (1, 16) for s in (1, 2)}) == 12


def test_unknown_task_is_refused() -> None:
    with pytest.raises(SuiteError, match="its tasks are a, i, r"):
        IDG.task("x")


def test_a_custom_task_uses_its_own_sources(tables: dict[str, pd.DataFrame]) -> None:
    task = Task("custom", "imagenet-a", ("imagenet",))
    splits = halves_splits(IDG, task, tables, 2, 1)
    assert set(splits.split("expert")["domain"]) == {"imagenet"}
    assert np.array_equal(np.sort(splits.split("expert")["label"].unique()), np.arange(3))


def test_one_draw_over_the_whole_domain_serves_every_task(tables: dict[str, pd.DataFrame]) -> None:
    samples = {d: draw_shots(split_pools(tables[d], d), d, 2, 3) for d in TASKS["a"].sources}
    for task in (TASKS["a"], TASKS["i"]):
        shared = halves_splits(IDG, task, tables, 2, 3, samples=samples)
        alone = halves_splits(IDG, task, tables, 2, 3)
        for name in ("expert", "guide", "test"):
            pd.testing.assert_frame_equal(shared.split(name), alone.split(name))
