"""The ImageNet-DG split protocol as pure functions: domain tables in, split tables out, no I/O.

A domain table is a DataFrame with columns ``path`` (relative to the release root) and ``wnid``. The protocol:

1. Tasks: one target domain each; the sources are always ImageNet train, ImageNet-Sketch and ImageNetV2,
   restricted to the target's classes. Labels index the sorted wnids of the target's class set.
2. Per source domain and class, the images (ordered by path) are shuffled by a generator seeded with the
   fixed *partition seed* and cut in two halves: the guide pool gets ``round(n / 2)`` images (half to even),
   the expert pool the rest. The halves depend on nothing but the partition seed, the domain, the class and
   the set of paths, so every task and every few-shot seed sees the same halves.
3. From each pool, k images per class are drawn without replacement by a generator seeded with the few-shot
   seed (all of them where the pool holds fewer than k). The draw takes the first k of one seeded
   permutation, so the samples are nested: the 1-shot sample is inside the 2-shot sample, and so on.
4. The target's test split is the whole target domain.

Every generator is seeded from the seed and the names of what it shuffles (never from positions or from the
order in which things are listed), so results are identical on every machine and for every listing order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imagenet_dg.errors import ProtocolError

PROTOCOL_VERSION = "1.0"
"""Version of the split definition. Any change to what a split contains bumps it."""

PARTITION_SEED = 0
"""Seed of the guide/expert halves. Part of the benchmark definition: changing it defines another benchmark."""

SHOT_CHOICES = (1, 2, 4, 8, 16)
DEFAULT_SHOTS = (16,)
DEFAULT_SEEDS = (1, 2, 3)

SOURCE_DOMAINS = ("imagenet", "imagenet-sketch", "imagenetv2")
POOLS = ("expert", "guide")
SPLITS = ("expert", "guide", "test")


@dataclass(frozen=True)
class Task:
    """One ImageNet-DG task: a target domain and the source domains trained on."""

    name: str
    target: str
    sources: tuple[str, ...] = SOURCE_DOMAINS


TASKS: Mapping[str, Task] = {
    "a": Task("a", "imagenet-a"),
    "i": Task("i", "imagenet-val"),
    "r": Task("r", "imagenet-r"),
}


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ProtocolError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


def config_name(task: str, shots: int, seed: int) -> str:
    """Name of the dataset configuration holding ``task`` at ``shots`` shots and few-shot ``seed``."""
    return f"{task}-{shots}shot-seed{seed}"


def _name_entropy(name: str) -> int:
    # A stable 64-bit integer for a string: Python's hash() is salted per process, so it cannot be used.
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def seeded_generator(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and the names of what it shuffles, identical on every machine."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(_name_entropy(n) for n in names)]))


_generator = seeded_generator


def _check_table(table: pd.DataFrame, what: str) -> None:
    missing = {"path", "wnid"} - set(table.columns)
    if missing:
        raise ProtocolError(f"{what}: expected columns 'path' and 'wnid', missing {sorted(missing)}")
    if table["path"].duplicated().any():
        duplicates = table.loc[table["path"].duplicated(), "path"].head(3).tolist()
        raise ProtocolError(f"{what}: paths must be unique, found repeats such as {duplicates}")


def _class_groups(table: pd.DataFrame) -> Iterable[tuple[str, np.ndarray]]:
    """Yield (wnid, row positions ordered by path) for each class, classes in sorted order."""
    if len(table) == 0:
        return
    # Order rows by (wnid, path) with plain code-point string order, whatever order the table came in.
    keyed = pd.DataFrame({"wnid": table["wnid"].to_numpy(), "path": table["path"].to_numpy()})
    order = keyed.sort_values(["wnid", "path"], kind="stable").index.to_numpy()
    sorted_wnids = keyed["wnid"].to_numpy(dtype=object)[order]
    starts = np.flatnonzero(np.r_[True, sorted_wnids[1:] != sorted_wnids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        yield str(sorted_wnids[start]), order[start:end]


def task_classes(task: Task, target_table: pd.DataFrame) -> tuple[str, ...]:
    """Sorted wnids of the target's class set: the classes present in the scanned target domain."""
    _check_table(target_table, f"target {task.target}")
    return tuple(sorted(set(target_table["wnid"].tolist())))


def restrict(table: pd.DataFrame, wnids: Sequence[str]) -> pd.DataFrame:
    """Rows of ``table`` whose class is in ``wnids``, in the original order, with a fresh index."""
    return table.loc[table["wnid"].isin(list(wnids))].reset_index(drop=True)


def label_column(table: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Label of every row: the position of its wnid in ``classes`` (which must be sorted and cover them)."""
    if list(classes) != sorted(classes):
        raise ProtocolError("a task's classes must be in sorted-wnid order")
    index = {wnid: i for i, wnid in enumerate(classes)}
    try:
        return np.fromiter((index[w] for w in table["wnid"]), dtype=np.int64, count=len(table))
    except KeyError as error:
        raise ProtocolError(f"wnid {error.args[0]} is not among the task's classes") from None


def guide_size(n: int) -> int:
    """Images of a class of ``n`` that go to the guide pool: round(n / 2), halves to even."""
    return round(n / 2)


def split_pools(table: pd.DataFrame, domain: str, partition_seed: int = PARTITION_SEED) -> pd.DataFrame:
    """Assign every image of a source domain to the ``guide`` or ``expert`` pool (column ``pool``).

    Per class, the images ordered by path are permuted by a generator seeded with (partition_seed, domain,
    wnid); the first round(n / 2) of the permutation form the guide pool. Returns the table with columns
    path, wnid, pool, in (wnid, path) order.
    """
    _check_table(table, f"domain {domain}")
    frames_order: list[np.ndarray] = []
    pools: list[np.ndarray] = []
    for wnid, rows in _class_groups(table):
        permutation = _generator(partition_seed, "partition", domain, wnid).permutation(len(rows))
        pool = np.full(len(rows), "expert", dtype=object)
        pool[permutation[: guide_size(len(rows))]] = "guide"
        frames_order.append(rows)
        pools.append(pool)
    if not frames_order:
        return pd.DataFrame({"path": [], "wnid": [], "pool": []}, dtype=object)
    order = np.concatenate(frames_order)
    result = table.iloc[order][["path", "wnid"]].reset_index(drop=True)
    result["pool"] = np.concatenate(pools)
    return result


def draw_shots(pools: pd.DataFrame, domain: str, shots: int, seed: int) -> pd.DataFrame:
    """The k-shot sample of every (class, pool) of a domain whose pools were assigned by :func:`split_pools`.

    Per (class, pool), the members ordered by path are permuted by a generator seeded with (seed, domain,
    wnid, pool) and the first ``shots`` are kept (all of them where fewer). Rows keep their columns and come
    back in (wnid, pool, path) order.
    """
    if shots < 1:
        raise ProtocolError(f"shots must be a positive number of images per class, got {shots}")
    if "pool" not in pools.columns:
        raise ProtocolError(f"domain {domain}: expected a 'pool' column from split_pools")
    keep: list[np.ndarray] = []
    for pool in POOLS:
        members = pools.loc[pools["pool"] == pool]
        positions = np.flatnonzero((pools["pool"] == pool).to_numpy())
        for wnid, rows in _class_groups(members):
            permutation = _generator(seed, "shots", domain, wnid, pool).permutation(len(rows))
            chosen = np.sort(rows[permutation[:shots]])
            keep.append(positions[chosen])
    if not keep:
        return pools.iloc[[]].reset_index(drop=True)
    selected = pools.iloc[np.concatenate(keep)]
    return selected.sort_values(["wnid", "pool", "path"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class TaskSplits:
    """The three splits of one task at one (shots, seed)."""

    task: Task
    shots: int
    seed: int
    classes: tuple[str, ...]
    expert: pd.DataFrame
    guide: pd.DataFrame
    test: pd.DataFrame

    def split(self, name: str) -> pd.DataFrame:
        """The split called ``name`` (one of :data:`SPLITS`)."""
        if name not in SPLITS:
            raise ProtocolError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _labelled(table: pd.DataFrame, domain: str, classes: Sequence[str], pool: str | None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "path": table["path"].to_numpy(dtype=object),
            "domain": domain,
            "wnid": table["wnid"].to_numpy(dtype=object),
            "label": label_column(table, classes),
            "pool": table["pool"].to_numpy(dtype=object) if pool is None else pool,
        }
    )
    return frame


def _ordered(frames: list[pd.DataFrame], domain_order: Sequence[str]) -> pd.DataFrame:
    columns = ["path", "domain", "wnid", "label", "pool"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "label" else object) for c in columns})
    frame = pd.concat(frames, ignore_index=True)
    rank = frame["domain"].map({d: i for i, d in enumerate(domain_order)})
    frame = frame.assign(_rank=rank).sort_values(["_rank", "label", "path"], kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)[columns]


def assemble_task(
    task: Task,
    tables: Mapping[str, pd.DataFrame],
    shots: int,
    seed: int,
    partition_seed: int = PARTITION_SEED,
    samples: Mapping[str, pd.DataFrame] | None = None,
) -> TaskSplits:
    """The expert, guide and test splits of ``task`` at ``shots`` shots and few-shot ``seed``.

    ``tables`` maps domain id -> domain table and must hold the target and every source. ``samples`` may give,
    per source, the already-drawn :func:`draw_shots` result over all of the domain's classes at this
    (shots, seed, partition_seed). A class's draw depends on neither the task nor the other classes, so a
    caller building several tasks draws once per domain and each task keeps its own classes. Rows are
    ordered by (source order, label, path); the test split by (label, path).
    """
    missing = [d for d in (task.target, *task.sources) if d not in tables]
    if missing:
        raise ProtocolError(f"task {task.name} needs the domain tables of {', '.join(missing)}")
    classes = task_classes(task, tables[task.target])
    sampled: dict[str, list[pd.DataFrame]] = {"expert": [], "guide": []}
    for domain in task.sources:
        if samples is not None:
            sample = restrict(samples[domain], classes)
        else:
            domain_pools = restrict(split_pools(tables[domain], domain, partition_seed), classes)
            sample = draw_shots(domain_pools, domain, shots, seed)
        for pool in POOLS:
            sampled[pool].append(_labelled(sample.loc[sample["pool"] == pool], domain, classes, None))
    test = _labelled(tables[task.target], task.target, classes, "test")
    return TaskSplits(
        task=task,
        shots=shots,
        seed=seed,
        classes=classes,
        expert=_ordered(sampled["expert"], task.sources),
        guide=_ordered(sampled["guide"], task.sources),
        test=_ordered([test], [task.target]),
    )


STATISTICS_COLUMNS = ("task", "target", "classes", "target_images", *SOURCE_DOMAINS, "source_total")


def task_statistics(tables: Mapping[str, pd.DataFrame], tasks: Iterable[str] = tuple(TASKS)) -> pd.DataFrame:
    """Per task: classes, target images, images of each source restricted to the target's classes, total.

    On the complete official releases this is SPEC section 2's table (the paper's Table 7).
    """
    rows = []
    for name in tasks:
        task = get_task(name)
        if task.target not in tables:
            continue
        classes = task_classes(task, tables[task.target])
        row: dict[str, object] = {
            "task": task.name,
            "target": task.target,
            "classes": len(classes),
            "target_images": len(tables[task.target]),
        }
        total = 0
        for domain in SOURCE_DOMAINS:
            count = int(tables[domain]["wnid"].isin(classes).sum()) if domain in tables else 0
            row[domain] = count
            total += count
        row["source_total"] = total
        rows.append(row)
    return pd.DataFrame(rows, columns=list(STATISTICS_COLUMNS))
