"""Scale benchmark: scanning the full-size releases and building the default manifests.

What it measures. A tree of placeholder files (empty, or hard links to one tiny JPEG) is laid out exactly
as the six official releases extract (about 1.43 million files, every folder and file name in its official
form, per-class counts that reproduce the published task table). In a fresh Python process, the benchmark
then times

1. ``scan_releases`` of all six domains, found under the tree's root as ``imagenet-dg build --root`` finds
   them, and
2. ``build`` with ``BuildOptions()`` defaults (tasks a, i, r; 16 shots; seeds 1, 2, 3; no ``--verify``)
   into a fresh output folder,

and reports the wall time of each, their sum and the process's peak resident memory. The figures of
``task_statistics`` over what was scanned are compared, cell by cell, with the published task table.

Targets (a requirement of the project): scan plus build under 60 seconds and under 2 GB (2 * 10**9 bytes)
of peak memory on a 2-core machine. Images are never opened without ``--verify``, so placeholder files
measure the same work as the real releases; the directory entries are warm in the page cache after the tree
is made (a first scan of a cold disk reads them from the device and takes longer).

Usage::

    python benchmarks/build_scale.py [--tree DIR] [--keep] [--hardlink] [--runs N] [--json FILE]

``--tree`` reuses a complete tree made earlier (recognised by its marker file) and keeps it; without it
the tree is made in a temporary folder and removed at the end unless ``--keep``. The exit status is 0 when
every published cell is reproduced and both targets are met, 1 when one is not, 2 when the tree cannot be
made or reused where asked.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.domains import DOMAINS
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.taxonomy import Taxonomy, imagenetv2_labels, load_taxonomy, val_labels

TARGET_SECONDS = 60.0
"""Scan plus build must finish within this many seconds."""
TARGET_PEAK_BYTES = 2 * 10**9
"""Peak resident memory of the process that scans and builds must stay below this."""

PUBLISHED_STATISTICS: Mapping[str, Mapping[str, object]] = {
    "a": {"target": "imagenet-a", "classes": 200, "target_images": 7_500, "imagenet": 259_906,
          "imagenet-sketch": 10_169, "imagenetv2": 2_000, "source_total": 272_075},
    "i": {"target": "imagenet-val", "classes": 1000, "target_images": 50_000, "imagenet": 1_281_167,
          "imagenet-sketch": 50_889, "imagenetv2": 10_000, "source_total": 1_342_056},
    "r": {"target": "imagenet-r", "classes": 200, "target_images": 30_000, "imagenet": 258_951,
          "imagenet-sketch": 10_152, "imagenetv2": 2_000, "source_total": 271_103},
}
"""The published task table (GuiDG paper, appendix Table 7): the reference the scan must reproduce."""

STATISTICS_CELLS = ("target", "classes", "target_images", "imagenet", "imagenet-sketch", "imagenetv2",
                    "source_total")

RELEASE_FOLDERS: Mapping[str, str] = {domain.id: domain.folder for domain in DOMAINS.values()}
"""Domain id -> the folder name its official release extracts to."""

TRAIN_FULL_CLASS = 1300
"""Images of a complete ILSVRC-2012 training class (most classes)."""
TRAIN_SMALLEST_CLASS = 732
"""Images of the smallest ILSVRC-2012 training class."""
SKETCH_PER_CLASS = 50
"""Images of an ImageNet-Sketch class; some classes hold one more."""
RENDITIONS = ("art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc", "origami",
              "painting", "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame")
"""The rendition kinds that prefix ImageNet-R file names."""

CONSTRUCTION_VERSION = 1
"""Version of the tree's construction; a tree made by another version is not reused."""
MARKER_DIR = ".scale-tree"
COMPLETE_MARKER = "complete.json"
STARTED_MARKER = "started.json"
_LINKS_PER_SOURCE = 60_000  # ext4 allows 65,000 hard links to one inode
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC  # no O_TRUNC: re-creating a file is a no-op


class ScaleTreeError(ImageNetDGError):
    """The scale tree cannot be made or reused where asked, or its counts break the published table."""


# ---------------------------------------------------------------------------------------------------------
# Per-class counts, derived from the published table.


def _published(task: str, cell: str) -> int:
    value = PUBLISHED_STATISTICS[task][cell]
    if not isinstance(value, int):
        raise ScaleTreeError(f"published cell {cell!r} of task {task!r} is {value!r}, not a number of images")
    return value


def _hash_order(wnids: Sequence[str], salt: str) -> list[str]:
    """``wnids`` in a fixed pseudo-random order (SHA-256 of salt and wnid), independent of the input order."""
    return sorted(wnids, key=lambda w: hashlib.sha256(f"{salt}:{w}".encode()).hexdigest())


def class_groups(taxonomy: Taxonomy) -> dict[str, tuple[str, ...]]:
    """The 1000 wnids cut into the four groups the A and R class sets make, each sorted."""
    a, r = set(taxonomy.imagenet_a), set(taxonomy.imagenet_r)
    return {
        "a-and-r": tuple(w for w in taxonomy.wnids if w in a and w in r),
        "a-only": tuple(w for w in taxonomy.wnids if w in a and w not in r),
        "r-only": tuple(w for w in taxonomy.wnids if w in r and w not in a),
        "neither": tuple(w for w in taxonomy.wnids if w not in a and w not in r),
    }


def _tapering_shortfalls(shortfall: int, wnids: Sequence[str], cap: int, salt: str) -> dict[str, int]:
    """Spread ``shortfall`` missing images over the first m classes of a hash order, tapering linearly.

    Class j of the m short ones misses about ``2 * shortfall * (m - j) / (m * (m + 1))`` images, with
    m = ceil(2 * shortfall / cap) so that no class misses more than ``cap``; integer remainders go to the
    first classes. Classes not listed miss nothing.
    """
    if shortfall == 0:
        return {}
    m = -(-2 * shortfall // cap)
    if m > len(wnids):
        raise ScaleTreeError(f"cannot spread {shortfall} missing images over {len(wnids)} classes of at most {cap}")
    weights = [m - j for j in range(m)]
    total = sum(weights)
    parts = [shortfall * w // total for w in weights]
    for j in range(shortfall - sum(parts)):
        parts[j] += 1
    return dict(zip(_hash_order(wnids, salt)[:m], parts))


def train_counts(taxonomy: Taxonomy) -> dict[str, int]:
    """Images per ILSVRC-2012 training class, reproducing the published totals over all, A and R classes.

    Construction: every class starts complete (1300 images). The published totals fix how many images are
    missing over all classes (18,833), over the A classes (94) and over the R classes (1,049). The 86 classes
    in both sets take half of A's shortfall (47), the other A classes the rest (47), the other R classes what
    R still misses (1,002), the 686 classes in neither set the remainder (17,737). Within a group the
    shortfall tapers linearly over a few classes (``_tapering_shortfalls``), none dropping below 732 images.
    """
    groups = class_groups(taxonomy)
    short_all = TRAIN_FULL_CLASS * len(taxonomy.wnids) - _published("i", "imagenet")
    short_a = TRAIN_FULL_CLASS * len(taxonomy.imagenet_a) - _published("a", "imagenet")
    short_r = TRAIN_FULL_CLASS * len(taxonomy.imagenet_r) - _published("r", "imagenet")
    shortfalls = {"a-and-r": short_a // 2}
    shortfalls["a-only"] = short_a - shortfalls["a-and-r"]
    shortfalls["r-only"] = short_r - shortfalls["a-and-r"]
    shortfalls["neither"] = short_all - shortfalls["a-and-r"] - shortfalls["a-only"] - shortfalls["r-only"]
    counts = {w: TRAIN_FULL_CLASS for w in taxonomy.wnids}
    cap = TRAIN_FULL_CLASS - TRAIN_SMALLEST_CLASS
    for group, wnids in groups.items():
        for wnid, missing in _tapering_shortfalls(shortfalls[group], wnids, cap, f"train-{group}").items():
            counts[wnid] -= missing
    return counts


def sketch_counts(taxonomy: Taxonomy) -> dict[str, int]:
    """Images per ImageNet-Sketch class (50 or 51), reproducing the published totals over all, A and R classes.

    Construction: the published totals say 889 classes hold 51 images, 169 of them A classes and 152 R
    classes. Of the 86 classes in both sets, the share 889/1000 (rounded: 76) hold 51, kept within what the
    other groups can absorb; then 169 - 76 = 93 of the other A classes, 152 - 76 = 76 of the other R classes
    and the remaining 644 of the classes in neither set. Within a group the 51-image classes are the first
    ones of a hash order.
    """
    groups = class_groups(taxonomy)
    sizes = {g: len(w) for g, w in groups.items()}
    base = SKETCH_PER_CLASS
    extra_all = _published("i", "imagenet-sketch") - base * len(taxonomy.wnids)
    extra_a = _published("a", "imagenet-sketch") - base * len(taxonomy.imagenet_a)
    extra_r = _published("r", "imagenet-sketch") - base * len(taxonomy.imagenet_r)
    # Each group's number of 51-image classes must lie between 0 and the group's size.
    lowest = max(0, extra_a - sizes["a-only"], extra_r - sizes["r-only"], extra_a + extra_r - extra_all)
    highest = min(sizes["a-and-r"], extra_a, extra_r, sizes["neither"] - extra_all + extra_a + extra_r)
    both = min(max(round(sizes["a-and-r"] * extra_all / len(taxonomy.wnids)), lowest), highest)
    extras = {"a-and-r": both, "a-only": extra_a - both, "r-only": extra_r - both}
    extras["neither"] = extra_all - extra_a - extra_r + both
    counts = {w: base for w in taxonomy.wnids}
    for group, wnids in groups.items():
        if not 0 <= extras[group] <= len(wnids):
            raise ScaleTreeError(f"cannot give {extras[group]} of the {len(wnids)} {group} Sketch classes 51 images")
        for wnid in _hash_order(wnids, f"sketch-{group}")[: extras[group]]:
            counts[wnid] += 1
    return counts


def _even_counts(total: int, wnids: Sequence[str], salt: str) -> dict[str, int]:
    """``total`` images spread as evenly as possible; the first classes of a hash order take the remainder."""
    base, extra = divmod(total, len(wnids))
    bigger = set(_hash_order(wnids, salt)[:extra])
    return {w: base + (w in bigger) for w in wnids}


def _label_counts(labels: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for wnid in labels.values():
        counts[wnid] = counts.get(wnid, 0) + 1
    return counts


def release_counts(taxonomy: Taxonomy) -> dict[str, dict[str, int]]:
    """Domain id -> wnid -> images of the class in the scale tree.

    ILSVRC-2012 train and ImageNet-Sketch follow ``train_counts`` and ``sketch_counts``; ImageNet-A (7,500)
    and ImageNet-R (30,000) are spread evenly over their 200 classes (37 or 38, and 150); the validation set
    and ImageNetV2 are their real label tables (50 and 10 per class).
    """
    return {
        "imagenet": train_counts(taxonomy),
        "imagenet-val": _label_counts(val_labels()),
        "imagenet-a": _even_counts(_published("a", "target_images"), taxonomy.imagenet_a, "a"),
        "imagenet-r": _even_counts(_published("r", "target_images"), taxonomy.imagenet_r, "r"),
        "imagenet-sketch": sketch_counts(taxonomy),
        "imagenetv2": _label_counts(imagenetv2_labels()),
    }


def expected_statistics(counts: Mapping[str, Mapping[str, int]], taxonomy: Taxonomy) -> dict[str, dict[str, Any]]:
    """The task table that per-class ``counts`` give, computed from the counts alone."""
    targets = {"a": ("imagenet-a", taxonomy.imagenet_a), "i": ("imagenet-val", taxonomy.wnids),
               "r": ("imagenet-r", taxonomy.imagenet_r)}
    table: dict[str, dict[str, Any]] = {}
    for task, (target, wnids) in targets.items():
        row: dict[str, Any] = {"target": target, "classes": len(wnids),
                                  "target_images": sum(counts[target].values())}
        for source in ("imagenet", "imagenet-sketch", "imagenetv2"):
            row[source] = sum(counts[source].get(w, 0) for w in wnids)
        row["source_total"] = sum(row[s] for s in ("imagenet", "imagenet-sketch", "imagenetv2"))
        table[task] = row
    return table


def check_counts(counts: Mapping[str, Mapping[str, int]], taxonomy: Taxonomy) -> None:
    """Raise ScaleTreeError unless the counts reproduce every published cell and stay in the real ranges."""
    problems: list[str] = []
    table = expected_statistics(counts, taxonomy)
    for task, published in PUBLISHED_STATISTICS.items():
        for cell, value in published.items():
            if table[task][cell] != value:
                problems.append(f"task {task} {cell}: the counts give {table[task][cell]}, published {value}")
    class_sets = {"imagenet": taxonomy.wnids, "imagenet-val": taxonomy.wnids, "imagenet-a": taxonomy.imagenet_a,
                  "imagenet-r": taxonomy.imagenet_r, "imagenet-sketch": taxonomy.wnids, "imagenetv2": taxonomy.wnids}
    for domain, wnids in class_sets.items():
        if set(counts[domain]) != set(wnids):
            problems.append(f"{domain}: counts cover {len(counts[domain])} classes, expected its {len(wnids)}")
    ranges = {"imagenet": (TRAIN_SMALLEST_CLASS, TRAIN_FULL_CLASS),
              "imagenet-sketch": (SKETCH_PER_CLASS, SKETCH_PER_CLASS + 1), "imagenetv2": (10, 10),
              "imagenet-val": (50, 50)}
    for domain, (low, high) in ranges.items():
        values = counts[domain].values()
        if min(values) < low or max(values) > high:
            problems.append(f"{domain}: classes hold {min(values)}..{max(values)} images, expected {low}..{high}")
    full = sum(1 for n in counts["imagenet"].values() if n == TRAIN_FULL_CLASS)
    if full <= len(taxonomy.wnids) // 2:
        problems.append(f"imagenet: only {full} classes hold {TRAIN_FULL_CLASS} images, expected most of them")
    if problems:
        raise ScaleTreeError("the scale tree's per-class counts break the published table:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------------
# File names, as each release names its files.


def _a_name(name: str) -> str:
    # ImageNet-A file names embed readable class names; a "/" in a name cannot appear in a file name.
    return " ".join(name.replace("/", " ").split())


def class_files(domain: str, wnid: str, n: int, taxonomy: Taxonomy) -> tuple[str, list[str]]:
    """(class folder relative to the release folder, file names in it) of class ``wnid`` with ``n`` images.

    ImageNetV2 uses its real image ids in the integer folder of the class index (the flat validation folder
    is laid out by ``tree_plan``). Elsewhere the names follow the release's pattern:
    ``<wnid>_<k>.JPEG`` with k spread over 1..48,064 (several digit counts, so string and number order
    differ), ImageNet-A's ``<score>_<predicted name> _ <true name>_<score>.jpg`` with spaces,
    ``<rendition>_<k>.jpg`` and ``sketch_<k>.JPEG``.
    """
    if domain == "imagenet":
        return wnid, [f"{wnid}_{1 + 37 * k}.JPEG" for k in range(n)]
    if domain == "imagenetv2":
        ids = _v2_ids()[wnid]
        return str(taxonomy.index(wnid)), [f"{image_id}.jpeg" for image_id in ids[:n]]
    if domain == "imagenet-a":
        # The file names record a wrong prediction: the predicted class is another A class.
        others = [w for w in taxonomy.imagenet_a if w != wnid]
        true = _a_name(taxonomy.names[wnid])
        names = []
        for k in range(n):
            digest = hashlib.sha256(f"a:{wnid}:{k}".encode()).digest()
            predicted = _a_name(taxonomy.names[others[digest[0] % len(others)]])
            score = int.from_bytes(digest[1:4], "little") % 1_000_000
            names.append(f"0.{k:06d}_{predicted} _ {true}_0.{score:06d}.jpg")
        return wnid, names
    if domain == "imagenet-r":
        return wnid, [f"{RENDITIONS[k % len(RENDITIONS)]}_{k}.jpg" for k in range(n)]
    if domain == "imagenet-sketch":
        return wnid, [f"sketch_{k}.JPEG" for k in range(n)]
    raise ScaleTreeError(f"no file naming for domain {domain!r}; expected one of {', '.join(RELEASE_FOLDERS)}")


@functools.cache
def _v2_ids() -> Mapping[str, list[str]]:
    """wnid -> its ImageNetV2 image ids, sorted."""
    ids: dict[str, list[str]] = {}
    for image_id in sorted(imagenetv2_labels()):
        ids.setdefault(imagenetv2_labels()[image_id], []).append(image_id)
    return ids


def tree_plan(counts: Mapping[str, Mapping[str, int]], taxonomy: Taxonomy) -> list[tuple[str, list[str]]]:
    """(folder relative to the tree root, image file names) of every folder of the tree, in a fixed order."""
    plan: list[tuple[str, list[str]]] = []
    for domain, release in RELEASE_FOLDERS.items():
        if domain == "imagenet-val":
            wanted = set(counts[domain])
            plan.append((release, [n for n in sorted(val_labels()) if val_labels()[n] in wanted]))
            continue
        for wnid in sorted(counts[domain]):
            folder, names = class_files(domain, wnid, counts[domain][wnid], taxonomy)
            plan.append((f"{release}/{folder}", names))
    return plan


def construction_digest(plan: Sequence[tuple[str, list[str]]], mode: str) -> str:
    """SHA-256 identifying the tree a plan makes (every path) and how files are made (``empty``/``hardlink``)."""
    digest = hashlib.sha256(f"{CONSTRUCTION_VERSION}\t{mode}\n".encode())
    for folder, names in plan:
        for name in names:
            digest.update(f"{folder}/{name}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Making the tree.


def tiny_jpeg() -> bytes:
    """A valid 8x8 grey JPEG of a few hundred bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


class _LinkSources:
    """Hands out source files to hard-link to, a new copy once one nears the file system's link limit."""

    def __init__(self, folder: Path, data: bytes, per_source: int = _LINKS_PER_SOURCE) -> None:
        self.folder = folder
        self.data = data
        self.per_source = per_source
        self.index = -1
        self.left = 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, needed: int) -> list[tuple[str, int]]:
        """(source path, links to make from it) covering ``needed`` links."""
        taken: list[tuple[str, int]] = []
        while needed > 0:
            if self.left == 0:
                self.index += 1
                source = self.folder / f"tiny-{self.index:03d}.jpg"
                if not source.exists():
                    source.write_bytes(self.data)
                self.left = max(0, self.per_source - (source.stat().st_nlink - 1))
                continue
            count = min(needed, self.left)
            taken.append((str(self.folder / f"tiny-{self.index:03d}.jpg"), count))
            self.left -= count
            needed -= count
        return taken


def _fill_folder(folder: Path, names: Sequence[str], sources: list[tuple[str, int]] | None) -> int:
    """Create the files ``names`` in ``folder`` (empty, or hard links from ``sources``); existing ones stay."""
    folder.mkdir(parents=True, exist_ok=True)
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if sources is None:
            for name in names:
                os.close(os.open(name, _CREATE_FLAGS, 0o644, dir_fd=directory))
        else:
            position = 0
            for source, count in sources:
                for name in names[position:position + count]:
                    try:
                        os.link(source, name, dst_dir_fd=directory)
                    except FileExistsError:
                        pass
                position += count
    finally:
        os.close(directory)
    return len(names)


def _reusable(tree: Path, digest: str, mode: str) -> bool:
    """Whether ``tree`` holds a complete tree of this construction; ScaleTreeError if it is another folder."""
    markers = tree / MARKER_DIR
    for marker in (COMPLETE_MARKER, STARTED_MARKER):
        file = markers / marker
        if file.is_file():
            recorded = json.loads(file.read_text(encoding="utf-8"))
            if recorded.get("construction_sha256") != digest:
                raise ScaleTreeError(
                    f"{tree} holds a scale tree of another construction or file mode ({file} records "
                    f"construction version {recorded.get('construction_version')}, mode {recorded.get('mode')!r}; "
                    f"this run makes version {CONSTRUCTION_VERSION}, mode {mode!r}). "
                    f"Remove {tree} or pass another --tree."
                )
            return marker == COMPLETE_MARKER
    if tree.exists() and any(tree.iterdir()):
        raise ScaleTreeError(
            f"{tree} exists, is not empty and holds no {MARKER_DIR}/{COMPLETE_MARKER}: it is not a scale tree. "
            "Pass an empty or new folder as --tree."
        )
    return False


def _inside_git_repository(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if (folder / ".git").exists():
            return folder
    return None


def make_tree(tree: Path, *, hardlink: bool = False, workers: int = 4,
              progress: Callable[[str], None] = print) -> dict[str, object]:
    """Make (or finish, or reuse) the full-size scale tree under ``tree``; returns what its marker records.

    The per-class counts are checked against the published table before anything is written. Files are
    created empty, or as hard links to a few copies of one tiny JPEG with ``hardlink``. A tree interrupted
    earlier is finished; a complete one (marker ``.scale-tree/complete.json``) is reused as it is.
    """
    tree = Path(os.path.abspath(tree))
    repository = _inside_git_repository(tree)
    if repository is not None:
        raise ScaleTreeError(
            f"{tree} lies inside the git repository {repository}; 1.4 million placeholder files do not belong "
            "there. Pass a --tree outside it (for example ~/scale-tree or a folder under the system temporary folder)."
        )
    taxonomy = load_taxonomy()
    counts = release_counts(taxonomy)
    check_counts(counts, taxonomy)
    plan = tree_plan(counts, taxonomy)
    mode = "hardlink" if hardlink else "empty"
    digest = construction_digest(plan, mode)
    total = sum(len(names) for _, names in plan)
    record: dict[str, object] = {"construction_version": CONSTRUCTION_VERSION, "construction_sha256": digest,
                                 "mode": mode, "files": total,
                                 "images": {d: sum(c.values()) for d, c in counts.items()}}
    if _reusable(tree, digest, mode):
        progress(f"reusing the complete scale tree in {tree} ({total:,} files)")
        return record
    markers = tree / MARKER_DIR
    markers.mkdir(parents=True, exist_ok=True)
    write_text_atomic(markers / STARTED_MARKER, json.dumps(record, indent=2) + "\n")
    sources = _LinkSources(markers / "sources", tiny_jpeg()) if hardlink else None
    jobs = []
    for folder, names in plan:
        links = sources.take(len(names)) if sources is not None else None
        jobs.append((tree / folder, names, links))
    progress(f"making {total:,} files ({mode}) in {tree}")
    start = time.perf_counter()
    done = 0
    step = 100_000
    shown = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for made in pool.map(lambda job: _fill_folder(*job), jobs):
            done += made
            if done - shown >= step:
                shown = done - done % step
                rate = done / max(time.perf_counter() - start, 1e-9)
                progress(f"  {done:>9,} / {total:,} files  ({rate:,.0f} files/s)")
    for domain in ("imagenet-a", "imagenet-r"):
        write_text_atomic(
            tree / RELEASE_FOLDERS[domain] / "README.txt",
            f"Placeholder files in the layout of the {domain} release, made by benchmarks/build_scale.py.\n",
        )
    write_text_atomic(markers / COMPLETE_MARKER, json.dumps(record, indent=2) + "\n")
    (markers / STARTED_MARKER).unlink()
    progress(f"made {total:,} files in {time.perf_counter() - start:.1f} s")
    return record


# ---------------------------------------------------------------------------------------------------------
# Measuring, in a fresh process.


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (VmHWM), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(tree: str, out: str) -> dict[str, Any]:
    """Scan every release under ``tree`` and build the default manifests into ``out``; times and peaks.

    Meant to run alone in a fresh process, so that its peak memory is the pipeline's.
    """
    started = time.perf_counter()
    # Imported here, not at the top: the import is part of what is timed, in the measuring process.
    from imagenet_dg.build import BuildOptions, build
    from imagenet_dg.layouts import scan
    from imagenet_dg.protocols import task_statistics
    from imagenet_dg.suites import IMAGENET_DG

    imported = time.perf_counter()
    peak_import = _peak_rss_bytes()
    scans = scan(IMAGENET_DG, root=tree)
    scanned = time.perf_counter()
    peak_scan = _peak_rss_bytes()
    result = build(scans, out, BuildOptions())
    built = time.perf_counter()
    peak_build = _peak_rss_bytes()
    statistics = task_statistics(scans.suite, scans.tables)
    return {
        "import_s": imported - started,
        "scan_s": scanned - imported,
        "build_s": built - scanned,
        "total_s": built - imported,
        "peak_rss_after_import_bytes": peak_import,
        "peak_rss_after_scan_bytes": peak_scan,
        "peak_rss_bytes": peak_build,
        "releases": {d: {"root": str(scans.roots[d]), "layout": scans.location.layouts[d], "images": len(t)}
                     for d, t in scans.tables.items()},
        "configs": sorted(result.manifest["configs"]),
        "content_hash": result.manifest["content_hash"],
        "statistics": statistics.to_dict(orient="records"),
        "manifest_statistics": result.manifest["statistics"],
    }


def child_main(arguments: Sequence[str]) -> None:
    """Entry point of the measuring process: ``tree out result-file``."""
    tree, out, result_file = arguments
    Path(result_file).write_text(json.dumps(measure(tree, out), indent=2) + "\n", encoding="utf-8")


def run_measurement(tree: Path, work: Path) -> dict[str, Any]:
    """``measure`` in a fresh Python process; adds the process's wall time and its peak RSS as the kernel
    counts it (``ru_maxrss`` of that child alone)."""
    out = work / "imagenet-dg"
    result_file = work / "measure.json"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import build_scale; build_scale.child_main(sys.argv[2:])"
    )
    command = [sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(tree), str(out),
               str(result_file)]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    # wait4 gives this one child's resource usage (RUSAGE_CHILDREN would keep the largest child so far).
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise ScaleTreeError(f"the measuring process failed with exit status {process.returncode} (see above)")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result["process_wall_s"] = wall
    result["child_maxrss_bytes"] = usage.ru_maxrss * 1024  # Linux counts ru_maxrss in KiB
    shutil.rmtree(out, ignore_errors=True)
    result_file.unlink()
    return result


# ---------------------------------------------------------------------------------------------------------
# Comparing and reporting.


def compare_statistics(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, object, object, bool]]:
    """(task, cell, published, scanned, equal) for every cell of the published table."""
    scanned = {str(r["task"]): r for r in records}
    rows = []
    for task, published in PUBLISHED_STATISTICS.items():
        for cell in STATISTICS_CELLS:
            value = scanned.get(task, {}).get(cell)
            rows.append((task, cell, published[cell], value, value == published[cell]))
    return rows


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def render_report(runs: Sequence[Mapping[str, Any]], checks: Sequence[tuple[str, str, object, object, bool]]) -> str:
    """The timing table (one row per run), the target verdict and the PASS/FAIL list of published cells."""
    lines = [
        "run  import s  scan s  build s  total s  peak RSS MiB  (kernel MiB)",
        "---  --------  ------  -------  -------  ------------  ------------",
    ]
    for i, run in enumerate(runs, 1):
        lines.append(
            f"{i:>3}  {run['import_s']:>8.2f}  {run['scan_s']:>6.2f}  {run['build_s']:>7.2f}  "
            f"{run['total_s']:>7.2f}  {_mib(run['peak_rss_bytes']):>12}  {_mib(run.get('child_maxrss_bytes')):>12}"
        )
    worst_s = max(r["total_s"] for r in runs)
    worst_rss = max(r["peak_rss_bytes"] for r in runs)
    lines.append("")
    lines.append(f"target scan+build < {TARGET_SECONDS:.0f} s: {'PASS' if worst_s < TARGET_SECONDS else 'FAIL'} "
                 f"(slowest run {worst_s:.2f} s)")
    lines.append(f"target peak RSS < 2 GB: {'PASS' if worst_rss < TARGET_PEAK_BYTES else 'FAIL'} "
                 f"(largest {worst_rss / 2**20:,.0f} MiB = {worst_rss / 1e9:.2f} GB)")
    lines.append("")
    lines.append("published task table (paper Table 7) vs task_statistics of the scan:")
    for task, cell, published, value, equal in checks:
        lines.append(f"  {'PASS' if equal else 'FAIL'}  task {task}  {cell:<16} published {published!s:>10}  "
                     f"scanned {value!s:>10}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=None,
                        help="Folder of the scale tree: reused when complete, kept afterwards "
                             "(default: a temporary folder).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary tree (its path is printed).")
    parser.add_argument("--hardlink", action="store_true",
                        help="Make files as hard links to a tiny JPEG instead of empty files.")
    parser.add_argument("--runs", type=int, default=1, help="Measurements, each in a fresh process (default 1).")
    parser.add_argument("--workers", type=int, default=4, help="Threads creating files (default 4).")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures as JSON to this file.")
    return parser


def _platform() -> dict[str, object]:
    import numpy
    import pandas

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "pandas": pandas.__version__, "numpy": numpy.__version__, "system": platform.platform()}


@dataclass(frozen=True)
class _TreeFolder:
    path: Path
    temporary: bool


def _tree_folder(given: Path | None) -> _TreeFolder:
    if given is not None:
        return _TreeFolder(Path(os.path.abspath(given)), temporary=False)
    return _TreeFolder(Path(tempfile.mkdtemp(prefix="imagenet-dg-scale-tree-")), temporary=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Make or reuse the tree, measure, compare, report; 0 when every check and target passes, 1 when one
    fails, 2 when the tree cannot be made or the measurement cannot run."""
    arguments = _parser().parse_args(argv)
    if arguments.runs < 1:
        _parser().error("--runs must be at least 1")
    try:
        return _benchmark(arguments)
    except ScaleTreeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _benchmark(arguments: argparse.Namespace) -> int:
    tree = _tree_folder(arguments.tree)
    try:
        record = make_tree(tree.path, hardlink=arguments.hardlink, workers=arguments.workers)
        runs = []
        for i in range(arguments.runs):
            with tempfile.TemporaryDirectory(prefix="imagenet-dg-scale-out-") as work:
                print(f"measuring run {i + 1} of {arguments.runs}: scan_releases + build in a fresh process")
                runs.append(run_measurement(tree.path, Path(work)))
    finally:
        if tree.temporary and not arguments.keep:
            print(f"removing the temporary tree {tree.path}")
            shutil.rmtree(tree.path, ignore_errors=True)
        elif tree.temporary:
            print(f"kept the tree in {tree.path} (reuse it with --tree {tree.path})")
    checks = compare_statistics(runs[-1]["statistics"])
    manifest_agrees = all(r["manifest_statistics"] == r["statistics"] for r in runs)
    print()
    print(render_report(runs, checks))
    if not manifest_agrees:
        print("  FAIL  the statistics recorded in manifest.json differ from task_statistics of the scan")
    worst_s = max(r["total_s"] for r in runs)
    worst_rss = max(r["peak_rss_bytes"] for r in runs)
    passed = (all(c[4] for c in checks) and manifest_agrees and worst_s < TARGET_SECONDS
              and worst_rss < TARGET_PEAK_BYTES)
    if arguments.json is not None:
        summary = {
            "targets": {"seconds": TARGET_SECONDS, "peak_rss_bytes": TARGET_PEAK_BYTES},
            "tree": {"path": str(tree.path), "kept": not tree.temporary or arguments.keep, **record},
            "platform": _platform(),
            "runs": [{k: v for k, v in r.items() if k != "manifest_statistics"} for r in runs],
            "statistics_check": [
                {"task": t, "cell": c, "published": p, "scanned": v, "pass": ok} for t, c, p, v, ok in checks
            ],
            "passed": passed,
        }
        write_text_atomic(arguments.json, json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {arguments.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
