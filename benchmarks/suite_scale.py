"""Scale benchmark of the suites: discovery, both protocols and the build on full-size trees of empty files.

Writes a tree in DomainBed's layout with each suite's published number of images per domain (spread evenly over
its classes; the files are empty, since neither discovery nor the protocols open images), then times
``scan_suite``, the fewshot build (16 shots, seeds 1-3, every target) and the full build (trial seeds 0-2).

    .venv/bin/python benchmarks/suite_scale.py [--suites pacs,officehome] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.layouts import scan_suite
from imagenet_dg.suites import get_suite

PUBLISHED_IMAGES = {
    # Images per domain, in domain order, of the copies DomainBed's figures count (PACS 9,991, VLCS 10,729,
    # OfficeHome 15,588, TerraIncognita 24,788 images).
    "pacs": (2048, 2344, 1670, 3929),
    "vlcs": (1415, 2656, 3282, 3376),
    "officehome": (2427, 4365, 4439, 4357),
    "terraincognita": (4879, 9767, 4020, 6122),
}


def write_tree(name: str, root: Path) -> int:
    """Empty image files of suite ``name`` under ``root`` in its DomainBed layout; returns how many."""
    suite = get_suite(name)
    total = 0
    for domain, count in zip(suite.domains, PUBLISHED_IMAGES[name]):
        for i in range(count):
            class_id = suite.classes[i % len(suite.classes)]
            folder = root / suite.folder_names[0] / domain.folders()[0] / class_id
            if i < len(suite.classes):
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:06d}.jpg").touch()
            total += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="pacs,officehome")
    parser.add_argument("--keep", type=Path, default=None, help="Write the trees here instead of a temporary folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        base = args.keep or Path(temporary)
        print("| suite | images | scan s | fewshot build s (configs) | full build s (configs) |")
        print("|---|---|---|---|---|")
        for name in args.suites.split(","):
            root = base / name
            images = write_tree(name, root)
            start = time.perf_counter()
            scan = scan_suite(name, root)
            scanned = time.perf_counter() - start
            start = time.perf_counter()
            fewshot = build(scan, base / f"{name}-fewshot", BuildOptions(shots=(16,), seeds=(1, 2, 3)))
            fewshot_s = time.perf_counter() - start
            start = time.perf_counter()
            full = build(scan, base / f"{name}-full", BuildOptions(protocol="full", seeds=(0, 1, 2)))
            full_s = time.perf_counter() - start
            print(f"| {name} | {images:,} | {scanned:.2f} | {fewshot_s:.2f} ({len(fewshot.manifest['configs'])}) | "
                  f"{full_s:.2f} ({len(full.manifest['configs'])}) |")


if __name__ == "__main__":
    main()
