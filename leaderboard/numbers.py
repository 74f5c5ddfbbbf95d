"""How the leaderboard writes its numbers: one decimal for accuracies (each metric says its own), the same
everywhere."""

from __future__ import annotations

from leaderboard.aggregation import Cell

DECIMALS = 1
FEWER_SEEDS_MARK = "†"
MISSING = "–"


def accuracy_text(value: float | None, decimals: int = DECIMALS) -> str:
    """A number as the tables print it (``decimals`` places: the metric's, one for accuracies)."""
    return MISSING if value is None else f"{value:.{decimals}f}"


def difference_text(value: float | None) -> str:
    """A signed difference, e.g. ``+0.5`` or ``−1.2`` (a true minus sign, so columns of signs line up)."""
    if value is None:
        return MISSING
    text = f"{value:+.{DECIMALS}f}"
    if text in (f"+{0:.{DECIMALS}f}", f"-{0:.{DECIMALS}f}"):
        return f"±{0:.{DECIMALS}f}"
    return text.replace("-", "−")


def cell_parts(cell: Cell, fewer: bool, decimals: int = DECIMALS) -> tuple[str, str, str]:
    """(mean, spread, seeds) of a cell as text; the seeds carry the mark when the cell has fewer than the rest."""
    mean = accuracy_text(cell.mean, decimals)
    spread = "" if cell.spread is None else f"{cell.spread:.{decimals}f}"
    seeds = f"{cell.n}{FEWER_SEEDS_MARK if fewer else ''}"
    return mean, spread, seeds


def cell_text(cell: Cell, fewer: bool, decimals: int = DECIMALS) -> str:
    """``61.2 ± 1.3 (3)``; ``61.2 (1)`` with one seed; ``–`` for a cell without runs."""
    if cell.n == 0:
        return MISSING
    mean, spread, seeds = cell_parts(cell, fewer, decimals)
    return f"{mean} ± {spread} ({seeds})" if spread else f"{mean} ({seeds})"


def classes_text(num_classes: int) -> str:
    return f"{num_classes} classes, chance {100.0 / num_classes:.{DECIMALS}f}"


def classes_range_text(counts: tuple[int, ...]) -> str:
    """``6 classes, chance 16.7`` for one number of classes; the range of both for several (a suite's targets)."""
    if len(counts) == 1:
        return classes_text(counts[0])
    low, high = min(counts), max(counts)
    return f"{low}–{high} classes, chance {100.0 / high:.{DECIMALS}f}–{100.0 / low:.{DECIMALS}f}"
