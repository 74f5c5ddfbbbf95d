"""The leaderboard as tidy CSV: one row per cell (reproduced or reported), with the run folders behind it.

Columns are listed in :data:`COLUMNS`. ``synthetic_data`` (``true``/``false``) says whether the numbers are
of synthetic miniature data, ``synthetic_weights`` whether the weights were trained on synthetic pictures only;
``weights`` is the weights as the tables name them (``random weights``, ...). ``target`` is a target domain or ``average``; ``runs`` lists the run
folders behind a reproduced cell, separated by ``;``, relative to the folder of the CSV file; ``seeds`` lists each
value's ``seed/split seed``. ``difference`` (reported rows) is the reproduced mean minus the reported number.
Numbers are written with four decimals; an empty field is a missing value. ``mean`` and ``spread`` are of the
accuracy in percent, unless the CSV has two more columns: one of another metric (``--metric``) or made under a
selection rule (``--selection``) says so in ``metric`` (accuracy, worst-class, ece or nll) and ``selection`` (none,
training-domain or oracle).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from leaderboard.aggregation import Cell, Leaderboard, Table
from leaderboard.reported import AVERAGE
from leaderboard.selection import NO_SELECTION

COLUMNS = ("suite", "synthetic_data", "protocol", "model", "pretrained", "synthetic_weights", "weights", "shots", "precision", "preset", "kind", "method", "base",
           "routing", "row", "target", "num_classes", "chance", "mean", "spread", "spread_kind", "n_seeds",
           "fewer_seeds", "seeds", "reported", "difference", "source", "runs")
CHOICE_COLUMNS = ("metric", "selection")
"""Added after :data:`COLUMNS` when the leaderboard is not the default (accuracy, every configuration its own row)."""


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _relative(path: Path, base: str | os.PathLike[str] | None) -> str:
    return Path(path).as_posix() if base is None else Path(os.path.relpath(path, base)).as_posix()


def _table_rows(table: Table, base: str | os.PathLike[str] | None) -> list[dict[str, str]]:
    common = {
        "suite": table.key.suite, "synthetic_data": str(table.key.synthetic_data).lower(),
        "protocol": table.key.protocol, "model": table.key.model, "pretrained": table.key.pretrained,
        "synthetic_weights": str(table.key.synthetic_weights).lower(), "weights": table.key.weights_label, "shots": "" if table.key.shots is None else str(table.key.shots),
        "precision": ";".join(table.precisions), "preset": ";".join(table.presets),
    }
    classes = {c.target: c for c in table.columns}
    targets = [*classes, AVERAGE]
    rows = []

    def key_fields(key) -> dict[str, str]:
        return {"method": key.method, "base": key.base or "", "routing": key.routing or "", "row": key.label}

    def target_fields(target: str) -> dict[str, str]:
        column = classes.get(target)
        return {"target": target, "num_classes": str(column.num_classes) if column else "",
                "chance": _number(column.chance) if column else ""}

    for row in table.rows:
        for target in targets:
            cell: Cell | None = row.average if target == AVERAGE else row.cells.get(target)
            if cell is None or cell.n == 0:
                continue
            rows.append({**common, "kind": "reproduced", **key_fields(row.key), **target_fields(target),
                         "mean": _number(cell.mean), "spread": _number(cell.spread), "spread_kind": table.spread_kind,
                         "n_seeds": str(cell.n), "fewer_seeds": str(table.fewer_seeds(cell)).lower(),
                         "seeds": ";".join(f"{s}/{'' if p is None else p}" for s, p in cell.replicates),
                         "reported": "", "difference": "", "source": "",
                         "runs": ";".join(_relative(r, base) for r in cell.runs)})
    for reported in table.reported:
        for target in targets:
            if target not in reported.values:
                continue
            rows.append({**common, "kind": "reported", **key_fields(reported.key), **target_fields(target),
                         "mean": "", "spread": "", "spread_kind": "", "n_seeds": "", "fewer_seeds": "", "seeds": "",
                         "reported": _number(reported.values[target]),
                         "difference": _number(reported.differences.get(target)),
                         "source": f"{reported.source} ({reported.file})", "runs": ""})
    return rows


def render_csv(board: Leaderboard, base: str | os.PathLike[str] | None = None) -> str:
    """Every cell of the leaderboard as CSV text (run folders relative to ``base`` when given)."""
    chosen = not board.metric.is_accuracy or board.selection != NO_SELECTION
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS + CHOICE_COLUMNS if chosen else COLUMNS, lineterminator="\n")
    writer.writeheader()
    choices = {"metric": board.metric.name, "selection": board.selection} if chosen else {}
    for table in board.tables:
        writer.writerows({**row, **choices} for row in _table_rows(table, base))
    return buffer.getvalue()
