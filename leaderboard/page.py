"""The leaderboard as one self-contained HTML page: sortable tables, inline SVG plots, no network needed.

Every number links to the list of the records behind it, at the end of the page, and each record there links
to its ``results.jsonl`` (relative to the page, so the page works from a checkout of the results).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import matplotlib

from imagenet_dg.labels import suite_label
from imagenet_dg.records import RESULTS_FILE, Record
from leaderboard.aggregation import SPREAD_NAMES, Cell, Leaderboard, Overview, OverviewKey, Table, overviews
from leaderboard.numbers import MISSING, accuracy_text, cell_parts, classes_range_text, classes_text, difference_text
from leaderboard.plots import cost_plot, palette, svg_ids, table_plot
from leaderboard.reported import AVERAGE

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1.5em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
p.summary { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 0.4em; font-variant-numeric: tabular-nums; font-size: 0.92em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #d0d7de; }
th { background: #f6f8fa; text-align: right; vertical-align: bottom; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td { text-align: right; white-space: nowrap; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #8c959f; font-weight: normal; }
th.sorted-asc::after { content: " \\2191"; color: #1f2328; } th.sorted-desc::after { content: " \\2193"; color: #1f2328; }
th small { display: block; font-weight: normal; color: #59636e; font-size: 0.8em; }
td a { color: inherit; text-decoration: inherit; }
td a:hover { color: #0969da; }
td .spread { color: #59636e; } td .n { color: #8c959f; font-size: 0.85em; }
td.best { font-weight: 700; } td.second { text-decoration: underline; }
td.fewer .n { color: #bc4c00; font-weight: 600; }
tbody.reported td { color: #59636e; font-style: italic; background: #fbfbfc; }
tbody.reported td .d { color: #8c959f; }
.caption { font-size: 0.85em; color: #59636e; max-width: 60em; margin: 0.2em 0 0.6em; }
figure { margin: 0.6em 0 1.4em; } figure svg { max-width: 100%; height: auto; }
details { margin: 0.2em 0; } details summary { cursor: pointer; font-size: 0.9em; }
details:target summary { background: #fff8c5; } .records td, .records th { font-size: 0.85em; }
code { font-size: 0.9em; background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; }
"""

# Sorting: click a header; numbers sort by their data-v value (missing cells last), text alphabetically.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, column) {
    th.classList.add("sortable");
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var descending = !th.classList.contains("sorted-desc");
      table.querySelectorAll("thead th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(descending ? "sorted-desc" : "sorted-asc");
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute("data-v"), y = b.cells[column].getAttribute("data-v");
        if (x === null || y === null) {
          var s = a.cells[column].textContent.localeCompare(b.cells[column].textContent);
          return descending ? -s : s;
        }
        if (x === "") return 1; if (y === "") return -1;
        return descending ? parseFloat(y) - parseFloat(x) : parseFloat(x) - parseFloat(y);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
// A link to the records behind a number opens their list.
function openTarget() {
  var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") { target.open = true; }
}
window.addEventListener("hashchange", openTarget);
openTarget();
"""


GENERATOR = f"imagenet-dg leaderboard; plots by matplotlib {matplotlib.__version__}"
"""Named in the page: the plots' SVG is byte-identical for one matplotlib version, not across versions."""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _prefix_ids(svg: str, prefix: str) -> str:
    """Make the ids of one inline SVG unique within the page."""
    names = set(svg_ids(svg))
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    return re.sub(r'(["(])#([^")]+)([")])',
                  lambda m: f"{m.group(1)}#{prefix}-{m.group(2)}{m.group(3)}" if m.group(2) in names else m.group(0),
                  svg)


class _Page:
    """Builds the page and the list of records each number links to."""

    def __init__(self, board: Leaderboard, out_dir: str | os.PathLike[str] | None) -> None:
        self.board = board
        self.out_dir = out_dir
        self.anchors: dict[tuple[str, str, tuple[Path, ...]], tuple[str, tuple[int, int, int]]] = {}
        self.plots = 0
        self.styles = palette(board.tables)
        self.records = {run.folder: run.record for run in board.runs}
        self.metric = board.metric

    def link(self, where: tuple[str, str], cell: Cell, order: tuple[int, int, int]) -> str:
        """The anchor of the list of records behind a number; ``where`` is (table title, row and column), ``order``
        (table, row, column) sorts the lists."""
        key = (*where, cell.runs)
        if key not in self.anchors:
            self.anchors[key] = (f"records-{len(self.anchors) + 1}", order)
        return self.anchors[key][0]

    def value(self, record: Record) -> str:
        """One record's number, one decimal more than the tables print it."""
        value = self.metric.value(record)
        return "not measured" if value is None else f"{value:.{self.metric.decimals + 1}f}"

    def relative(self, path: Path) -> str:
        return Path(path).as_posix() if self.out_dir is None else Path(os.path.relpath(path, self.out_dir)).as_posix()

    def plot(self, svg: str, caption: str) -> str:
        self.plots += 1
        return f"<figure>{_prefix_ids(svg, f'plot{self.plots}')}<figcaption class=\"caption\">{_e(caption)}</figcaption></figure>"

    def cell(self, cell: Cell | None, where: tuple[str, str], order: tuple[int, int, int], fewer: bool,
             rank: int | None = None) -> str:
        if cell is None or cell.n == 0:
            return '<td data-v="">' + MISSING + "</td>"
        mean, spread, seeds = cell_parts(cell, fewer, self.metric.decimals)
        classes = [c for c, on in (("fewer", fewer), ("best", rank == 1), ("second", rank == 2)) if on]
        spread_html = f' <span class="spread">± {spread}</span>' if spread else ""
        tip = f"{cell.n} seed{'s' if cell.n != 1 else ''}" + (", fewer than the rest of the table" if fewer else "")
        return (f'<td data-v="{cell.mean:.6f}"{" class=" + chr(34) + " ".join(classes) + chr(34) if classes else ""}>'
                f'<a href="#{self.link(where, cell, order)}" title="{_e(tip)}: show the records">{mean}{spread_html} '
                f'<span class="n">({seeds})</span></a></td>')

    def table(self, table: Table, index: int) -> str:
        title = table.title()
        head = "".join(f"<th>{_e(c.target)}<small>{_e(classes_text(c.num_classes))}</small></th>" for c in table.columns)
        parts = [f'<h3 id="table-{index}">{_e(title)}</h3>', f'<p class="caption">{_e(table.caption())} '
                 "Bold: best mean of the column; underlined: second. Click a header to sort, a number for its records.</p>",
                 '<table class="sortable"><thead><tr><th>method</th>' + head + "<th>average<small>over targets</small></th></tr></thead><tbody>"]
        targets = [*(c.target for c in table.columns), AVERAGE]
        cells_of = [{**row.cells, AVERAGE: row.average} for row in table.rows]
        ranks = {}
        for t in targets:
            printed = sorted({accuracy_text(c[t].mean, self.metric.decimals) for c in cells_of if t in c and c[t].n},
                             key=float, reverse=not self.metric.lower_is_better)
            ranks[t] = {text: r for r, text in enumerate(printed[:2], start=1)} if len(cells_of) > 1 else {}
        for row_index, (row, cells) in enumerate(zip(table.rows, cells_of)):
            texts = []
            for column, t in enumerate(targets):
                cell = cells.get(t)
                mean = accuracy_text(cell.mean, self.metric.decimals) if cell is not None and cell.n else None
                rank = ranks[t].get(mean) if mean is not None else None
                where = (title, f"{row.key.label}; {'average over targets' if t == AVERAGE else 'target ' + t}")
                fewer = bool(cell is not None and table.fewer_seeds(cell))
                texts.append(self.cell(cell, where, (index, row_index, column), fewer, rank))
            parts.append(f"<tr><td>{_e(row.key.label)}</td>{''.join(texts)}</tr>")
        parts.append("</tbody>")
        if table.reported:
            parts.append('<tbody class="reported">')
            for reported in table.reported:
                texts = []
                for t in targets:
                    if t not in reported.values:
                        texts.append(f"<td>{MISSING}</td>")
                        continue
                    difference = reported.differences.get(t)
                    d = "" if difference is None else f' <span class="d">(Δ {difference_text(difference)})</span>'
                    tip = f' title="{_e(reported.source)} ({_e(reported.file)})"'
                    texts.append(f"<td{tip}>{accuracy_text(reported.values[t])}{d}</td>")
                label = f"{reported.key.label}, reported: {reported.source}"
                parts.append(f"<tr><td>{_e(label)}</td>{''.join(texts)}</tr>")
            parts.append("</tbody>")
        parts.append("</table>")
        if table.reported:
            parts.append('<p class="caption">Italic rows: published numbers; Δ = reproduced mean − reported.</p>')
        parts.append(self.plot(table_plot(table, self.styles), f"{self.metric.title} per target: markers at the mean, "
                                                  "error bars one "
                                                  f"{SPREAD_NAMES[table.spread_kind]}, dots the individual seeds; "
                                                  "the axis is zoomed to the numbers."))
        return "\n".join(parts)

    def overview(self, overview: Overview, tables: list[Table]) -> str:
        head = "".join(f"<th>{_e(suite_label(s, overview.key.synthetic_data))}"
                       f"<small>{_e(classes_range_text(overview.classes[s]))}</small></th>" for s in overview.suites)
        parts = [f"<h3>{_e(overview.title())}</h3>",
                 f'<p class="caption">{_e(overview.caption())}</p>',
                 f'<table class="sortable"><thead><tr><th>method</th>{head}'
                 f'{"<th>mean over suites</th>" if overview.several else ""}</tr></thead><tbody>']
        by_suite = {t.key.suite: t for t in tables}
        overview_index = overviews(self.board).index(overview)
        for row_index, (row, cells) in enumerate(overview.rows):
            texts = []
            for suite in overview.suites:
                cell = cells.get(suite)
                table = by_suite[suite]
                where = (table.title(), f"{row.label}; average over targets")
                rows = [r.key for r in table.rows]
                order = (self.board.tables.index(table), rows.index(row) if row in rows else 0, len(table.columns))
                texts.append(self.cell(cell, where, order, cell is not None and overview.fewer_seeds(suite, cell)))
            mean = overview.mean_over_suites(cells)
            if overview.several and mean is None:
                texts.append(f'<td data-v="">{MISSING}</td>')
            elif overview.several:
                behind = Cell((), (), tuple(run for s in overview.suites for run in cells[s].runs), "sd")
                anchor = self.link((f"Suite averages, {overview.title()}", f"{row.label}; mean over suites"), behind,
                                   (len(self.board.tables), overview_index, row_index))
                texts.append(f'<td data-v="{mean:.6f}"><a href="#{anchor}" title="show the records">'
                             f"{accuracy_text(mean, self.metric.decimals)}</a></td>")
            parts.append(f"<tr><td>{_e(row.label)}</td>{''.join(texts)}</tr>")
        parts.append("</tbody></table>")
        parts.append(self.plot(cost_plot(tables, self.styles),
                               f"{overview.title()}: each method's suite average against its trainable parameters "
                               "and its training time per run (log axes; a method that trains nothing is drawn at 0, one decade below the "
                               "smallest other value)."))
        return "\n".join(parts)

    def records_section(self) -> str:
        parts = ['<h2 id="records">Records behind each number</h2>',
                 '<p class="caption">One entry per number of the tables above (a click on the number opens it): the '
                 f"finished runs behind it, each with a link to its <code>{RESULTS_FILE}</code>.</p>"]
        group = None
        for (title, item, runs), (anchor, _) in sorted(self.anchors.items(), key=lambda entry: entry[1][1]):
            if title != group:
                parts.append(f"<h3>{_e(title)}</h3>")
                group = title
            rows = []
            for folder in runs:
                record = self.records[folder]
                path = self.relative(folder / RESULTS_FILE)
                rows.append(f"<tr><td>{record.seed}</td><td>{'' if record.split_seed is None else record.split_seed}</td>"
                            f"<td>{_e(record.target)}</td><td>{self.value(record)}</td>"
                            f"<td>{_e(record.device_type)}</td>"
                            f'<td><a href="{_e(path)}"><code>{_e(path)}</code></a></td></tr>')
            parts.append(f'<details id="{anchor}"><summary>{_e(item)} ({len(runs)} run{"s" if len(runs) != 1 else ""})'
                         '</summary><table class="records"><thead><tr><th>seed</th>'
                         f"<th>split seed</th><th>target</th><th>{_e(self.metric.name)}</th><th>device</th>"
                         "<th>record</th></tr></thead>"
                         f"<tbody>{''.join(rows)}</tbody></table></details>")
        return "\n".join(parts)

    def render(self) -> str:
        board = self.board
        body = ["<h1>Leaderboard</h1>"]
        runs = board.run_count
        summary = f"{runs} finished run{'s' if runs != 1 else ''} in {len(board.tables)} table{'s' if len(board.tables) != 1 else ''}. "
        if board.unfinished:
            summary += (f"{len(board.unfinished)} unfinished run folder{'s' if len(board.unfinished) != 1 else ''} "
                        "not counted: " + ", ".join(f"<code>{_e(self.relative(p))}</code>" for p in board.unfinished) + ".")
        else:
            summary += "No unfinished run folders."
        body.append(f'<p class="summary">{summary}</p>')
        body += [f'<p class="summary">{_e(note)}</p>' for note in board.notes()]
        if board.tables:
            suites = sorted({(t.key.suite, t.key.synthetic_data) for t in board.tables})
            body.append("<p>Suites: " + " · ".join(f'<a href="#{_suite_id(*s)}">{_e(suite_label(*s))}</a>' for s in suites)
                        + ' · <a href="#records">records</a></p>')
            body.append("<h2>Suite averages</h2>")
            for overview in overviews(board):
                tables = [t for t in board.tables if OverviewKey.of(t.key) == overview.key]
                body.append(self.overview(overview, tables))
            for suite in suites:
                body.append(f'<h2 id="{_suite_id(*suite)}">{_e(suite_label(*suite))}</h2>')
                for index, table in enumerate(board.tables):
                    if (table.key.suite, table.key.synthetic_data) == suite:
                        body.append(self.table(table, index))
            body.append(self.records_section())
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<meta name=\"generator\" content=\"{GENERATOR}\">\n"
                f"<title>Leaderboard</title>\n<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body)
                + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


def _suite_id(suite: str, synthetic_data: bool) -> str:
    return _e(f"suite-{suite}" + ("-synthetic" if synthetic_data else ""))


def render_html(board: Leaderboard, out_dir: str | os.PathLike[str] | None = None) -> str:
    """The whole page; links to records are relative to ``out_dir`` (the folder the page is written to)."""
    return _Page(board, out_dir).render()
