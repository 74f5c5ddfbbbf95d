"""The leaderboard as GitHub Markdown: an overview of suite averages, then one table per suite."""

from __future__ import annotations

import os
from pathlib import Path

from imagenet_dg.labels import suite_label
from leaderboard.aggregation import Leaderboard, Overview, Table, overviews
from leaderboard.numbers import MISSING, accuracy_text, cell_text, classes_range_text, classes_text, difference_text
from leaderboard.reported import AVERAGE


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(_escape(c) for c in cells) + " |"


def overview_markdown(overview: Overview) -> list[str]:
    header = [f"{suite_label(s, overview.key.synthetic_data)}<br>{classes_range_text(overview.classes[s])}"
              for s in overview.suites]
    decimals = overview.metric.decimals
    lines = [f"### {overview.title()}", "", overview.caption(), "",
             _line(["method", *header, *(["mean over suites"] if overview.several else [])]),
             "|---|" + "---:|" * (len(overview.suites) + overview.several)]
    for row, cells in overview.rows:
        texts = [cell_text(cells[s], overview.fewer_seeds(s, cells[s]), decimals) if s in cells else MISSING
                 for s in overview.suites]
        if overview.several:
            texts.append(accuracy_text(overview.mean_over_suites(cells), decimals))
        lines.append(_line([row.label, *texts]))
    return lines


def table_markdown(table: Table) -> list[str]:
    header = ["method", *(f"{c.target}<br>{classes_text(c.num_classes)}" for c in table.columns), "average"]
    decimals = table.metric.decimals
    lines = [f"### {table.title()}", "", table.caption(), "", _line(header),
             "|---|" + "---:|" * (len(table.columns) + 1)]
    for row in table.rows:
        cells = [cell_text(row.cells[c.target], table.fewer_seeds(row.cells[c.target]), decimals)
                 if c.target in row.cells else MISSING for c in table.columns]
        lines.append(_line([row.key.label, *cells, cell_text(row.average, table.fewer_seeds(row.average), decimals)]))
    for reported in table.reported:
        cells = []
        for target in [*(c.target for c in table.columns), AVERAGE]:
            if target not in reported.values:
                cells.append(MISSING)
                continue
            text = accuracy_text(reported.values[target])
            if target in reported.differences:
                text += f" (Δ {difference_text(reported.differences[target])})"
            cells.append(text)
        lines.append(_line([f"{reported.key.label}, reported ({reported.source})", *cells]))
    if table.reported:
        lines += ["", "Reported rows: the published number, and in brackets Δ = reproduced mean − reported."]
    return lines


def render_markdown(board: Leaderboard, out_dir: str | os.PathLike[str] | None = None) -> str:
    """The whole leaderboard as one Markdown document (deterministic: no dates, sorted everything).

    Unfinished run folders are listed relative to ``out_dir`` when given.
    """
    lines = ["# Leaderboard", ""]
    runs = board.run_count
    lines.append(f"{runs} finished run{'s' if runs != 1 else ''} in {len(board.tables)} "
                 f"table{'s' if len(board.tables) != 1 else ''}.")
    if board.unfinished:
        listed = ", ".join(f"`{_relative(p, out_dir)}`" for p in board.unfinished)
        lines.append(f"{len(board.unfinished)} unfinished run folder{'s' if len(board.unfinished) != 1 else ''} "
                     f"not counted: {listed}.")
    else:
        lines.append("No unfinished run folders.")
    lines += board.notes()
    if not board.tables:
        return "\n".join(lines) + "\n"
    lines += ["", "## Suite averages", ""]
    for overview in overviews(board):
        lines += [*overview_markdown(overview), ""]
    for suite, synthetic in sorted({(t.key.suite, t.key.synthetic_data) for t in board.tables}):
        lines += [f"## {suite_label(suite, synthetic)}", ""]
        for table in (t for t in board.tables if (t.key.suite, t.key.synthetic_data) == (suite, synthetic)):
            lines += [*table_markdown(table), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _relative(path: Path, out_dir: str | os.PathLike[str] | None) -> str:
    return Path(path).as_posix() if out_dir is None else Path(os.path.relpath(path, out_dir)).as_posix()
