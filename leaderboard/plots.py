"""The leaderboard's pictures, drawn with matplotlib as inline SVG that is identical from run to run.

Per table: the table's metric (accuracy by default) on each target (and the average) for each method, a marker at
the mean with the seed spread as error bars and one dot per seed, the chance level of an accuracy dashed where it
falls inside the zoomed axis. Across suites: each row's suite average against its trainable parameters and against
its training time per run.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # never a window: the plots are written into the page
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from leaderboard.aggregation import SPREAD_NAMES, Table  # noqa: E402
from leaderboard.metrics import Metric  # noqa: E402

# Everything that could vary between runs or machines is fixed: SVG ids come from a fixed salt, no date is
# written, text is drawn as paths with the DejaVu fonts matplotlib ships (no dependence on the fonts installed).
STYLE = {
    "svg.hashsalt": "imagenet-dg-leaderboard",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.alpha": 0.3,
    "path.simplify": False,
}
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    # a fixed layout (no bbox_inches="tight"): the figure is drawn once, and its size does not depend on the text
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    text = buffer.getvalue()
    # Inline in HTML: drop the XML prolog and DOCTYPE, keep the <svg> element.
    return text[text.index("<svg"):].strip() + "\n"


LEGEND_INCHES = 2.0
"""Room at the right of each figure for its legend, which sits outside the axes so it never hides a bar."""


def _figure(plot_width: float, height: float, columns: int = 1, **options) -> tuple[plt.Figure, object]:
    """A figure with fixed margins in inches: plots of ``plot_width`` inches, then the legend's room."""
    width = plot_width + LEGEND_INCHES
    figure, axes = plt.subplots(1, columns, figsize=(width, height), **options)
    figure.subplots_adjust(left=0.65 / width, right=1 - LEGEND_INCHES / width, bottom=0.55 / height,
                           top=1 - 0.35 / height, wspace=0.12 if columns > 1 else None)
    return figure, axes


def _colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def palette(tables: Sequence[Table]) -> dict[str, int]:
    """Index of the colour and marker of each row label, the same in every plot of a page."""
    keys = sorted({row.key for t in tables for row in t.rows}, key=lambda key: key.sort_key())
    return {key.label: index for index, key in enumerate(keys)}


def table_plot(table: Table, styles: dict[str, int] | None = None) -> str:
    """One group per target plus the average, one marker per row at its mean with the spread as error bar and a
    small dot per seed. The axis is zoomed to the numbers (differences of a point matter); the chance level is
    drawn where it falls inside it."""
    with matplotlib.rc_context(STYLE):
        labels = [*(c.target for c in table.columns), "average"]
        rows = table.rows
        step = 0.8 / max(len(rows), 1)
        styles = palette([table]) if styles is None else styles
        figure, axes = _figure(max(4.2, 0.6 + len(labels) * (0.35 + 0.16 * max(1, len(rows)))), 3.2)
        shown: list[float] = []
        for index, row in enumerate(rows):
            cells = [row.cells.get(c.target) for c in table.columns] + [row.average]
            offset = (index - (len(rows) - 1) / 2) * step
            label: str | None = row.key.label
            for position, cell in enumerate(cells):
                if cell is None or cell.n == 0:
                    continue
                x = position + offset
                spread = cell.spread or 0.0
                axes.errorbar(x, cell.mean, yerr=cell.spread, color=_colour(styles[row.key.label]),
                              marker=MARKERS[styles[row.key.label] % len(MARKERS)],
                              markersize=5, capsize=2, linewidth=1.0, label=label)
                label = None
                axes.scatter([x] * cell.n, cell.values, s=5, color="#222222", zorder=3, linewidths=0)
                shown += [cell.mean - spread, cell.mean + spread, *cell.values]
        low, high = _value_range(shown, table.metric)
        chance_drawn = False
        for position, column in enumerate(table.columns):
            if table.metric.is_accuracy and low <= column.chance <= high:
                axes.hlines(column.chance, position - 0.45, position + 0.45, colors="#555555", linestyles="dashed",
                            linewidth=0.9)
                chance_drawn = True
        for boundary in range(1, len(labels)):
            axes.axvline(boundary - 0.5, color="#dddddd", linewidth=0.8)
        axes.set_xticks(range(len(labels)), labels)
        axes.set_xlim(-0.5, len(labels) - 0.5)
        axes.set_ylim(low, high)
        axes.set_ylabel(table.metric.noun)
        axes.set_title(f"{table.key.suite_label}: mean ± {SPREAD_NAMES[table.spread_kind]}" + ("; dashed: chance" if chance_drawn else ""),
                       fontsize=9, loc="left")
        if shown:  # a table whose runs did not measure its metric has nothing to draw, nor to name
            axes.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(figure)


def _value_range(shown: Sequence[float], metric: Metric) -> tuple[float, float]:
    """The zoomed axis of a table plot: a few points around the numbers of a percentage (room above 100 for the
    error bars of near-perfect cells), a tenth of their range around other numbers (never below zero)."""
    if metric.unit == "%":
        return max(0.0, min(shown, default=0.0) - 3.0), min(102.0, max(shown, default=100.0) + 2.0)
    low, high = min(shown, default=0.0), max(shown, default=1.0)
    margin = max(0.1 * (high - low), 0.05 * max(abs(high), 1e-3))
    return max(0.0, low - margin), high + margin


def _log_axis_with_zero(axes, values: Sequence[float]) -> Callable[[float], float]:
    """Put the x axis on a log scale with zero drawn one decade below the smallest positive value (methods that
    train nothing have 0 parameters and 0 hours); returns where a value is drawn."""
    positive = [v for v in values if v > 0]
    if not positive:
        axes.set_xlim(-1.0, 1.0)
        return lambda v: v
    low = math.floor(math.log10(min(positive)))
    high = math.ceil(math.log10(max(positive)))
    zero = 10.0 ** (low - 1)
    axes.set_xscale("log")
    decades = list(range(low, high + 1))
    has_zero = any(v <= 0 for v in values)
    ticks = ([zero] if has_zero else []) + [10.0 ** k for k in decades]
    axes.set_xticks(ticks, (["0"] if has_zero else []) + [f"$10^{{{k}}}$" for k in decades])
    axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes.set_xlim((zero if has_zero else 10.0 ** low) / 2.5, 10.0 ** high * 2.5)
    return lambda v: v if v > 0 else zero


def hours_unit(device_types: Sequence[str]) -> str:
    """What training time is measured in: GPU-hours, CPU-hours, or both when runs of both are shown."""
    kinds = set(device_types)
    if kinds <= {"cpu"}:
        return "CPU-hours"
    if "cpu" not in kinds:
        return "GPU-hours"
    return "hours (hollow markers: runs on CPU)"


def cost_plot(tables: Sequence[Table], styles: dict[str, int] | None = None) -> str:
    """Suite average of each row against trainable parameters and against training hours per run."""
    with matplotlib.rc_context(STYLE):
        styles = palette(tables) if styles is None else styles
        labels = sorted({row.key.label for t in tables for row in t.rows}, key=lambda label: styles[label])
        suites = sorted({t.key.suite for t in tables})
        unit = hours_unit([d for t in tables for row in t.rows for d in row.device_types])
        figure, (params_axes, hours_axes) = _figure(6.8, 3.2, columns=2, sharey=True)
        rows = [(t, row) for t in tables for row in t.rows if row.average.mean is not None]
        at_params = _log_axis_with_zero(params_axes, [row.n_trainable for _, row in rows])
        at_hours = _log_axis_with_zero(hours_axes, [row.training_seconds / 3600.0 for _, row in rows])
        for table, row in rows:
            marker = MARKERS[suites.index(table.key.suite) % len(MARKERS)]
            colour = _colour(styles[row.key.label])
            hollow = "cpu" in row.device_types and unit.startswith("hours")
            style = {"marker": marker, "s": 28, "edgecolors": colour, "zorder": 3,
                     "facecolors": "none" if hollow else colour}
            params_axes.scatter(at_params(row.n_trainable), row.average.mean, **style)
            hours_axes.scatter(at_hours(row.training_seconds / 3600.0), row.average.mean, **style)
        for axes in (params_axes, hours_axes):
            axes.grid(True, axis="both", alpha=0.3)
        params_axes.set_xlabel("trainable parameters")
        hours_axes.set_xlabel(f"training {unit} per run (mean)")
        params_axes.set_ylabel(f"suite average {tables[0].metric.noun if tables else 'accuracy (%)'}")
        handles = [Line2D([], [], color=_colour(styles[label]), marker="o", linestyle="", label=label) for label in labels]
        handles += [Line2D([], [], color="#444444", marker=MARKERS[i % len(MARKERS)], linestyle="", markerfacecolor="none",
                           label=f"suite {suite}") for i, suite in enumerate(suites)]
        hours_axes.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(figure)


def svg_ids(svg: str) -> list[str]:
    """The element ids of an SVG (each page must keep them unique across its several inline plots)."""
    return re.findall(r'id="([^"]+)"', svg)
