"""The split protocols as pure functions: scan tables in, split tables out, no I/O.

Two protocol names exist, :data:`FEWSHOT` and :data:`FULL`. A suite offers each under one *split protocol*
(:data:`SPLIT_PROTOCOLS`), described in ``docs/protocol.md``:

- ``guide-expert-halves`` (ImageNet-DG's ``fewshot``, ``docs/protocol.md#imagenet-dg-fewshot``): each class of
  each source is cut into a guide half and an expert half, k images per class are drawn from each; the test
  split is the whole target.
- ``fewshot-40-40-20`` (the standard suites' ``fewshot``, ``docs/protocol.md#standard-suites-fewshot``): each
  class of each domain is cut into a test part (20%), a guide pool (40%) and an expert pool (40%); the
  sources' pools give the k-shot draws, the target's test part is scored.
- ``domainbed-80-20`` (the standard suites' ``full``, ``docs/protocol.md#domainbed-full``): DomainBed's own
  80/20 split of every domain.

Every generator is seeded from a seed and the names of what it shuffles (never from positions or listing
order), so the splits are the same on every machine and for any order the files are listed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from imagenet_dg.errors import ProtocolError
from imagenet_dg.tables import SCAN_COLUMNS, SPLIT_COLUMNS, check_scan_table, empty_split_table

if TYPE_CHECKING:  # the suites describe their protocols by these ids; a suite is only passed in here
    from imagenet_dg.suites import Suite, Task

FEWSHOT = "fewshot"
FULL = "full"
PROTOCOLS = (FEWSHOT, FULL)
"""The protocol names, as the command line, manifests and records spell them."""
DEFAULT_PROTOCOL = FEWSHOT

PROTOCOL_SPLITS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {FEWSHOT: ("expert", "guide", "test"), FULL: ("train", "validation", "test")}
)
"""The splits a configuration of each protocol holds; each split's rows carry its name in ``pool``."""

DEFAULT_SHOTS = (16,)
"""Shots per class when none are asked for (fewshot)."""
DEFAULT_SEEDS: Mapping[str, tuple[int, ...]] = MappingProxyType({FEWSHOT: (1, 2, 3), FULL: (0, 1, 2)})
"""Seeds when none are asked for: few-shot seeds 1-3, and DomainBed's trial seeds 0-2 under ``full``."""
DEFAULT_FEWSHOT_SEEDS = DEFAULT_SEEDS[FEWSHOT]
DEFAULT_TRIAL_SEEDS = DEFAULT_SEEDS[FULL]

PARTITION_SEED = 0
"""Seed of the fixed parts (halves, 40/40/20) of every domain. Part of the benchmarks' definition."""
HOLDOUT_FRACTION = 0.2
"""DomainBed's default ``--holdout_fraction``."""
POOLS = ("expert", "guide")
"""The pools k-shot samples are drawn from."""


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`; a clear error otherwise."""
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return protocol


def default_seeds(protocol: str) -> tuple[int, ...]:
    """The seeds a build or sweep of ``protocol`` uses when none are asked for."""
    return DEFAULT_SEEDS[check_protocol(protocol)]


def config_name(task: str, protocol: str, *, shots: int | None = None, seed: int | None = None) -> str:
    """Name of the dataset configuration of ``task`` under ``protocol``.

    ``fewshot``: ``<task>-<shots>shot-seed<seed>``; ``full``: ``<task>-full-trial<seed>``, the seed being
    DomainBed's trial seed (``docs/protocol.md#configurations``).
    """
    check_protocol(protocol)
    if seed is None:
        raise ProtocolError(f"config_name({task!r}, {protocol!r}) needs a seed")
    if protocol == FEWSHOT:
        if shots is None:
            raise ProtocolError(f"config_name({task!r}, 'fewshot') needs a number of shots")
        return f"{task}-{shots}shot-seed{seed}"
    return f"{task}-full-trial{seed}"


def protocol_of_manifest(manifest: Mapping) -> str:
    """The protocol a built manifest was split under (manifests written before suites existed name none:
    they are ImageNet-DG's ``fewshot``)."""
    return str(manifest.get("protocol", FEWSHOT))


# --- seeds and class groups -----------------------------------------------------------------------------------


def _name_entropy(name: str) -> int:
    # A stable 64-bit integer for a string: Python's hash() is salted per process, so it cannot be used.
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def seeded_generator(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and the names of what it shuffles, identical on every machine."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(_name_entropy(n) for n in names)]))


def class_groups(table: pd.DataFrame) -> Iterator[tuple[str, np.ndarray]]:
    """(class id, row positions ordered by path) for each class of ``table``, classes in sorted order."""
    if len(table) == 0:
        return
    # Plain code-point string order, whatever order the table came in.
    keyed = pd.DataFrame({"class_id": table["class_id"].to_numpy(), "path": table["path"].to_numpy()})
    order = keyed.sort_values(["class_id", "path"], kind="stable").index.to_numpy()
    sorted_ids = keyed["class_id"].to_numpy(dtype=object)[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        yield str(sorted_ids[start]), order[start:end]


def _assign_parts(
    table: pd.DataFrame, domain: str, partition_seed: int, stream: str, sizes: Callable[[int], Sequence[tuple[str, int]]]
) -> pd.DataFrame:
    """Every image of a domain assigned to a part (column ``pool``), class by class: the images of a class of n,
    ordered by path, are permuted by a generator seeded with (partition_seed, stream, domain, class) and cut in
    the order and sizes ``sizes(n)`` gives. Returns columns path, class_id, pool in (class_id, path) order."""
    check_scan_table(table, f"domain {domain}")
    ordered = table[list(SCAN_COLUMNS)].sort_values(["class_id", "path"], kind="stable").reset_index(drop=True)
    pools = np.empty(len(ordered), dtype=object)
    for class_id, rows in ordered.groupby("class_id", sort=True).indices.items():
        shuffled = rows[seeded_generator(partition_seed, stream, domain, str(class_id)).permutation(len(rows))]
        start = 0
        for part, size in sizes(len(rows)):
            pools[shuffled[start : start + size]] = part
            start += size
    ordered["pool"] = pools
    return ordered


def draw_shots(pools: pd.DataFrame, domain: str, shots: int, seed: int) -> pd.DataFrame:
    """The k-shot sample of every (class, pool) of a domain whose rows carry their pool (:data:`POOLS`).

    Per (class, pool), the members ordered by path are permuted by a generator seeded with (seed, domain,
    class, pool) and the first ``shots`` are kept (all of them where fewer), so a smaller sample lies inside a
    larger one. Rows keep their columns and come back in (class_id, pool, path) order.
    """
    if shots < 1:
        raise ProtocolError(f"shots must be a positive number of images per class, got {shots}")
    if "pool" not in pools.columns:
        raise ProtocolError(f"domain {domain}: expected a 'pool' column")
    keep: list[np.ndarray] = []
    for pool in POOLS:
        members = pools.loc[pools["pool"] == pool]
        positions = np.flatnonzero((pools["pool"] == pool).to_numpy())
        for class_id, rows in class_groups(members):
            permutation = seeded_generator(seed, "shots", domain, class_id, pool).permutation(len(rows))
            keep.append(positions[np.sort(rows[permutation[:shots]])])
    if not keep:
        return pools.iloc[[]].reset_index(drop=True)
    selected = pools.iloc[np.concatenate(keep)]
    return selected.sort_values(["class_id", "pool", "path"], kind="stable").reset_index(drop=True)


# --- the splits of a task ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSplits:
    """The splits of one task under one protocol at one (shots, seed)."""

    protocol: str
    task: Task
    shots: int | None
    """k of a few-shot protocol; None under ``full``."""
    seed: int
    """The few-shot seed, or DomainBed's trial seed under ``full``."""
    classes: tuple[str, ...]
    """The task's class ids in label order."""
    splits: Mapping[str, pd.DataFrame]
    """Split name -> split table (:data:`imagenet_dg.tables.SPLIT_COLUMNS`); ``pool`` holds the split name."""

    def split(self, name: str) -> pd.DataFrame:
        """The split called ``name``; an error naming this protocol's splits otherwise."""
        if name not in self.splits:
            raise ProtocolError(f"unknown split {name!r}; expected one of {', '.join(self.splits)}")
        return self.splits[name]


def task_classes(suite: Suite, task: Task, tables: Mapping[str, pd.DataFrame]) -> tuple[str, ...]:
    """The class ids of ``task`` in label order: the suite's class list, or, for a suite whose tasks each have
    their own classes (ImageNet-DG), the sorted classes present in the scanned target domain."""
    if suite.classes:
        return suite.classes
    if task.target not in tables:
        raise ProtocolError(f"task {task.name} needs the domain table of its target {task.target}")
    check_scan_table(tables[task.target], f"target {task.target}")
    return tuple(sorted(set(tables[task.target]["class_id"].tolist())))


def restrict(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Rows of ``table`` whose class is in ``classes``, in the original order, with a fresh index."""
    return table.loc[table["class_id"].isin(list(classes))].reset_index(drop=True)


def label_column(table: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Label of every row: the position of its class in ``classes`` (which must be sorted and cover them)."""
    if list(classes) != sorted(classes):
        raise ProtocolError("a task's classes must be in sorted order")
    index = {class_id: i for i, class_id in enumerate(classes)}
    try:
        return np.fromiter((index[c] for c in table["class_id"]), dtype=np.int64, count=len(table))
    except KeyError as error:
        raise ProtocolError(f"class {error.args[0]} is not among the task's classes") from None


def _split_rows(rows: pd.DataFrame, domain: str, classes: Sequence[str], pool: str | None = None) -> pd.DataFrame:
    """``rows`` (path, class_id, and pool unless ``pool`` is given) as split-table rows of ``domain``."""
    return pd.DataFrame(
        {
            "path": rows["path"].to_numpy(dtype=object),
            "domain": domain,
            "class_id": rows["class_id"].to_numpy(dtype=object),
            "label": label_column(rows, classes),
            "pool": rows["pool"].to_numpy(dtype=object) if pool is None else pool,
        },
        columns=list(SPLIT_COLUMNS),
    )


def _by_domain_label_path(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The rows of ``frames`` one domain after the other in the order given, each by (label, path)."""
    if not frames:
        return empty_split_table()
    frame = pd.concat(frames, ignore_index=True)
    rank = {d: i for i, d in enumerate(dict.fromkeys(frame["domain"]))}
    frame = frame.assign(_rank=frame["domain"].map(rank)).sort_values(["_rank", "label", "path"], kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)[list(SPLIT_COLUMNS)]


def _in_order(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else empty_split_table()


def _needed(suite: Suite, task: Task, tables: Mapping[str, object]) -> None:
    missing = [d for d in (task.target, *task.sources) if d not in tables]
    if missing:
        raise ProtocolError(f"{suite.display_name}: task {task.name} needs the domain tables of {', '.join(missing)}")


def configurations(
    protocol: str, tasks: Sequence[Task], shots: Sequence[int], seeds: Sequence[int]
) -> Iterator[tuple[Task, int | None, int]]:
    """(task, shots, seed) of every configuration in output order: tasks as given, then shots and seeds
    ascending; shots are None under ``full``."""
    for task in tasks:
        for k in sorted(set(shots)) if protocol == FEWSHOT else (None,):
            for seed in sorted(set(seeds)):
                yield task, k, seed


# --- guide-expert-halves: ImageNet-DG's fewshot -----------------------------------------------------------------


def guide_size(n: int) -> int:
    """Images of a class of ``n`` that go to the guide pool: round(n / 2), halves to even."""
    return round(n / 2)


def split_pools(table: pd.DataFrame, domain: str, partition_seed: int = PARTITION_SEED) -> pd.DataFrame:
    """Every image of a source domain in the ``guide`` or ``expert`` pool (column ``pool``): per class, the
    first :func:`guide_size` of the permutation seeded with (partition_seed, "partition", domain, class) form
    the guide pool. Returns columns path, class_id, pool in (class_id, path) order."""
    return _assign_parts(table, domain, partition_seed, "partition",
                         lambda n: (("guide", guide_size(n)), ("expert", n - guide_size(n))))


def halves_splits(
    suite: Suite,
    task: Task,
    tables: Mapping[str, pd.DataFrame],
    shots: int,
    seed: int,
    partition_seed: int = PARTITION_SEED,
    samples: Mapping[str, pd.DataFrame] | None = None,
) -> TaskSplits:
    """The expert, guide and test splits of ``task`` at ``shots`` shots and few-shot ``seed``.

    The sources are restricted to the task's classes; each one's k-shot sample comes from its halves, the test
    split is the whole target. ``samples`` may give, per source, the :func:`draw_shots` result over all of the
    domain's classes at this (shots, seed, partition_seed): a class's draw depends on neither the task nor the
    other classes, so a caller building several tasks draws once per domain. Rows are ordered by (source
    order, label, path); the test split by (label, path).
    """
    _needed(suite, task, tables)
    classes = task_classes(suite, task, tables)
    sampled: dict[str, list[pd.DataFrame]] = {pool: [] for pool in POOLS}
    for domain in task.sources:
        if samples is not None:
            sample = restrict(samples[domain], classes)
        else:
            sample = draw_shots(restrict(split_pools(tables[domain], domain, partition_seed), classes),
                                domain, shots, seed)
        for pool in POOLS:
            sampled[pool].append(_split_rows(sample.loc[sample["pool"] == pool], domain, classes))
    test = _split_rows(tables[task.target], task.target, classes, "test")
    splits = {"expert": _by_domain_label_path(sampled["expert"]), "guide": _by_domain_label_path(sampled["guide"]),
              "test": _by_domain_label_path([test])}
    return TaskSplits(FEWSHOT, task, shots, seed, classes, MappingProxyType(splits))


def _assemble_halves(
    suite: Suite, tables: Mapping[str, pd.DataFrame], tasks: Sequence[Task], *, shots: Sequence[int],
    seeds: Sequence[int], partition_seed: int, env_indices: Mapping[str, int],
) -> dict[str, TaskSplits]:
    sources = sorted({d for t in tasks for d in t.sources})
    for task in tasks:
        _needed(suite, task, tables)
    pools = {d: split_pools(tables[d], d, partition_seed) for d in sources}
    # One draw per (domain, shots, seed), shared by every task that has the domain as a source.
    samples = {(d, k, s): draw_shots(pools[d], d, k, s) for d in sources for k in set(shots) for s in set(seeds)}
    return {
        config_name(task.name, FEWSHOT, shots=k, seed=s): halves_splits(
            suite, task, tables, k, s, partition_seed, samples={d: samples[(d, k, s)] for d in task.sources}
        )
        for task, k, s in configurations(FEWSHOT, tasks, shots, seeds)
    }


# --- fewshot-40-40-20: the standard suites' fewshot -------------------------------------------------------------


def fewshot_test_size(n: int) -> int:
    """Images of a class of ``n`` in the test part: round(n / 5), halves to even."""
    return round(n / 5)


def fewshot_guide_size(n: int) -> int:
    """Images of a class of ``n`` in the guide pool: half of what the test part leaves, halves to even."""
    return round((n - fewshot_test_size(n)) / 2)


def partition_domain(table: pd.DataFrame, domain: str, partition_seed: int = PARTITION_SEED) -> pd.DataFrame:
    """Every image of a domain in ``test``, ``guide`` or ``expert`` (column ``pool``), per class: the
    permutation seeded with (partition_seed, "partition-40-40-20", domain, class) gives its first
    :func:`fewshot_test_size` to test, the next :func:`fewshot_guide_size` to the guide pool, the rest to the
    expert pool. Returns columns path, class_id, pool in (class_id, path) order."""

    def sizes(n: int) -> tuple[tuple[str, int], ...]:
        test, guide = fewshot_test_size(n), fewshot_guide_size(n)
        return ("test", test), ("guide", guide), ("expert", n - test - guide)

    return _assign_parts(table, domain, partition_seed, "partition-40-40-20", sizes)


def fewshot_splits(
    suite: Suite,
    tables: Mapping[str, pd.DataFrame],
    target: str,
    shots: int,
    seed: int,
    partition_seed: int = PARTITION_SEED,
    partitions: Mapping[str, pd.DataFrame] | None = None,
) -> TaskSplits:
    """The expert, guide and test splits of the task targeting ``target`` at ``shots`` shots and ``seed``.

    ``partitions`` may give the :func:`partition_domain` result of each domain (a caller building many
    configurations partitions once). The sources' k-shot samples come from their expert and guide pools, the
    test split is the target's whole test part.
    """
    if shots < 1:
        raise ProtocolError(f"shots must be a positive number of images per class, got {shots}")
    task = suite.task(target)
    given = partitions or {}
    _needed(suite, task, {**tables, **given})
    parts = {d: given[d] if d in given else partition_domain(tables[d], d, partition_seed)
             for d in (task.target, *task.sources)}
    classes = task_classes(suite, task, tables)
    sampled: dict[str, list[pd.DataFrame]] = {pool: [] for pool in POOLS}
    for domain in task.sources:
        drawn = draw_shots(restrict(parts[domain].loc[parts[domain]["pool"] != "test"], classes), domain, shots, seed)
        for pool in POOLS:
            sampled[pool].append(_split_rows(drawn.loc[drawn["pool"] == pool], domain, classes))
    target_part = parts[task.target]
    test = _split_rows(target_part.loc[target_part["pool"] == "test"], task.target, classes)
    splits = {"expert": _by_domain_label_path(sampled["expert"]), "guide": _by_domain_label_path(sampled["guide"]),
              "test": _by_domain_label_path([test])}
    return TaskSplits(FEWSHOT, task, shots, seed, classes, MappingProxyType(splits))


def _assemble_40_40_20(
    suite: Suite, tables: Mapping[str, pd.DataFrame], tasks: Sequence[Task], *, shots: Sequence[int],
    seeds: Sequence[int], partition_seed: int, env_indices: Mapping[str, int],
) -> dict[str, TaskSplits]:
    domains = [d for d in suite.domain_ids if any(d in (t.target, *t.sources) for t in tasks) and d in tables]
    partitions = {d: partition_domain(tables[d], d, partition_seed) for d in domains}
    return {
        config_name(task.name, FEWSHOT, shots=k, seed=s): fewshot_splits(
            suite, tables, task.target, k, s, partition_seed, partitions
        )
        for task, k, s in configurations(FEWSHOT, tasks, shots, seeds)
    }


# --- domainbed-80-20: the standard suites' full ----------------------------------------------------------------


def domainbed_seed(trial_seed: int, env_index: int) -> int:
    """DomainBed's ``misc.seed_hash(trial_seed, env_index)``: an md5 of the tuple's text, modulo 2**31."""
    return int(hashlib.md5(str((int(trial_seed), int(env_index))).encode("utf-8")).hexdigest(), 16) % (2**31)


def env_indices(folders: Mapping[str, str]) -> dict[str, int]:
    """DomainBed's environment index of each domain: the position of its folder name among the sorted folder
    names of the suite's domains (domain id -> folder name in, domain id -> index out)."""
    ordered = sorted((folder, domain) for domain, folder in folders.items())
    return {domain: index for index, (_, domain) in enumerate(ordered)}


def imagefolder_order(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` in torchvision ImageFolder order, with a fresh index (the ImageFolder sample index).

    ImageFolder lists the sorted class folders, and within each visits the folders in sorted order of their
    full path and their files in sorted order. For a path ``class/sub.../file``, that is the order of
    (class, the folders between class and file joined by ``/``, file).
    """
    check_scan_table(table, "domain table")
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


def full_split_domain(table: pd.DataFrame, domain: str, trial_seed: int, env_index: int) -> pd.DataFrame:
    """A domain's images in ImageFolder order with column ``pool``: ``holdout`` (DomainBed's out split) or
    ``in`` (its in split)."""
    ordered = imagefolder_order(table)[list(SCAN_COLUMNS)].copy()
    pools = np.full(len(ordered), "in", dtype=object)
    pools[holdout_indices(len(ordered), trial_seed, env_index)] = "holdout"
    ordered["pool"] = pools
    return ordered


def full_splits(
    suite: Suite,
    tables: Mapping[str, pd.DataFrame],
    target: str,
    trial_seed: int,
    env_index: Mapping[str, int],
    domain_splits: Mapping[str, pd.DataFrame] | None = None,
) -> TaskSplits:
    """The train, validation and test splits of the task targeting ``target`` under DomainBed's protocol.

    train: the sources' in splits (80%); validation: the sources' held-out splits (20%); test: the target's in
    split (80%), which DomainBed's training-domain validation scores. ``env_index`` gives each domain's
    environment index (:func:`env_indices`). Rows are in ImageFolder order per domain, domains in the task's
    order. ``domain_splits`` may give each domain's :func:`full_split_domain` result at this trial seed (a
    domain's split does not depend on the task, so a caller splits it once).
    """
    task = suite.task(target)
    _needed(suite, task, {**tables, **(domain_splits or {})})
    classes = task_classes(suite, task, tables)

    def split_of(domain: str) -> pd.DataFrame:
        if domain_splits is not None and domain in domain_splits:
            return domain_splits[domain]
        return full_split_domain(tables[domain], domain, trial_seed, env_index[domain])

    train, validation = [], []
    for domain in task.sources:
        split = restrict(split_of(domain), classes)
        train.append(_split_rows(split.loc[split["pool"] == "in"], domain, classes, "train"))
        validation.append(_split_rows(split.loc[split["pool"] == "holdout"], domain, classes, "validation"))
    target_split = restrict(split_of(task.target), classes)
    test = _split_rows(target_split.loc[target_split["pool"] == "in"], task.target, classes, "test")
    splits = {"train": _in_order(train), "validation": _in_order(validation), "test": _in_order([test])}
    return TaskSplits(FULL, task, None, trial_seed, classes, MappingProxyType(splits))


def _assemble_domainbed(
    suite: Suite, tables: Mapping[str, pd.DataFrame], tasks: Sequence[Task], *, shots: Sequence[int],
    seeds: Sequence[int], partition_seed: int, env_indices: Mapping[str, int],
) -> dict[str, TaskSplits]:
    domains = [d for d in suite.domain_ids if any(d in (t.target, *t.sources) for t in tasks) and d in tables]
    by_seed = {s: {d: full_split_domain(tables[d], d, s, env_indices[d]) for d in domains} for s in set(seeds)}
    return {
        config_name(task.name, FULL, seed=s): full_splits(suite, tables, task.target, s, env_indices, by_seed[s])
        for task, _, s in configurations(FULL, tasks, (), seeds)
    }


# --- the split protocols as the suites offer them ---------------------------------------------------------------

Assembler = Callable[..., dict]


@dataclass(frozen=True)
class SplitProtocol:
    """One way of splitting a suite's domains into configurations, offered by a suite under a protocol name."""

    id: str
    name: str
    """:data:`FEWSHOT` or :data:`FULL`."""
    version: str
    """Version of the split definition; any change to what a split contains bumps it."""
    assemble: Assembler
    """``assemble(suite, tables, tasks, *, shots, seeds, partition_seed, env_indices)``: configuration name ->
    :class:`TaskSplits` of every (task, shots, seed), in output order."""
    shot_choices: tuple[int, ...] | None = None
    """The numbers of shots the protocol defines; None: any positive number."""

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names of one configuration."""
        return PROTOCOL_SPLITS[self.name]

    def content(self, shots: Sequence[int], partition_seed: int) -> dict[str, object]:
        """The parameters, beyond tasks and seeds, that decide what this protocol's configurations hold."""
        if self.name == FEWSHOT:
            return {"shots": sorted(set(shots)), "partition_seed": partition_seed}
        return {"holdout_fraction": HOLDOUT_FRACTION}


SPLIT_PROTOCOLS: Mapping[str, SplitProtocol] = MappingProxyType({
    p.id: p for p in (
        SplitProtocol("guide-expert-halves", FEWSHOT, "1.0", _assemble_halves, shot_choices=(1, 2, 4, 8, 16)),
        SplitProtocol("fewshot-40-40-20", FEWSHOT, "1.0", _assemble_40_40_20),
        SplitProtocol("domainbed-80-20", FULL, "1.0", _assemble_domainbed),
    )
})
"""Split protocol id -> its definition."""


def task_statistics(
    suite: Suite, tables: Mapping[str, pd.DataFrame], tasks: Iterable[str] | None = None
) -> pd.DataFrame:
    """Per task (default: every task of the suite): classes, target images, the images of each source
    domain restricted to the task's classes, and their total (``docs/protocol.md#statistics``).

    A domain is a column when it is a source of some task of the suite; a cell of a domain that is not a
    source of the row's task holds ``-``. A task whose target was not scanned is left out, a source not
    scanned counts 0. On the complete ImageNet releases this is the paper's Table 7.
    """
    chosen = [suite.task(t) for t in tasks] if tasks is not None else list(suite.tasks())
    sources = [d for d in suite.domain_ids if any(d in t.sources for t in suite.tasks())]
    rows = []
    for task in chosen:
        if task.target not in tables:
            continue
        classes = task_classes(suite, task, tables)
        row: dict[str, object] = {"task": task.name, "target": task.target, "classes": len(classes),
                                  "target_images": len(tables[task.target])}
        total = 0
        for domain in sources:
            if domain not in task.sources:
                row[domain] = "-"
                continue
            count = int(tables[domain]["class_id"].isin(classes).sum()) if domain in tables else 0
            row[domain] = count
            total += count
        row["source_total"] = total
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "target", "classes", "target_images", *sources, "source_total"])
