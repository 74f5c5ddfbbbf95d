"""The same tables for another metric: worst-class accuracy, expected calibration error, negative log-likelihood."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from imagenet_dg.cli import main
from imagenet_dg.records import collect
from leaderboard.aggregation import LeaderboardError, build_leaderboard
from leaderboard.publish import CSV_FILE, HTML_FILE, LATEX_FILE, MARKDOWN_FILE
from leaderboard.tidy import COLUMNS
from test_leaderboard import record, write_all
from test_leaderboard_outputs import PUBLISHED, _compile_latex

# photo: guidg+clipood ECE 2, 3, 4 (NLL 0.2, 0.3, 0.4); clipood ECE 8, 10 (NLL 0.9, 1.1); zeroshot not measured
CALIBRATION = {"guidg": ((2.0, 0.2), (3.0, 0.3), (4.0, 0.4)), "clipood": ((8.0, 0.9), (10.0, 1.1))}


def items():
    runs = [record("photo", s, 60.0 + s, ece=e, nll=n, worst_class_accuracy=50.0 + s,
                   class_accuracy={"0": 50.0 + s, "1": 90.0})
            for s, (e, n) in enumerate(CALIBRATION["guidg"], start=1)]
    runs += [record("photo", s, 70.0 + s, ece=e, nll=n, method="clipood", base=None, routing=None)
             for s, (e, n) in enumerate(CALIBRATION["clipood"], start=1)]
    runs += [record("photo", s, 40.0, ece=None, nll=None, method="zeroshot", base=None, routing=None)
             for s in (1, 2, 3)]
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("metrics") / "runs", items())


def table_of(runs: Path, metric: str):
    (table,) = build_leaderboard(collect(runs), PUBLISHED, "sd", metric=metric).tables
    return table, {row.key.label: row for row in table.rows}


def test_a_table_of_ece_holds_each_runs_ece_and_says_lower_is_better(runs: Path) -> None:
    table, rows = table_of(runs, "ece")
    assert rows["guidg+clipood"].cells["photo"].values == (2.0, 3.0, 4.0)
    assert rows["clipood"].cells["photo"].mean == pytest.approx(9.0)
    assert "Expected calibration error (%) on each target domain" in table.caption()
    assert "15 equal-width bins" in table.caption() and "lower is better" in table.caption()


def test_a_table_of_nll_or_worst_class_accuracy_holds_that_number(runs: Path) -> None:
    table, rows = table_of(runs, "nll")
    assert rows["guidg+clipood"].cells["photo"].values == (0.2, 0.3, 0.4)
    assert "Negative log-likelihood (nats) on each target domain" in table.caption()
    assert "natural log" in table.caption() and "lower is better" in table.caption()
    table, rows = table_of(runs, "worst-class")
    assert rows["guidg+clipood"].cells["photo"].values == (51.0, 52.0, 53.0)
    assert "Worst-class accuracy (%) on each target domain" in table.caption() and "higher is better" in table.caption()


def test_runs_that_did_not_measure_the_metric_are_left_out_and_counted(runs: Path) -> None:
    table, rows = table_of(runs, "ece")
    assert rows["zeroshot"].cells == {} and rows["zeroshot"].average.n == 0
    assert "3 runs of this table did not measure it and are left out." in table.caption()
    assert "did not measure" not in table_of(runs, "accuracy")[0].caption()


def test_published_accuracies_are_put_beside_accuracy_tables_only(runs: Path) -> None:
    assert table_of(runs, "accuracy")[0].reported
    assert not table_of(runs, "ece")[0].reported and not table_of(runs, "worst-class")[0].reported


def test_an_unknown_metric_is_refused(runs: Path) -> None:
    with pytest.raises(LeaderboardError, match="metric 'f1': expected one of accuracy, worst-class, ece, nll"):
        build_leaderboard(collect(runs), (), "sd", metric="f1")


@pytest.fixture(scope="module")
def ece_out(runs: Path) -> Path:
    out = runs.parent / "ece"
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--out", str(out), "--metric", "ece"])
    assert result.exit_code == 0, result.output
    return out


def test_the_best_of_a_lower_is_better_metric_is_its_lowest(ece_out: Path) -> None:
    latex = (ece_out / LATEX_FILE).read_text()
    rows = {line.split(" & ")[0]: line for line in latex.splitlines() if " & " in line}
    assert "$\\mathbf{3.0 \\pm 1.0}$" in rows["guidg+clipood"] and "\\underline{$9.0 \\pm 1.4$}" in rows["clipood"]
    page = (ece_out / HTML_FILE).read_text()
    best = re.search(r'<td data-v="([0-9.]+)" class="best">', page)
    assert best is not None and float(best.group(1)) == pytest.approx(3.0)


def test_every_output_of_another_metric_says_what_its_numbers_are(ece_out: Path) -> None:
    markdown = (ece_out / MARKDOWN_FILE).read_text()
    assert "Every number below is the expected calibration error (%)." in markdown
    assert "| guidg+clipood | 3.0 ± 1.0 (3) | 3.0 ± 1.0 (3) |" in markdown and "| zeroshot | – | – |" in markdown
    assert "Average expected calibration error (%) over each suite's targets" in markdown
    frame = pd.read_csv(ece_out / CSV_FILE)
    assert list(frame.columns) == [*COLUMNS, "metric", "selection"]
    assert set(frame["metric"]) == {"ece"} and set(frame["selection"]) == {"none"}
    page = (ece_out / HTML_FILE).read_text()
    assert "Expected calibration error per target" in page and "<th>ece</th>" in page


def test_an_accuracy_csv_keeps_its_columns(runs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "o" / CSV_FILE).columns) == list(COLUMNS)


def test_nll_is_written_with_three_decimals(runs: Path) -> None:
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--metric", "nll"])
    assert result.exit_code == 0, result.output
    assert "| guidg+clipood | 0.300 ± 0.100 (3) |" in result.output
    assert "| clipood | 1.000 ± 0.141 (2†) |" in result.output


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine installed")
def test_the_latex_of_another_metric_compiles(ece_out: Path, tmp_path: Path) -> None:
    log = _compile_latex(ece_out / LATEX_FILE, tmp_path)
    assert "Overfull \\hbox" not in log and "Missing character" not in log
