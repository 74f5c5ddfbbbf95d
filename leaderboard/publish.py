"""Write the leaderboard's four outputs into one folder: Markdown, tidy CSV, LaTeX and the HTML page.

The outputs depend only on the records and the reported numbers (no dates, sorted everything, fixed plot
settings), so regenerating them from the same records gives the same bytes. Each file is written atomically. The
folder is marked as holding leaderboard outputs; files there that an earlier run did not write are never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.records import collect
from leaderboard.aggregation import Leaderboard, LeaderboardError, build_leaderboard
from leaderboard.latex import render_latex
from leaderboard.markdown import render_markdown
from leaderboard.metrics import ACCURACY
from leaderboard.page import render_html
from leaderboard.reported import Reported, load_reported
from leaderboard.selection import NO_SELECTION
from leaderboard.tidy import render_csv

MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
LATEX_FILE = "leaderboard.tex"
HTML_FILE = "leaderboard.html"
OUTPUT_FILES = (MARKDOWN_FILE, CSV_FILE, LATEX_FILE, HTML_FILE)
MARKER_FILE = ".imagenet-dg-leaderboard"
"""Written beside the outputs: says the folder's output files were written by this command (and may be again)."""


@dataclass(frozen=True)
class Published:
    board: Leaderboard
    files: tuple[Path, ...]


def render_all(board: Leaderboard, out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """File name -> content of every output, links and run folders relative to ``out_dir``."""
    return {
        MARKDOWN_FILE: render_markdown(board, out_dir),
        CSV_FILE: render_csv(board, out_dir),
        LATEX_FILE: render_latex(board),
        HTML_FILE: render_html(board, out_dir),
    }


def _check_ours(out_dir: Path) -> None:
    if (out_dir / MARKER_FILE).is_file():
        return
    foreign = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if foreign:
        raise LeaderboardError(
            f"{out_dir}: already holds {', '.join(foreign)}, not written by 'imagenet-dg leaderboard' (no {MARKER_FILE} "
            "marker); choose another --out folder or move those files away"
        )


def publish(runs_dirs: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *, spread: str = "auto",
            reported: Iterable[Reported] | None = None, selection: str = NO_SELECTION,
            metric: str = ACCURACY.name) -> Published:
    """Collect the records under ``runs_dirs``, aggregate them (see :func:`build_leaderboard` for ``selection``
    and ``metric``) and write every output into ``out_dir``."""
    out = Path(out_dir)
    board = build_leaderboard(collect(list(runs_dirs)), load_reported() if reported is None else reported, spread,
                              selection, metric)
    _check_ours(out)
    contents = render_all(board, out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MARKER_FILE, "\n".join(OUTPUT_FILES) + "\n")
    for name, text in contents.items():
        write_text_atomic(out / name, text)
    return Published(board, tuple(out / name for name in contents))
