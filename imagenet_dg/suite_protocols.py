"""The two split protocols of the standard suites, as pure functions: domain tables in, split tables out.

A domain table has columns ``path`` (POSIX, relative to the domain folder, ``<class>/<file>``) and
``class_id`` (the class folder name). Labels index the suite's sorted class list.

``fewshot`` (the paper's, SPEC 3): per domain and class, the images ordered by path are permuted by a
generator seeded with the fixed partition seed, the domain and the class, and cut into a test part of
round(n / 5) images, a guide pool of round((n - test) / 2) and an expert pool of the rest (rounding half to
even, as Python's ``round``): 20% / 40% / 40%. From each pool k images per class are drawn under the few-shot
seed exactly as for ImageNet-DG (:func:`imagenet_dg.protocol.draw_shots`). A task trains on its sources'
samples (the guide sample also serves model selection) and is scored on the target's test part.

``full`` (DomainBed's): each domain, listed in torchvision ImageFolder order (sorted classes, each class
folder walked in sorted order), has its index list 0..n-1 shuffled by ``numpy.random.RandomState(seed)``
with ``seed = int(md5(str((trial_seed, env_index))).hexdigest(), 16) % 2**31``; the first
``int(n * 0.2)`` shuffled indices are held out. ``env_index`` is the domain's position among the suite's
sorted domain folders. A task trains on its sources' 80%, selects on their 20% and is scored on the target's
80%, as DomainBed's training-domain validation does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imagenet_dg.errors import ProtocolError
from imagenet_dg.protocol import draw_shots, seeded_generator
from imagenet_dg.suites import Suite, Task, check_protocol, prompt_name

SUITE_PROTOCOL_VERSION = "1.0"
"""Version of the suites' split definitions. Any change to what a split contains bumps it."""

PARTITION_SEED = 0
"""Seed of the fewshot 40/40/20 parts. Part of the benchmark definition."""

HOLDOUT_FRACTION = 0.2
"""DomainBed's default ``--holdout_fraction``."""

FEWSHOT_SPLITS = ("expert", "guide", "test")
FULL_SPLITS = ("train", "validation", "test")
SPLIT_COLUMNS = ("path", "domain", "class_id", "class_name", "label", "pool")


def protocol_splits(protocol: str) -> tuple[str, ...]:
    """The split names of a configuration of ``protocol``."""
    return FEWSHOT_SPLITS if check_protocol(protocol) == "fewshot" else FULL_SPLITS


def _check_table(table: pd.DataFrame, what: str) -> None:
    missing = {"path", "class_id"} - set(table.columns)
    if missing:
        raise ProtocolError(f"{what}: expected columns 'path' and 'class_id', missing {sorted(missing)}")
    if table["path"].duplicated().any():
        repeats = table.loc[table["path"].duplicated(), "path"].head(3).tolist()
        raise ProtocolError(f"{what}: paths must be unique, found repeats such as {repeats}")


# ---------------------------------------------------------------------------------------------------------
# fewshot


def fewshot_test_size(n: int) -> int:
    """Images of a class of ``n`` in the test part: round(n / 5), halves to even."""
    return round(n / 5)


def fewshot_guide_size(n: int) -> int:
    """Images of a class of ``n`` in the guide pool: half of what the test part leaves, halves to even."""
    return round((n - fewshot_test_size(n)) / 2)


def partition_domain(table: pd.DataFrame, domain: str, partition_seed: int = PARTITION_SEED) -> pd.DataFrame:
    """Assign every image of a domain to ``test``, ``guide`` or ``expert`` (column ``pool``), per class.

    Per class, the images ordered by path are permuted by a generator seeded with (partition_seed, domain,
    class); the permutation's first :func:`fewshot_test_size` go to test, the next :func:`fewshot_guide_size` to the
    guide pool, the rest to the expert pool. Returns columns path, class_id, pool in (class_id, path) order.
    """
    _check_table(table, f"domain {domain}")
    ordered = table[["path", "class_id"]].sort_values(["class_id", "path"], kind="stable").reset_index(drop=True)
    pools = np.empty(len(ordered), dtype=object)
    for class_id, rows in ordered.groupby("class_id", sort=True).indices.items():
        n = len(rows)
        order = rows[seeded_generator(partition_seed, "partition-40-40-20", domain, str(class_id)).permutation(n)]
        n_test, n_guide = fewshot_test_size(n), fewshot_guide_size(n)
        pools[order[:n_test]] = "test"
        pools[order[n_test : n_test + n_guide]] = "guide"
        pools[order[n_test + n_guide :]] = "expert"
    ordered["pool"] = pools
    return ordered


def _frame(rows: pd.DataFrame, domain: str, suite: Suite, pool: str | None = None) -> pd.DataFrame:
    class_ids = rows["class_id"].to_numpy(dtype=object)
    labels = pd.Categorical(class_ids, categories=list(suite.classes)).codes.astype(np.int64)
    if (labels < 0).any():
        unknown = sorted(set(class_ids[labels < 0]))
        raise ProtocolError(f"domain {domain}: classes {unknown[:5]} are not {suite.display_name} classes")
    names = np.asarray([prompt_name(c) for c in suite.classes], dtype=object)
    return pd.DataFrame(
        {
            "path": rows["path"].to_numpy(dtype=object),
            "domain": domain,
            "class_id": class_ids,
            "class_name": names[labels] if len(labels) else np.asarray([], dtype=object),
            "label": labels,
            "pool": rows["pool"].to_numpy(dtype=object) if pool is None else pool,
        },
        columns=list(SPLIT_COLUMNS),
    )


def _concat(frames: Sequence[pd.DataFrame], sort: bool) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "label" else object) for c in SPLIT_COLUMNS})
    frame = pd.concat(frames, ignore_index=True)
    if sort:
        # Domains in the order given, then class, then path: evaluation runs in class-sorted order.
        rank = {d: i for i, d in enumerate(dict.fromkeys(frame["domain"]))}
        frame = frame.assign(_rank=frame["domain"].map(rank)).sort_values(["_rank", "label", "path"], kind="stable")
        frame = frame.drop(columns="_rank")
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class SuiteSplits:
    """The splits of one task of a suite under one protocol."""

    suite: str
    protocol: str
    task: Task
    shots: int | None
    """k of the fewshot protocol; None under full."""
    seed: int
    """The few-shot seed (fewshot) or DomainBed's trial seed (full)."""
    classes: tuple[str, ...]
    splits: Mapping[str, pd.DataFrame]
    """Split name -> rows with columns :data:`SPLIT_COLUMNS`; ``pool`` holds the split name."""


def fewshot_splits(
    suite: Suite,
    tables: Mapping[str, pd.DataFrame],
    target: str,
    shots: int,
    seed: int,
    partition_seed: int = PARTITION_SEED,
    partitions: Mapping[str, pd.DataFrame] | None = None,
) -> SuiteSplits:
    """The expert, guide and test splits of the task targeting ``target`` at ``shots`` shots and ``seed``.

    ``partitions`` may give the :func:`partition_domain` result of each domain (a caller building many
    configurations partitions once). The sources' k-shot samples come from their expert and guide pools,
    the test split is the target's whole test part.
    """
    if shots < 1:
        raise ProtocolError(f"shots must be a positive number of images per class, got {shots}")
    task = suite.task(target)
    parts = _partitions(suite, tables, (task.target, *task.sources), partition_seed, partitions)
    sampled: dict[str, list[pd.DataFrame]] = {"expert": [], "guide": []}
    for domain in task.sources:
        pools = parts[domain].loc[parts[domain]["pool"] != "test"]
        drawn = draw_shots(
            pd.DataFrame({"path": pools["path"], "wnid": pools["class_id"], "pool": pools["pool"]}), domain, shots, seed
        ).rename(columns={"wnid": "class_id"})
        for pool in sampled:
            sampled[pool].append(_frame(drawn.loc[drawn["pool"] == pool], domain, suite))
    target_part = parts[task.target]
    test = _frame(target_part.loc[target_part["pool"] == "test"], task.target, suite)
    return SuiteSplits(
        suite=suite.name,
        protocol="fewshot",
        task=task,
        shots=shots,
        seed=seed,
        classes=suite.classes,
        splits={"expert": _concat(sampled["expert"], True), "guide": _concat(sampled["guide"], True),
                "test": _concat([test], True)},
    )


def _partitions(
    suite: Suite,
    tables: Mapping[str, pd.DataFrame],
    domains: Sequence[str],
    partition_seed: int,
    given: Mapping[str, pd.DataFrame] | None,
) -> dict[str, pd.DataFrame]:
    missing = [d for d in domains if d not in tables and (given is None or d not in given)]
    if missing:
        raise ProtocolError(f"{suite.display_name}: the task needs the domain tables of {', '.join(missing)}")
    return {d: given[d] if given is not None and d in given else partition_domain(tables[d], d, partition_seed)
            for d in domains}


# ---------------------------------------------------------------------------------------------------------
# full


def domainbed_seed(trial_seed: int, env_index: int) -> int:
    """DomainBed's ``misc.seed_hash(trial_seed, env_index)``: an md5 of the tuple's text, modulo 2**31."""
    return int(hashlib.md5(str((int(trial_seed), int(env_index))).encode("utf-8")).hexdigest(), 16) % (2**31)


def imagefolder_order(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` in torchvision ImageFolder order, with a fresh index (the ImageFolder sample index).

    ImageFolder lists the sorted class folders, and within each visits the folders in sorted order of their
    full path and their files in sorted order. For a path ``class/sub.../file``, that is the order of
    (class, the folders between class and file joined by ``/``, file).
    """
    _check_table(table, "domain table")
    parts = table["path"].str.split("/")
    key = pd.DataFrame(
        {
            "class_id": table["class_id"].to_numpy(dtype=object),
            "middle": ["/".join(p[1:-1]) for p in parts],
            "file": [p[-1] for p in parts],
        }
    )
    order = key.sort_values(["class_id", "middle", "file"], kind="stable").index.to_numpy()
    return table.iloc[order].reset_index(drop=True)


def holdout_indices(n: int, trial_seed: int, env_index: int, holdout_fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """ImageFolder indices DomainBed holds out of a domain of ``n`` images, in DomainBed's shuffled order.

    ``misc.split_dataset(env, int(len(env) * holdout_fraction), seed_hash(trial_seed, env_i))``: the list
    0..n-1 is shuffled by ``RandomState(seed)`` and its first ``int(n * holdout_fraction)`` entries held out.
    """
    keys = list(range(n))
    np.random.RandomState(domainbed_seed(trial_seed, env_index)).shuffle(keys)
    return np.asarray(keys[: int(n * holdout_fraction)], dtype=np.int64)


def full_split_domain(table: pd.DataFrame, suite: Suite, domain: str, trial_seed: int) -> pd.DataFrame:
    """A domain's images in ImageFolder order with column ``pool``: ``holdout`` (DomainBed's out split) or
    ``in`` (its in split)."""
    ordered = imagefolder_order(table)[["path", "class_id"]].copy()
    pools = np.full(len(ordered), "in", dtype=object)
    pools[holdout_indices(len(ordered), trial_seed, suite.env_index(domain))] = "holdout"
    ordered["pool"] = pools
    return ordered


def full_splits(
    suite: Suite,
    tables: Mapping[str, pd.DataFrame],
    target: str,
    trial_seed: int,
    domain_splits: Mapping[str, pd.DataFrame] | None = None,
) -> SuiteSplits:
    """The train, validation and test splits of the task targeting ``target`` under DomainBed's protocol.

    train: the sources' in splits (80%); validation: the sources' held-out splits (20%); test: the target's
    in split (80%), which DomainBed's training-domain validation scores. Rows are in ImageFolder order per
    domain, domains in the task's order. ``domain_splits`` may give each domain's :func:`full_split_domain`
    result at this trial seed (a domain's split does not depend on the task, so a caller splits it once).
    """
    task = suite.task(target)
    missing = [d for d in (task.target, *task.sources) if d not in tables and d not in (domain_splits or {})]
    if missing:
        raise ProtocolError(f"{suite.display_name}: the task needs the domain tables of {', '.join(missing)}")

    def split_of(domain: str) -> pd.DataFrame:
        if domain_splits is not None and domain in domain_splits:
            return domain_splits[domain]
        return full_split_domain(tables[domain], suite, domain, trial_seed)

    train, validation = [], []
    for domain in task.sources:
        split = split_of(domain)
        train.append(_frame(split.loc[split["pool"] == "in"], domain, suite, "train"))
        validation.append(_frame(split.loc[split["pool"] == "holdout"], domain, suite, "validation"))
    target_split = split_of(task.target)
    test = _frame(target_split.loc[target_split["pool"] == "in"], task.target, suite, "test")
    return SuiteSplits(
        suite=suite.name,
        protocol="full",
        task=task,
        shots=None,
        seed=trial_seed,
        classes=suite.classes,
        splits={"train": _concat(train, False), "validation": _concat(validation, False), "test": _concat([test], False)},
    )
