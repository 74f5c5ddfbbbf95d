"""Time of the miniature world: drawing per style, writing the six miniature releases, and rerunning on them.

    python benchmarks/mini_world.py [--repeat 3]

Prints wall and CPU seconds (the CPU time is what a busy shared machine does not inflate).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imagenet_dg.mini import make_mini_releases
from imagenet_dg.world import CONCEPTS, STYLES, draw


def _timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for style in STYLES:
        _, cpu = _timed(lambda: [draw(c, style, (0, i)) for i, c in enumerate(CONCEPTS)])
        print(f"draw {style:<14} {1000 * cpu / len(CONCEPTS):6.2f} ms CPU per 64 px picture")
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "mini"
            wall, cpu = _timed(lambda: make_mini_releases(out))
            files = sum(1 for p in out.rglob("*") if p.is_file())
            again_wall, again_cpu = _timed(lambda: make_mini_releases(out))
            print(f"run {run}: wrote {files} files in {wall:.1f} s wall / {cpu:.1f} s CPU; "
                  f"rerun on them {again_wall:.2f} s wall / {again_cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
