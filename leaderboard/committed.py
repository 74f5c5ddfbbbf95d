"""The leaderboard kept in the repository: the records of the runs made, and the outputs generated from them.

    python -m leaderboard.committed [--import RUNS_DIR ...] [--replace] [--upgrade-records] [--readme README.md]

``--import`` copies the finished records of evaluation runs folders into ``leaderboard/runs/<suite>/<run>/``
(validated, only ``results.jsonl`` and ``done``: no checkpoints or logs); then the outputs in
``leaderboard/board/`` are regenerated from every committed record. With ``--replace`` the imported runs take the
place of every committed one: the committed run folders (those holding only ``results.jsonl`` and ``done``, as
the import writes them) are removed first, after the new records have been validated; a file under
``leaderboard/runs/`` that the import did not write stops the replacement before anything is removed. With ``--readme``, the part of that file
between the lines ``<!-- leaderboard:start -->`` and ``<!-- leaderboard:end -->`` is replaced by the current
tables (a file without those lines is an error, never rewritten). ``--upgrade-records`` rewrites the committed
records of schema version 2 as version 3 (:func:`imagenet_dg.records.upgrade_schema_2`: calibration not
measured, everything else as it was). A test checks that the committed outputs are
exactly what this generates from the committed records.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.records import (
    DONE_FILE, RESULTS_FILE, RecordError, collect, read_record, upgrade_schema_2, write_record,
)
from leaderboard.aggregation import Leaderboard, build_leaderboard
from leaderboard.markdown import render_markdown
from leaderboard.page import GENERATOR
from leaderboard.publish import HTML_FILE, Published, publish, render_all
from leaderboard.reported import load_reported

PACKAGE_DIR = Path(__file__).resolve().parent
COMMITTED_RUNS = PACKAGE_DIR / "runs"
COMMITTED_BOARD = PACKAGE_DIR / "board"
README_START = "<!-- leaderboard:start -->"
README_END = "<!-- leaderboard:end -->"
_FIGURE = re.compile(r"<figure><svg.*?</svg>", re.DOTALL)
_GENERATOR_TAG = re.compile(r'<meta name="generator" content="[^"]*">')


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


COMMITTED_FILES = frozenset({RESULTS_FILE, DONE_FILE})
"""What an import writes into a committed run folder, and so all that a replacement removes."""


def committed_run_folders(into: Path = COMMITTED_RUNS) -> list[Path]:
    """The run folders ``into/<suite>/<run>/`` written by an import (of any schema version).

    Anything else under ``into`` (another file, a deeper folder) is an error naming it: it was not written here,
    so it is neither removed nor silently left behind a replacement.
    """
    if not into.is_dir():
        return []
    folders, foreign = [], []
    for suite in sorted(into.iterdir()):
        if not suite.is_dir():
            foreign.append(suite)
            continue
        for run in sorted(suite.iterdir()):
            entries = sorted(run.iterdir()) if run.is_dir() else []
            if not run.is_dir() or {e.name for e in entries} != COMMITTED_FILES or any(not e.is_file() for e in entries):
                foreign.append(run)
                continue
            folders.append(run)
    if foreign:
        raise ImageNetDGError(
            f"{into}: holds {', '.join(map(str, foreign))}, not a committed record folder (only {RESULTS_FILE} and "
            f"{DONE_FILE}); move it away before replacing the committed runs"
        )
    return folders


def replace_runs(runs_dirs: Iterable[str | os.PathLike[str]], into: Path = COMMITTED_RUNS) -> list[Path]:
    """Replace every committed run by the finished records under ``runs_dirs``; returns the folders written.

    The new records are collected and validated, and the committed folders checked, before anything is
    removed; a replacement killed half-way is finished by running it again.
    """
    found = collect(list(runs_dirs)).runs
    if not found:
        raise ImageNetDGError(f"no finished run under {', '.join(map(str, runs_dirs))}; nothing would replace "
                              f"the committed runs in {into}")
    by_target: dict[Path, list] = defaultdict(list)
    for run in found:
        by_target[into / run.record.suite / run.folder.name].append(run)
    for target, runs in by_target.items():
        if any(r.record != runs[0].record for r in runs[1:]):
            raise ImageNetDGError(f"{target}: different records would be committed there "
                                  f"({', '.join(str(r.folder / RESULTS_FILE) for r in runs)}); import one of them")
    for folder in committed_run_folders(into):
        # the marker first: a folder is never marked done without its record
        for name in [DONE_FILE, *sorted(COMMITTED_FILES - {DONE_FILE})]:
            (folder / name).unlink()
        folder.rmdir()
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
    return import_runs(runs_dirs, into)


def upgrade_records(into: Path = COMMITTED_RUNS) -> list[Path]:
    """Rewrite every committed record of schema version 2 as version 3 (atomically, in place); returns the files
    rewritten. Records of version 3 are left as they are; any other version is an error naming the file."""
    rewritten = []
    for folder in committed_run_folders(into):
        results = folder / RESULTS_FILE
        try:
            data = json.loads(results.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RecordError(f"{results}: not a JSON record ({error})") from None
        if isinstance(data, dict) and data.get("schema_version") != 2:
            read_record(folder)  # a current record is left alone; another version is refused by name
            continue
        write_text_atomic(results, upgrade_schema_2(data, origin=str(results)).to_json() + "\n")
        rewritten.append(results)
    return rewritten


def regenerate(runs: Path = COMMITTED_RUNS, board: Path = COMMITTED_BOARD) -> Published:
    """Write the committed outputs from the committed records."""
    return publish([runs], board)


def comparable(name: str, text: str, same_matplotlib: bool) -> str:
    """The text of an output to compare: all of it, except the plots' SVG when made by another matplotlib version
    (its SVG output changes between versions; the tables, links and captions must still be identical)."""
    if name == HTML_FILE and not same_matplotlib:
        text = _FIGURE.sub("<figure><svg/>", text)
        text = _GENERATOR_TAG.sub("", text)
    return text


def stale_outputs(board: Leaderboard, board_dir: Path = COMMITTED_BOARD) -> list[str]:
    """The output files in ``board_dir`` that are not what ``board`` gives (missing ones included), compared as
    :func:`comparable` says: the plots are compared only when the page was made with this matplotlib."""
    page = board_dir / HTML_FILE
    same_matplotlib = page.is_file() and f'content="{GENERATOR}"' in page.read_text(encoding="utf-8")
    stale = []
    for name, text in render_all(board, board_dir).items():
        file = board_dir / name
        if not file.is_file() or (comparable(name, file.read_text(encoding="utf-8"), same_matplotlib)
                                  != comparable(name, text, same_matplotlib)):
            stale.append(name)
    return stale


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
    parser.add_argument("--replace", action="store_true",
                        help="The imported runs replace every committed run (needs --import).")
    parser.add_argument("--upgrade-records", action="store_true",
                        help="Rewrite the committed records of schema version 2 as version 3 first.")
    parser.add_argument("--readme", type=Path, default=None, help="Also put the tables into this README.")
    args = parser.parse_args(argv)
    if args.replace and not args.imports:
        print("error: --replace: give the runs folders that replace the committed runs with --import RUNS_DIR",
              file=sys.stderr)
        return 2
    try:
        for file in upgrade_records() if args.upgrade_records else ():
            print(f"upgraded {file}")
        unfinished = collect(args.imports).unfinished if args.imports else ()
        for folder in unfinished:
            print(f"not imported (unfinished: no {DONE_FILE} marker): {folder}")
        for folder in (replace_runs if args.replace else import_runs)(args.imports):
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
