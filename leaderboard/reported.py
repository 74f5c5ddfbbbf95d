"""Published accuracies, kept as data: one TSV file per source in ``leaderboard/reference/``.

Adding another paper's numbers is adding a file; ``leaderboard/reference/README.md`` documents the columns.
A reported number is shown beside the reproduced row of the same suite, protocol, model, weights, shots and
(method, base, routing), with the difference reproduced minus reported.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from imagenet_dg.errors import ImageNetDGError

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
COLUMNS = ("suite", "protocol", "model", "pretrained", "shots", "method", "base", "routing", "target", "accuracy",
           "paper", "table")
AVERAGE = "average"
"""The target of a number reported only as the average over a suite's targets."""
ANY_SHOTS = "any"
"""The shots of a number that holds for every number of shots (a method that trains nothing)."""


class ReportedError(ImageNetDGError):
    """A reported-results file is malformed."""


@dataclass(frozen=True)
class Reported:
    """One published accuracy (percent) and where it was published."""

    suite: str
    protocol: str
    model: str
    pretrained: str
    shots: int | str | None
    """An integer, None for the full protocol, or ``"any"``."""
    method: str
    base: str | None
    routing: str | None
    target: str
    """A target domain, or ``"average"``."""
    accuracy: float
    paper: str
    table: str
    file: str
    """Name of the TSV file it was read from."""

    @property
    def source(self) -> str:
        return f"{self.paper}, {self.table}"

    def matches_shots(self, shots: int | None) -> bool:
        return self.shots == ANY_SHOTS or self.shots == shots


def _shots(text: str, where: str) -> int | str | None:
    if text == "":
        return None
    if text == ANY_SHOTS:
        return ANY_SHOTS
    try:
        value = int(text)
    except ValueError:
        raise ReportedError(f"{where}: shots must be an integer, empty (full protocol) or 'any', found {text!r}") from None
    if value < 1:
        raise ReportedError(f"{where}: shots must be at least 1, found {value}")
    return value


def read_reported_file(path: str | os.PathLike[str]) -> list[Reported]:
    """The rows of one reported-results TSV (lines starting with ``#`` are comments)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    if not lines:
        raise ReportedError(f"{path}: no header; expected the columns {', '.join(COLUMNS)}")
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = tuple(rows[0])
    if header != COLUMNS:
        raise ReportedError(f"{path}: columns {', '.join(header)}; expected exactly {', '.join(COLUMNS)} "
                            "(see leaderboard/reference/README.md)")
    found = []
    for number, cells in enumerate(rows[1:], start=2):
        where = f"{path}: data row {number - 1}"
        if len(cells) != len(COLUMNS):
            raise ReportedError(f"{where}: {len(cells)} cells, expected {len(COLUMNS)}")
        row = dict(zip(COLUMNS, cells))
        for required in ("suite", "protocol", "model", "pretrained", "method", "target", "paper", "table"):
            if not row[required]:
                raise ReportedError(f"{where}: empty {required}")
        if row["protocol"] not in ("fewshot", "full"):
            raise ReportedError(f"{where}: protocol must be fewshot or full, found {row['protocol']!r}")
        try:
            accuracy = float(row["accuracy"])
        except ValueError:
            accuracy = math.nan
        if not (math.isfinite(accuracy) and 0 <= accuracy <= 100):
            raise ReportedError(f"{where}: accuracy must be a percentage in [0, 100], found {row['accuracy']!r}")
        if row["routing"] not in ("", "batch", "sample"):
            raise ReportedError(f"{where}: routing must be empty, batch or sample, found {row['routing']!r}")
        found.append(Reported(
            suite=row["suite"], protocol=row["protocol"], model=row["model"], pretrained=row["pretrained"],
            shots=_shots(row["shots"], where), method=row["method"], base=row["base"] or None,
            routing=row["routing"] or None, target=row["target"], accuracy=accuracy, paper=row["paper"],
            table=row["table"], file=path.name,
        ))
    return found


def load_reported(paths: Iterable[str | os.PathLike[str]] | None = None) -> list[Reported]:
    """Every reported number of ``paths`` (default: every ``*.tsv`` shipped in ``leaderboard/reference/``).

    The same (suite, protocol, model, weights, shots, method, base, routing, target) reported twice by one
    source is an error; two sources may report the same row.
    """
    files = sorted(REFERENCE_DIR.glob("*.tsv")) if paths is None else [Path(p) for p in paths]
    rows = [row for file in files for row in read_reported_file(file)]
    seen: dict[tuple, Reported] = {}
    for row in rows:
        key = (row.suite, row.protocol, row.model, row.pretrained, row.shots, row.method, row.base, row.routing,
               row.target, row.paper, row.table)
        if key in seen:
            raise ReportedError(f"{row.file}: {row.method} on {row.suite}/{row.target} is reported twice by {row.source}")
        seen[key] = row
    return rows
