"""Records aggregated over seeds into the leaderboard's tables, with reported numbers beside them.

One table per (suite, protocol, model, pretrained weights, shots); one row per (method, base, routing, changed
settings: :mod:`leaderboard.settings`); one column per target domain plus the average over targets. A cell is the
mean over seeds of one metric (:mod:`leaderboard.metrics`; accuracy by default), its spread and the number of
seeds. The average column is computed per seed first (the mean over targets of one seed's runs), then
aggregated, so its spread is the spread of per-seed averages, not a combination of the cells' spreads.
Records that disagree on anything that changes what a number means are refused, never averaged together. Under a
selection rule (:mod:`leaderboard.selection`) the configurations of a sweep are first reduced to one per seed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from guidg.methods import METHODS
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.labels import SYNTHETIC_CAPTION, SYNTHETIC_SUITE, suite_label, weights_label
from imagenet_dg.records import FinishedRun, Record, RecordSet
from leaderboard.metrics import ACCURACY, METRICS, Metric
from leaderboard.reported import AVERAGE, Reported
from leaderboard.selection import NO_SELECTION, RULES, SELECTIONS
from leaderboard.settings import Settings, changed_settings, differing_settings, preset_config, settings_text

SPREADS = ("auto", "sd", "se")
SPREAD_NAMES = {"sd": "standard deviation", "se": "standard error"}
CELL_FIELDS = ("protocol_version", "manifest_content_hash", "model", "pretrained", "synthetic_weights",
               "synthetic_data", "precision", "shots", "preset", "config", "eval_batch_size", "suite_source")
"""What every record of one cell must share: the same number then means the same thing."""
SWEPT_FIELDS = ("config", "eval_batch_size")
"""What the configurations of a sweep differ in: under a selection rule, each seed of a cell has its own."""
METHOD_ORDER = tuple(METHODS)
"""Row order: the order the methods are registered in (:data:`guidg.methods.REGISTERED`: the baselines, each
fine-tuning base followed by GuiDG on top of it, as in the paper's Table 8); unregistered ones after them."""
TRAINING_PHASE = "fit"
"""The phase the harness times around training; its parts (e.g. ``experts``, ``finetune``) are recorded too and
must not be added to it."""
NOT_TRAINING = ("eval", "score", "test", "load")
"""Without a ``fit`` phase, phases whose name starts with one of these are left out of training time."""


class LeaderboardError(ImageNetDGError):
    """Records cannot be put into one table as asked."""


def _shots_text(shots: int | None) -> str:
    return "all images" if shots is None else f"{shots} shots"


@dataclass(frozen=True)
class TableKey:
    """What one table holds: a suite under one protocol, with one model, weights and number of shots, on real or
    on synthetic data (never both)."""

    suite: str
    protocol: str
    model: str
    pretrained: str
    shots: int | None
    synthetic_data: bool = False
    synthetic_weights: bool = False

    @property
    def suite_label(self) -> str:
        return suite_label(self.suite, self.synthetic_data)

    @property
    def weights_label(self) -> str:
        return weights_label(self.pretrained, self.synthetic_weights)

    @property
    def synthetic(self) -> bool:
        return self.synthetic_data or self.synthetic_weights

    def title(self) -> str:
        return f"{self.suite_label}, {self.protocol} protocol, {self.model}, {self.weights_label}, {_shots_text(self.shots)}"

    def sort_key(self) -> tuple:
        return (self.suite, self.synthetic_data, self.protocol, self.model, self.pretrained, self.synthetic_weights,
                -1 if self.shots is None else self.shots)


@dataclass(frozen=True)
class RowKey:
    """One row: a method, its base, its routing and the settings it changed."""

    method: str
    base: str | None
    routing: str | None
    settings: Settings = ()
    """The settings that differ from the preset's (or among the records, when the preset is unknown)."""

    @property
    def label(self) -> str:
        """``clipood``, ``guidg+clipood (sample routing)``, ``clipood (finetune.lr=1e-5)``."""
        label = self.method if self.base is None else f"{self.method}+{self.base}"
        notes = [f"{self.routing} routing"] if self.routing not in (None, "batch") else []
        notes += [settings_text(self.settings)] if self.settings else []
        return f"{label} ({'; '.join(notes)})" if notes else label

    @property
    def method_row(self) -> RowKey:
        """The row without its changed settings: the one a selection rule reduces a sweep to."""
        return replace(self, settings=())

    def sort_key(self) -> tuple:
        name = self.method if self.base is None else f"{self.method}+{self.base}"  # the registered name
        rank = METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, name, self.routing not in (None, "batch"), self.routing or "", self.settings)


def row_key(record: Record) -> RowKey:
    """The record's method, base and routing (no settings)."""
    return RowKey(record.method, record.base, record.routing)


def row_keys(runs: Sequence[FinishedRun]) -> list[RowKey]:
    """The row of each run: :func:`row_key` with the settings that differ from the record's preset; for a preset
    this version does not know, the settings on which the records of that row and preset differ among themselves."""
    presets: dict[str, dict | None] = {}
    keys: list[RowKey] = []
    unknown: dict[tuple[RowKey, str], list[int]] = defaultdict(list)
    for index, run in enumerate(runs):
        record, base = run.record, row_key(run.record)
        if record.preset not in presets:
            presets[record.preset] = preset_config(record.preset)
        preset = presets[record.preset]
        if preset is None:
            unknown[(base, record.preset)].append(index)
            keys.append(base)
        else:
            settings = changed_settings(record.config, preset, routed=base.routing is not None)
            keys.append(replace(base, settings=settings))
    for (base, _), indices in unknown.items():
        configs = [runs[i].record.config for i in indices]
        for index, settings in zip(indices, differing_settings(configs, routed=base.routing is not None)):
            keys[index] = replace(base, settings=settings)
    return keys


@dataclass(frozen=True)
class Cell:
    """Mean of a metric over seeds, its spread (None with fewer than two seeds) and the runs behind it."""

    values: tuple[float, ...]
    """One value of the table's metric (accuracy in percent by default) per seed, in replicate order."""
    replicates: tuple[tuple[int, int | None], ...]
    """(seed, split seed) of each value."""
    runs: tuple[Path, ...]
    """Run folders behind the cell (for the average column: every run of the row's complete seeds)."""
    spread_kind: str
    """``sd`` or ``se``."""

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def spread(self) -> float | None:
        if self.n < 2:
            return None
        deviation = statistics.stdev(self.values)
        return deviation / math.sqrt(self.n) if self.spread_kind == "se" else deviation


@dataclass(frozen=True)
class Column:
    """A target domain of a table, with what a reader needs to judge its numbers."""

    target: str
    num_classes: int

    @property
    def chance(self) -> float:
        """Accuracy of a uniform random guess, in percent."""
        return 100.0 / self.num_classes


@dataclass(frozen=True)
class Row:
    """A reproduced row: one cell per target, the average over targets, and what the row cost."""

    key: RowKey
    cells: dict[str, Cell]
    average: Cell
    n_trainable: float
    """Mean number of trainable parameters over the row's runs."""
    training_seconds: float
    """Mean training wall time per run (every phase but scoring)."""
    device_types: tuple[str, ...]


@dataclass(frozen=True)
class ReportedRow:
    """Published numbers beside a reproduced row, with the difference reproduced minus reported."""

    key: RowKey
    source: str
    file: str
    values: dict[str, float]
    """Per target, and under ``"average"`` the average (reported, or computed when every target is reported)."""
    differences: dict[str, float]
    """Reproduced mean minus reported, wherever both exist (``"average"`` included)."""


@dataclass(frozen=True)
class Table:
    key: TableKey
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    reported: tuple[ReportedRow, ...]
    spread_kind: str
    precisions: tuple[str, ...]
    presets: tuple[str, ...]
    device_types: tuple[str, ...]
    max_seeds: int
    """The largest number of seeds of any cell; cells with fewer are marked."""
    metric: Metric = ACCURACY
    selection: str = NO_SELECTION
    """The selection rule across configurations (:data:`leaderboard.selection.SELECTIONS`)."""
    unmeasured: int = 0
    """Runs behind the table whose record does not hold the metric (left out of the cells)."""

    def fewer_seeds(self, cell: Cell) -> bool:
        return 0 < cell.n < self.max_seeds

    def title(self) -> str:
        """The table's title: its key's, and the selection rule when there is one."""
        return _with_selection(self.key.title(), self.selection)

    def caption(self) -> str:
        """What the numbers are, said once per table (the spread convention included); the title is apart."""
        spread = SPREAD_NAMES[self.spread_kind]
        marked = any(self.fewer_seeds(c) for row in self.rows for c in (*row.cells.values(), row.average))
        synthetic = _selection_caption(self.selection)
        if self.key.synthetic_data:
            synthetic += SYNTHETIC_CAPTION + " "
        if self.key.synthetic_weights:
            synthetic += "Weights trained on synthetic pictures only (a synthetic world), never on real images. "
        elif self.key.pretrained == "none":
            synthetic += "Random (untrained) weights. "
        about = self.metric.about + " " if self.metric.about else ""
        if self.unmeasured:
            runs = f"{self.unmeasured} run{'s' if self.unmeasured != 1 else ''}"
            about += f"{runs} of this table did not measure it and {'is' if self.unmeasured == 1 else 'are'} left out. "
        return (synthetic + f"{self.metric.heading} on each target domain: mean ± {spread} over seeds (n = number of "
                "seeds). Average: the mean over targets, computed per seed; its spread is over the per-seed averages. "
                + about + (f"† marks cells with fewer seeds than the table's {self.max_seeds}. " if marked else "")
                + f"Precision {', '.join(self.precisions)}; preset {', '.join(self.presets)}; "
                f"ran on {', '.join(self.device_types)}.")


@dataclass(frozen=True)
class Leaderboard:
    tables: tuple[Table, ...]
    unfinished: tuple[Path, ...]
    spread: str
    """The option asked for (``auto``, ``sd`` or ``se``)."""
    runs: tuple[FinishedRun, ...]
    """Every finished run behind the tables."""
    metric: Metric = ACCURACY
    selection: str = NO_SELECTION

    @property
    def run_count(self) -> int:
        return len(self.runs)

    def notes(self) -> list[str]:
        """What every number of the leaderboard is, said once at its top when it is not the default (accuracy,
        every configuration its own row)."""
        metric = self.metric
        notes = [] if metric.is_accuracy else [f"Every number below is the {metric.noun}. {metric.about}"]
        return notes + ([RULES[self.selection].caption] if self.selection != NO_SELECTION else [])


def _with_selection(title: str, selection: str) -> str:
    return title if selection == NO_SELECTION else f"{title}, {RULES[selection].title}"


def _selection_caption(selection: str) -> str:
    return "" if selection == NO_SELECTION else RULES[selection].caption + " "


def metric_for(name: str) -> Metric:
    """The metric called ``name`` (:data:`leaderboard.metrics.METRICS`)."""
    if name not in METRICS:
        raise LeaderboardError(f"metric {name!r}: expected one of {', '.join(METRICS)}")
    return METRICS[name]


def check_selection(name: str) -> str:
    """``name`` when it is a selection rule (or ``none``)."""
    if name not in SELECTIONS:
        raise LeaderboardError(f"selection {name!r}: expected one of {', '.join(SELECTIONS)}")
    return name


def spread_for(protocol: str, spread: str) -> str:
    """The spread convention of a table: as asked, or with ``auto`` the convention of the protocol's literature
    (few-shot papers in the CoOp line report standard deviations, DomainBed reports standard errors)."""
    if spread not in SPREADS:
        raise LeaderboardError(f"spread {spread!r}: expected one of {', '.join(SPREADS)}")
    if spread != "auto":
        return spread
    return "sd" if protocol == "fewshot" else "se"


def training_seconds(record: Record) -> float:
    """Training wall time of a run: its ``fit`` phase, or, in a record without one, every phase but loading and
    scoring."""
    if TRAINING_PHASE in record.phase_seconds:
        return record.phase_seconds[TRAINING_PHASE]
    return sum(s for phase, s in record.phase_seconds.items() if not phase.lower().startswith(NOT_TRAINING))


def _results_file(run: FinishedRun) -> str:
    return str(run.folder / "results.jsonl")


def _differences(name: str, runs: Sequence[FinishedRun]) -> str | None:
    """How the records' values of ``name`` differ, each with its files; None when they agree. Configurations are
    told apart by the settings in which they differ, not printed whole."""
    by_value: dict[str, list[FinishedRun]] = defaultdict(list)
    for run in runs:
        by_value[json.dumps(getattr(run.record, name), sort_keys=True)].append(run)
    if len(by_value) < 2:
        return None
    groups = sorted(by_value.items())
    if name == "config":
        described = differing_settings([json.loads(value) for value, _ in groups])
        texts = [settings_text(settings) for settings in described]
    else:
        texts = [repr(getattr(group[0].record, name)) for _, group in groups]
    return "; ".join(f"{text} in {', '.join(map(_results_file, group))}" for text, (_, group) in zip(texts, groups))


def check_cell(runs: Sequence[FinishedRun], where: str, fields: Sequence[str] = CELL_FIELDS, *,
               one_per_seed: bool = True) -> None:
    """Refuse a cell whose records disagree on anything in ``fields`` (:data:`CELL_FIELDS`), or, with
    ``one_per_seed``, repeat a seed."""
    problems = [f"{name} differs ({listed})" for name in fields if (listed := _differences(name, runs)) is not None]
    by_replicate: dict[tuple, list[str]] = defaultdict(list)
    for run in runs:
        by_replicate[(run.record.seed, run.record.split_seed)].append(_results_file(run))
    for (seed, split_seed), files in sorted(by_replicate.items(), key=lambda item: repr(item[0])):
        if one_per_seed and len(files) > 1:
            problems.append(f"seed {seed} (split seed {split_seed}) is recorded {len(files)} times ({', '.join(files)})")
    if problems:
        raise LeaderboardError(
            f"cannot put into one cell ({where}) records that disagree: {'; '.join(problems)}. Keep runs of "
            "different settings in separate runs folders and pass only the ones meant for one table"
        )


def _cell(runs: Sequence[FinishedRun], spread_kind: str, metric: Metric) -> Cell:
    """The cell of the runs that measured ``metric``."""
    measured = [r for r in runs if metric.value(r.record) is not None]
    ordered = sorted(measured, key=lambda r: (r.record.seed,
                                              -1 if r.record.split_seed is None else r.record.split_seed))
    return Cell(
        values=tuple(metric.value(r.record) for r in ordered),  # type: ignore[misc]
        replicates=tuple((r.record.seed, r.record.split_seed) for r in ordered),
        runs=tuple(r.folder for r in ordered),
        spread_kind=spread_kind,
    )


def _average_cell(cells: dict[str, Cell], targets: Sequence[str], spread_kind: str) -> Cell:
    """Mean over targets computed per seed, over the seeds present in every target."""
    if any(t not in cells for t in targets):
        return Cell((), (), (), spread_kind)
    per_target = [dict(zip(cells[t].replicates, zip(cells[t].values, cells[t].runs))) for t in targets]
    complete = sorted(set.intersection(*(set(p) for p in per_target)), key=lambda r: (r[0], -1 if r[1] is None else r[1]))
    values = tuple(statistics.fmean(p[r][0] for p in per_target) for r in complete)
    runs = tuple(p[r][1] for r in complete for p in per_target)
    return Cell(values, tuple(complete), runs, spread_kind)


def _columns(key: TableKey, runs: Sequence[FinishedRun]) -> tuple[Column, ...]:
    classes: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        classes[run.record.target][run.record.num_classes].append(_results_file(run))
    columns = []
    for target in sorted(classes):
        if len(classes[target]) > 1:
            listed = "; ".join(f"{n} classes in {', '.join(files)}" for n, files in sorted(classes[target].items()))
            raise LeaderboardError(f"{key.title()}: the target {target} has different numbers of classes ({listed}); "
                                   "these records come from different builds and cannot share a column")
        columns.append(Column(target, next(iter(classes[target]))))
    return tuple(columns)


def _reported_rows(key: TableKey, rows: Sequence[Row], columns: Sequence[Column],
                   reported: Iterable[Reported], metric: Metric) -> tuple[ReportedRow, ...]:
    if key.synthetic or not metric.is_accuracy:
        return ()  # published numbers are accuracies of real data and real weights: never beside synthetic ones
    by_row = {row.key: row for row in rows}
    targets = [c.target for c in columns]
    grouped: dict[tuple[RowKey, str, str], dict[str, float]] = defaultdict(dict)
    for item in reported:
        if (item.suite, item.protocol, item.model, item.pretrained) != (key.suite, key.protocol, key.model, key.pretrained):
            continue
        if not item.matches_shots(key.shots):
            continue
        row = RowKey(item.method, item.base, item.routing)
        if row in by_row and (item.target in targets or item.target == AVERAGE):
            grouped[(row, item.source, item.file)][item.target] = item.accuracy
    result = []
    for (row, source, file), values in grouped.items():
        values = dict(values)
        if AVERAGE not in values and all(t in values for t in targets):
            values[AVERAGE] = statistics.fmean(values[t] for t in targets)
        reproduced = by_row[row]
        means = {t: c.mean for t, c in reproduced.cells.items()} | {AVERAGE: reproduced.average.mean}
        differences = {t: means[t] - v for t, v in values.items() if means.get(t) is not None}
        result.append(ReportedRow(row, source, file, values, differences))
    return tuple(sorted(result, key=lambda r: (r.key.sort_key(), r.source)))


def _selected(key: TableKey, by_row: Mapping[RowKey, Mapping[str, list[FinishedRun]]],
              selection: str) -> dict[RowKey, dict[str, list[FinishedRun]]]:
    """Each method row's configurations reduced to one run per (target, seed) by the selection rule; the candidates
    of one (row, target) must agree on everything but their configuration."""
    rule = RULES[selection]
    candidates: dict[RowKey, dict[str, list[FinishedRun]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(by_row, key=RowKey.sort_key):  # so that a tie goes to the configuration that sorts first
        for target, runs in by_row[row].items():
            candidates[row.method_row][target].extend(runs)
    chosen: dict[RowKey, dict[str, list[FinishedRun]]] = defaultdict(lambda: defaultdict(list))
    for row, targets in candidates.items():
        for target, runs in targets.items():
            where = f"{key.title()}; {row.label}; target {target}"
            check_cell(runs, where, [f for f in CELL_FIELDS if f not in SWEPT_FIELDS], one_per_seed=False)
            unscored = [_results_file(r) for r in runs if rule.score(r.record) is None]
            if unscored:
                raise LeaderboardError(f"{where}: cannot select by {rule.name}: {', '.join(unscored)} hold no "
                                       f"{rule.needs}; choose another --selection")
            by_replicate: dict[tuple[int, int | None], list[FinishedRun]] = defaultdict(list)
            for run in runs:
                by_replicate[(run.record.seed, run.record.split_seed)].append(run)
            for group in by_replicate.values():
                chosen[row][target].append(max(group, key=lambda r: rule.score(r.record)))  # the first of equals
    return chosen


def build_table(key: TableKey, runs: Sequence[FinishedRun], reported: Iterable[Reported], spread: str,
                selection: str = NO_SELECTION, metric: str = ACCURACY.name) -> Table:
    """One table from the runs of one (suite, protocol, model, weights, shots, synthetic or real data); runs of
    another key, synthetic among real ones above all, are refused. Every configuration is a row of its own, unless
    ``selection`` names a rule that picks one per seed; the cells are of ``metric``."""
    check_selection(selection)
    shown = metric_for(metric)
    strangers = [_results_file(r) for r in runs if table_key(r.record) != key]
    if strangers:
        raise LeaderboardError(
            f"{key.title()}: records of another table ({', '.join(strangers)}); synthetic and real data, or "
            "synthetic-world and other weights, never share a table"
        )
    spread_kind = spread_for(key.protocol, spread)
    columns = _columns(key, runs)
    targets = [c.target for c in columns]
    by_row: dict[RowKey, dict[str, list[FinishedRun]]] = defaultdict(lambda: defaultdict(list))
    for run, row in zip(runs, row_keys(runs)):
        by_row[row][run.record.target].append(run)
    for row in by_row:
        for target in targets:
            if by_row[row][target]:
                check_cell(by_row[row][target], f"{key.title()}; {row.label}; target {target}")
    if selection != NO_SELECTION:
        by_row = _selected(key, by_row, selection)
    rows = []
    for row in sorted(by_row, key=RowKey.sort_key):
        cells = {}
        for target in targets:
            if by_row[row][target] and (cell := _cell(by_row[row][target], spread_kind, shown)).n:
                cells[target] = cell
        row_runs = [r for target_runs in by_row[row].values() for r in target_runs]
        rows.append(Row(
            key=row, cells=cells, average=_average_cell(cells, targets, spread_kind),
            n_trainable=statistics.fmean(r.record.n_trainable for r in row_runs),
            training_seconds=statistics.fmean(training_seconds(r.record) for r in row_runs),
            device_types=tuple(sorted({r.record.device_type for r in row_runs})),
        ))
    counts = [c.n for row in rows for c in (*row.cells.values(), row.average) if c.n]
    shown_runs = [r for targets in by_row.values() for target_runs in targets.values() for r in target_runs]
    return Table(
        key=key, columns=columns, rows=tuple(rows), reported=_reported_rows(key, rows, columns, reported, shown),
        spread_kind=spread_kind,
        precisions=tuple(sorted({r.record.precision for r in runs})),
        presets=tuple(sorted({r.record.preset for r in runs})),
        device_types=tuple(sorted({r.record.device_type for r in runs})),
        max_seeds=max(counts, default=0),
        metric=shown, selection=selection,
        unmeasured=sum(shown.value(r.record) is None for r in shown_runs),
    )


def table_key(record: Record) -> TableKey:
    return TableKey(record.suite, record.protocol, record.model, record.pretrained, record.shots,
                    record.synthetic_data, record.synthetic_weights)


def build_leaderboard(found: RecordSet, reported: Iterable[Reported] = (), spread: str = "auto",
                      selection: str = NO_SELECTION, metric: str = ACCURACY.name) -> Leaderboard:
    """Every table of the records found, with the reported numbers that match them: every configuration its own
    row, or under a ``selection`` rule one configuration per seed; the cells are of ``metric``."""
    # reject an unknown option even when there is nothing to aggregate
    spread_for("fewshot", spread)
    check_selection(selection)
    shown = metric_for(metric)
    reported = list(reported)
    by_table: dict[TableKey, list[FinishedRun]] = defaultdict(list)
    for run in found.runs:
        by_table[table_key(run.record)].append(run)
    tables = tuple(build_table(key, by_table[key], reported, spread, selection, metric)
                   for key in sorted(by_table, key=TableKey.sort_key))
    return Leaderboard(tables, tuple(found.unfinished), spread, tuple(found.runs), shown, selection)


@dataclass(frozen=True)
class OverviewKey:
    """The tables that share a protocol, model, weights, shots and kind of data (synthetic or real), compared
    across suites."""

    protocol: str
    model: str
    pretrained: str
    shots: int | None
    synthetic_data: bool = False
    synthetic_weights: bool = False

    @classmethod
    def of(cls, key: TableKey) -> OverviewKey:
        return cls(key.protocol, key.model, key.pretrained, key.shots, key.synthetic_data, key.synthetic_weights)

    def title(self) -> str:
        data = f", {SYNTHETIC_SUITE} data" if self.synthetic_data else ""
        return (f"{self.protocol} protocol, {self.model}, {weights_label(self.pretrained, self.synthetic_weights)}, "
                f"{_shots_text(self.shots)}{data}")

    def sort_key(self) -> tuple:
        return (self.synthetic_data, self.protocol, self.model, self.pretrained, self.synthetic_weights,
                -1 if self.shots is None else self.shots)


@dataclass(frozen=True)
class Overview:
    """Suite averages side by side: one row per (method, base, routing), one column per suite."""

    key: OverviewKey
    suites: tuple[str, ...]
    classes: dict[str, tuple[int, ...]]
    """The numbers of classes of each suite's targets (distinct, sorted)."""
    rows: tuple[tuple[RowKey, dict[str, Cell]], ...]
    spread_kinds: tuple[str, ...]
    max_seeds: dict[str, int]
    """The largest number of seeds of each suite's table: a suite average with fewer is marked, as in the table."""
    metric: Metric = ACCURACY
    selection: str = NO_SELECTION

    def fewer_seeds(self, suite: str, cell: Cell) -> bool:
        return 0 < cell.n < self.max_seeds.get(suite, 0)

    def title(self) -> str:
        return _with_selection(self.key.title(), self.selection)

    def caption(self) -> str:
        spreads = " / ".join(SPREAD_NAMES[s] for s in self.spread_kinds)
        return (_selection_caption(self.selection) + (SYNTHETIC_CAPTION + " " if self.key.synthetic_data else "")
                + f"Average {self.metric.noun} over each suite's targets, mean ± {spreads} over seeds (n); "
                "† fewer seeds than the rest of the suite's table."
                + (f" {self.metric.about}" if self.metric.about else ""))

    @property
    def several(self) -> bool:
        """Whether there is more than one suite, so that a mean over suites means something."""
        return len(self.suites) > 1

    def mean_over_suites(self, cells: dict[str, Cell]) -> float | None:
        """Mean of the suite averages, when the row has one in every suite."""
        means = [cells[s].mean for s in self.suites if s in cells]
        if len(means) != len(self.suites) or any(m is None for m in means):
            return None
        return statistics.fmean(means)  # type: ignore[arg-type]


def overviews(board: Leaderboard) -> tuple[Overview, ...]:
    """One overview per (protocol, model, weights, shots) of the leaderboard's tables."""
    grouped: dict[OverviewKey, list[Table]] = defaultdict(list)
    for table in board.tables:
        grouped[OverviewKey.of(table.key)].append(table)
    result = []
    for key in sorted(grouped, key=OverviewKey.sort_key):
        tables = grouped[key]
        suites = tuple(t.key.suite for t in tables)
        cells: dict[RowKey, dict[str, Cell]] = defaultdict(dict)
        for table in tables:
            for row in table.rows:
                cells[row.key][table.key.suite] = row.average
        rows = tuple((row, cells[row]) for row in sorted(cells, key=RowKey.sort_key))
        classes = {t.key.suite: tuple(sorted({c.num_classes for c in t.columns})) for t in tables}
        result.append(Overview(key, suites, classes, rows, tuple(sorted({t.spread_kind for t in tables})),
                               {t.key.suite: t.max_seeds for t in tables}, board.metric, board.selection))
    return tuple(result)
