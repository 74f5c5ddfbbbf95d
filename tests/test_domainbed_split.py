"""DomainBed's 80/20 split, checked against a re-implementation of DomainBed's own code where mistakes would show.

The miniature suites give every domain the same number of images and list their domains in sorted order; here
the domain sizes are ones where 20% truncated and 20% rounded differ (13 images: 2 held out, not 3; 8: 1, not
2), and the suite lists its domains in an order that is not the sorted order of their folders, whose position
DomainBed uses as the environment index.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torchvision

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.layouts import scan_suite
from imagenet_dg.manifests import read_manifest
from imagenet_dg.protocols import env_indices, holdout_indices
from imagenet_dg.suites import SUITES, Suite, SuiteDomain

# Listed out of sorted order; the "real" domain lies in a folder that sorts first.
SUITE = Suite(
    name="test-unsorted",
    display_name="Unsorted",
    domains=(SuiteDomain("zeta", "Zeta"), SuiteDomain("real", "Real", ("A Real",)), SuiteDomain("mid", "Mid")),
    classes=("cat", "dog"),
    folder_names=("UNSORTED",),
)
SIZES = {"zeta": {"cat": 7, "dog": 6}, "real": {"cat": 5, "dog": 3}, "mid": {"cat": 6, "dog": 5}}
"""13, 8 and 11 images: int(0.2 n) is 2, 1 and 2; round(0.2 n) would be 3, 2 and 2."""


def domainbed_holdout(domain_folder: Path, trial_seed: int, env_index: int) -> set[str]:
    """What DomainBed holds out of one environment, written from its train.py and lib/misc.py: an ImageFolder,
    ``seed_hash(trial_seed, env_i)`` (an md5 of the tuple's text modulo 2**31), a RandomState shuffle of
    range(n), the first int(n * holdout_fraction) held out."""
    env = torchvision.datasets.ImageFolder(str(domain_folder))
    seed = int(hashlib.md5(str((trial_seed, env_index)).encode("utf-8")).hexdigest(), 16) % (2**31)
    keys = list(range(len(env)))
    np.random.RandomState(seed).shuffle(keys)
    return {Path(env.samples[i][0]).relative_to(domain_folder).as_posix() for i in keys[: int(len(env) * 0.2)]}


def every_file(folder: Path) -> set[str]:
    return {(Path(parent) / name).relative_to(folder).as_posix() for parent, _, names in os.walk(folder) for name in names}


def domainbed_environments(suite_folder: Path) -> list[str]:
    """DomainBed's environments: the sorted sub-folders of the dataset folder."""
    return sorted(entry.name for entry in os.scandir(suite_folder) if entry.is_dir())


@pytest.fixture
def suite_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The suite registered for the test, on disk with empty image files (neither side opens them); one class
    folder nests a sub-folder and an upper-case extension, as ImageFolder order must handle."""
    monkeypatch.setitem(SUITES, SUITE.name, SUITE)
    for domain in SUITE.domains:
        for class_id, n in SIZES[domain.id].items():
            for i in range(n):
                name = f"sub/{i:02d}.JPG" if class_id == "cat" and i % 3 == 0 else f"{i:02d}.jpg"
                path = tmp_path / "UNSORTED" / domain.folders()[0] / class_id / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    return tmp_path


@pytest.mark.parametrize(("n", "held_out"), [(13, 2), (8, 1), (11, 2), (91, 18), (4, 0)])
def test_twenty_percent_of_a_domain_is_held_out_truncated_not_rounded(n: int, held_out: int) -> None:
    for trial_seed in (0, 1, 2):
        indices = holdout_indices(n, trial_seed, env_index=1)
        assert len(indices) == held_out and len(set(indices.tolist())) == held_out
        assert set(indices.tolist()) <= set(range(n))


def test_the_environment_index_is_the_position_among_the_sorted_domain_folders(suite_root: Path) -> None:
    folders = {d: p.name for d, p in scan_suite(SUITE.name, suite_root).location.domain_folders.items()}
    environments = domainbed_environments(suite_root / "UNSORTED")
    assert environments == ["A Real", "mid", "zeta"] and [d.id for d in SUITE.domains] == ["zeta", "real", "mid"]
    assert env_indices(folders) == {d: environments.index(f) for d, f in folders.items()}
    assert {d: SUITE.env_index(d) for d in SUITE.domain_ids} == {"real": 0, "mid": 1, "zeta": 2}


@pytest.mark.parametrize("trial_seed", [0, 1, 2])
def test_a_full_build_holds_out_exactly_domainbeds_images(suite_root: Path, tmp_path: Path, trial_seed: int) -> None:
    out = tmp_path / "out"
    build(scan_suite(SUITE.name, suite_root), out, BuildOptions(protocol="full", seeds=(trial_seed,)))
    manifest = read_manifest(out)
    suite_folder = suite_root / "UNSORTED"
    environments = domainbed_environments(suite_folder)
    for target in SUITE.domain_ids:
        config = manifest["configs"][f"{target}-full-trial{trial_seed}"]
        splits = {s: pd.read_parquet(out / config["splits"][s]["files"][0]["path"]) for s in config["splits"]}
        for domain in SUITE.domains:
            folder = domain.folders()[0]
            expected = domainbed_holdout(suite_folder / folder, trial_seed, environments.index(folder))
            every = every_file(suite_folder / folder)
            assert len(expected) == int(sum(SIZES[domain.id].values()) * 0.2)
            if domain.id == target:
                assert set(splits["test"]["path"]) == every - expected
            else:
                rows = splits["validation"].loc[splits["validation"]["domain"] == domain.id]
                train = splits["train"].loc[splits["train"]["domain"] == domain.id]
                assert set(rows["path"]) == expected
                assert set(train["path"]) == every - expected
