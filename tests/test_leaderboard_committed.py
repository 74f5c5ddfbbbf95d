"""The leaderboard kept in the repository is what the command generates from the records kept beside it."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from imagenet_dg.records import RESULTS_FILE, collect
from leaderboard.aggregation import build_leaderboard
from leaderboard.committed import (
    README_END, README_START, comparable, committed_run_folders, import_runs, main, readme_block, replace_runs,
    stale_outputs, update_readme, upgrade_records,
)
from leaderboard.page import GENERATOR
from leaderboard.publish import HTML_FILE, OUTPUT_FILES, publish
from leaderboard.reported import load_reported
from test_leaderboard import record, write_all

# the repository's folders (not the installed package's): the test checks what is committed
REPOSITORY = Path(__file__).resolve().parents[1]
COMMITTED_RUNS = REPOSITORY / "leaderboard" / "runs"
COMMITTED_BOARD = REPOSITORY / "leaderboard" / "board"


def committed_board():
    return build_leaderboard(collect([COMMITTED_RUNS]), load_reported())


def test_the_committed_outputs_are_exactly_what_the_committed_records_give() -> None:
    stale = stale_outputs(committed_board(), COMMITTED_BOARD)
    assert not stale, (f"{', '.join(stale)} in {COMMITTED_BOARD} differ from what the committed records give; "
                       "regenerate them with: python -m leaderboard.committed")


def test_the_committed_records_hold_the_embedded_defaults_mini_runs_over_three_seeds() -> None:
    board = committed_board()
    assert not board.unfinished
    # every committed run is of the miniature (synthetic) data, and every table and its caption say so
    assert board.runs and all(run.record.synthetic_data for run in board.runs)
    assert all(t.key.title().startswith(f"{t.key.suite} (synthetic miniature), ") for t in board.tables)
    assert all("Synthetic miniature data" in t.caption() and not t.reported for t in board.tables)
    imagenet_dg = [t for t in board.tables if t.key.suite == "imagenet-dg"]
    assert imagenet_dg and all(t.max_seeds >= 3 for t in imagenet_dg)
    labels = {row.key.label for t in imagenet_dg for row in t.rows}
    assert {"zeroshot", "coop", "clipood", "guidg+clipood"} <= labels
    for path in COMMITTED_RUNS.rglob("*"):
        assert path.is_dir() or path.name in ("results.jsonl", "done"), f"{path}: only records are committed"


def test_a_stale_output_is_detected(tmp_path: Path) -> None:
    runs = write_all(tmp_path / "runs", [record("photo", s, 50.0 + s) for s in (1, 2, 3)])
    board = build_leaderboard(collect([runs]), [])
    publish([runs], tmp_path / "board", reported=[])
    assert stale_outputs(board, tmp_path / "board") == []
    changed = build_leaderboard(collect([write_all(tmp_path / "more", [record("photo", 4, 10.0)]), runs]), [])
    assert stale_outputs(changed, tmp_path / "board") == list(OUTPUT_FILES)
    (tmp_path / "board" / "leaderboard.tex").unlink()
    assert stale_outputs(board, tmp_path / "board") == ["leaderboard.tex"]


def test_plots_are_masked_only_when_matplotlib_differs() -> None:
    page = '<meta name="generator" content="x"><figure><svg a="1">old</svg><figcaption>c</figcaption></figure>'
    other = '<meta name="generator" content="y"><figure><svg a="2">new</svg><figcaption>c</figcaption></figure>'
    assert comparable(HTML_FILE, page, False) == comparable(HTML_FILE, other, False)
    assert comparable(HTML_FILE, page, True) != comparable(HTML_FILE, other, True)
    assert comparable(HTML_FILE, page.replace(">c<", ">d<"), False) != comparable(HTML_FILE, other, False)
    assert matplotlib.__version__ in GENERATOR


def test_importing_runs_copies_only_records_and_refuses_a_conflict(tmp_path: Path) -> None:
    runs = write_all(tmp_path / "runs", [record("photo", 1, 50.0)])
    (runs / "run000" / "model.safetensors").write_bytes(b"weights")
    into = tmp_path / "committed"
    assert import_runs([runs], into) == [into / "pacs" / "run000"]
    assert sorted(p.name for p in (into / "pacs" / "run000").iterdir()) == ["done", "results.jsonl"]
    assert import_runs([runs], into) == []  # the same record again: nothing to do
    other = write_all(tmp_path / "other", [record("photo", 1, 60.0)])
    with pytest.raises(Exception, match="holds another record"):
        import_runs([other], into)


def test_the_readme_block_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{README_START}\nOLD TABLE\n{README_END}\nafter\n")
    block = readme_block(COMMITTED_RUNS, COMMITTED_BOARD)
    assert update_readme(readme, block)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("\nafter\n") and "OLD TABLE" not in text
    assert "\n## Suite averages" not in text and "### Suite averages" in text
    assert not update_readme(readme, block)
    (tmp_path / "plain.md").write_text("# no markers\n")
    with pytest.raises(Exception, match="no lines"):
        update_readme(tmp_path / "plain.md", block)


def test_replacing_removes_only_the_committed_records_and_imports_the_new_ones(tmp_path: Path) -> None:
    into = tmp_path / "committed"
    import_runs([write_all(tmp_path / "old", [record("photo", 1, 50.0), record("sketch", 1, 51.0)])], into)
    old_folders = committed_run_folders(into)
    assert len(old_folders) == 2
    (into / "pacs" / "run001" / RESULTS_FILE).write_text('{"schema_version": 1}\n')  # an older schema goes too
    new = write_all(tmp_path / "new", [record("caltech", 1, 90.0, suite="vlcs", num_classes=5, sources=("labelme",))])
    assert replace_runs([new], into) == [into / "vlcs" / "run000"]
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*")) == [
        "vlcs", "vlcs/run000", "vlcs/run000/done", "vlcs/run000/results.jsonl"]
    assert [r.record.accuracy for r in collect([into]).runs] == [90.0]
    assert replace_runs([new], into) == [into / "vlcs" / "run000"]  # again: the same outcome


def test_replacing_touches_nothing_when_a_file_was_not_written_by_an_import(tmp_path: Path) -> None:
    into = tmp_path / "committed"
    import_runs([write_all(tmp_path / "old", [record("photo", 1, 50.0)])], into)
    (into / "pacs" / "run000" / "notes.txt").write_text("mine")
    new = write_all(tmp_path / "new", [record("sketch", 1, 60.0)])
    with pytest.raises(Exception, match=r"run000, not a committed record folder"):
        replace_runs([new], into)
    assert (into / "pacs" / "run000" / RESULTS_FILE).is_file() and not (into / "pacs" / "run000" / "sketch").exists()
    assert [r.record.accuracy for r in collect([into]).runs] == [50.0]


def test_replacing_with_nothing_or_without_import_is_refused(tmp_path: Path, capsys) -> None:
    into = tmp_path / "committed"
    import_runs([write_all(tmp_path / "old", [record("photo", 1, 50.0)])], into)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no finished run"):
        replace_runs([tmp_path / "empty"], into)
    assert len(committed_run_folders(into)) == 1
    assert main(["--replace"]) == 2
    assert capsys.readouterr().err.startswith("error: --replace:")


def test_upgrading_rewrites_only_schema_2_records_keeping_every_other_field(tmp_path: Path) -> None:
    into = tmp_path / "committed"
    import_runs([write_all(tmp_path / "old", [record("photo", 1, 50.0, method="clipood", base=None, routing=None),
                                               record("sketch", 1, 51.0)])], into)
    old = into / "pacs" / "run000" / RESULTS_FILE
    data = json.loads(old.read_text())
    for name in ("ece", "nll", "model_selection"):
        del data[name]
    old.write_text(json.dumps({**data, "schema_version": 2}) + "\n")
    current = (into / "pacs" / "run001" / RESULTS_FILE).read_bytes()
    assert upgrade_records(into) == [old]
    upgraded = json.loads(old.read_text())
    assert {k: v for k, v in upgraded.items() if k not in data} == {"ece": None, "nll": None,
                                                                     "model_selection": "last step"}
    assert {k: upgraded[k] for k in data if k != "schema_version"} == {k: v for k, v in data.items()
                                                                       if k != "schema_version"}
    assert (into / "pacs" / "run001" / RESULTS_FILE).read_bytes() == current
    assert upgrade_records(into) == []

