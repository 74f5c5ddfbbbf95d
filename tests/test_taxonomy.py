"""The class taxonomy shipped as package data: facts of the official releases, keyed by wnid."""

from __future__ import annotations

from collections import Counter

import pytest

from imagenet_dg.domains import DOMAINS, get_domain
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.taxonomy import imagenetv2_labels, load_taxonomy, val_labels


def test_there_are_1000_sorted_distinct_wnids() -> None:
    wnids = load_taxonomy().wnids
    assert len(wnids) == 1000 and list(wnids) == sorted(set(wnids))
    assert all(w.startswith("n") and len(w) == 9 for w in wnids)


def test_repeated_names_stay_apart_because_classes_are_keyed_by_wnid() -> None:
    taxonomy = load_taxonomy()
    counts = Counter(taxonomy.names[w] for w in taxonomy.wnids)
    assert counts["missile"] == 2 and counts["sunglasses"] == 2
    assert len(set(taxonomy.wnids)) == 1000


def test_a_and_r_are_200_class_subsets_sharing_86() -> None:
    taxonomy = load_taxonomy()
    assert len(taxonomy.imagenet_a) == len(taxonomy.imagenet_r) == 200
    assert set(taxonomy.imagenet_a) <= set(taxonomy.wnids) and set(taxonomy.imagenet_r) <= set(taxonomy.wnids)
    assert len(set(taxonomy.imagenet_a) & set(taxonomy.imagenet_r)) == 86


def test_validation_labels_cover_50_images_of_every_class() -> None:
    labels = val_labels()
    assert len(labels) == 50_000
    assert set(Counter(labels.values()).values()) == {50}
    assert labels["ILSVRC2012_val_00000001.JPEG"] == "n01751748"


def test_imagenetv2_has_10_images_of_every_class() -> None:
    labels = imagenetv2_labels()
    assert len(labels) == 10_000 and set(Counter(labels.values()).values()) == {10}


def test_index_is_the_sorted_position_and_unknown_wnids_are_refused() -> None:
    taxonomy = load_taxonomy()
    assert taxonomy.index(taxonomy.wnids[639]) == 639
    with pytest.raises(ImageNetDGError, match="n99999999"):
        taxonomy.index("n99999999")


def test_domains_cover_their_release_class_sets() -> None:
    taxonomy = load_taxonomy()
    assert {d: len(domain.wnids(taxonomy)) for d, domain in DOMAINS.items()} == {
        "imagenet": 1000, "imagenet-val": 1000, "imagenet-a": 200, "imagenet-r": 200,
        "imagenet-sketch": 1000, "imagenetv2": 1000,
    }
    with pytest.raises(ImageNetDGError, match="expected one of"):
        get_domain("imagenet-c")
