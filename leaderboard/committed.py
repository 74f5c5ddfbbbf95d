"""The leaderboard kept in the repository: the records of the runs made, and the outputs generated from them.

    python -m leaderboard.committed [--import RUNS_DIR ...] [--readme README.md]

``--import`` copies the finished records of evaluation runs folders into ``leaderboard/runs/<suite>/<run>/``
(validated, only ``results.jsonl`` and ``done``: no checkpoints or logs); then the outputs in
``leaderboard/board/`` are regenerated from every committed record. With ``--readme``, the part of that file
between the lines ``<!-- leaderboard:start -->`` and ``<!-- leaderboard:end -->`` is replaced by the current
tables (a file without those lines is an error, never rewritten). A test checks that the committed outputs are
exactly what this generates from the committed records.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.errors import ImageNetDGError
from leaderboard.aggregation import build_leaderboard
from leaderboard.markdown import render_markdown
from leaderboard.publish import Published, publish
from leaderboard.records import DONE_FILE, RESULTS_FILE, collect, read_record, write_record
from leaderboard.reported import load_reported

PACKAGE_DIR = Path(__file__).resolve().parent
COMMITTED_RUNS = PACKAGE_DIR / "runs"
COMMITTED_BOARD = PACKAGE_DIR / "board"
README_START = "<!-- leaderboard:start -->"
README_END = "<!-- leaderboard:end -->"


def import_runs(runs_dirs: Iterable[str | os.PathLike[str]], into: Path = COMMITTED_RUNS) -> list[Path]:
    """Copy every finished record under ``runs_dirs`` into ``into/<suite>/<run folder name>``.

    A record already there with the same content is left as it is; a different one under the same name is an
    error (run folders are named by what determines their result, so that would be a damaged copy).
    """
    copied = []
    for run in collect(list(runs_dirs)).runs:
        target = into / run.record.suite / run.folder.name
        if (target / DONE_FILE).exists():
            if read_record(target) != run.record:
                raise ImageNetDGError(f"{target}: holds another record than {run.folder / RESULTS_FILE}; "
                                      "remove one of them")
            continue
        write_record(target, run.record)
        copied.append(target)
    return copied


def regenerate(runs: Path = COMMITTED_RUNS, board: Path = COMMITTED_BOARD) -> Published:
    """Write the committed outputs from the committed records."""
    return publish([runs], board)


def readme_block(runs: Path = COMMITTED_RUNS, board: Path = COMMITTED_BOARD) -> str:
    """The tables as shown in the README (links relative to the repository root)."""
    text = render_markdown(build_leaderboard(collect([runs]), load_reported()), board.parent.parent)
    body = text.split("\n", 2)[2].lstrip("\n")  # without the document's own title
    # one level down: the README has its own title
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
    return f"{README_START}\n{body}\n{README_END}"


def update_readme(readme: Path, block: str) -> bool:
    """Replace the leaderboard block of ``readme``; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ImageNetDGError(f"{readme}: no lines {README_START} and {README_END} to put the tables between; add them")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = head + block + tail
    if new != text:
        write_text_atomic(readme, new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refresh the leaderboard kept in the repository.")
    parser.add_argument("--import", dest="imports", nargs="+", type=Path, default=[],
                        help="Runs folders whose finished records are copied into leaderboard/runs first.")
    parser.add_argument("--readme", type=Path, default=None, help="Also put the tables into this README.")
    args = parser.parse_args(argv)
    try:
        for folder in import_runs(args.imports):
            print(f"imported {folder}")
        published = regenerate()
        for file in published.files:
            print(f"wrote {file}")
        if args.readme is not None and update_readme(args.readme, readme_block()):
            print(f"updated {args.readme}")
    except ImageNetDGError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
