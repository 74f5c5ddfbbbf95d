"""Model selection across a sweep, computed from the records: one configuration per (method, target, seed) by
training-domain validation or, labelled as an upper bound, by the target itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from guidg.presets import get_preset
from imagenet_dg.cli import main
from imagenet_dg.records import collect
from leaderboard.aggregation import LeaderboardError, build_leaderboard, overviews
from test_leaderboard import record, write_all

PAPER = json.loads(json.dumps(get_preset("paper").to_dict()))
FASTER = json.loads(json.dumps(get_preset("paper").replace(finetune={"lr": 1e-5}).to_dict()))


def run(target: str, seed: int, accuracy: float, validation: float, config: dict = PAPER, **changes):
    sources = ("art_painting", "cartoon", "sketch") if target == "photo" else ("art_painting", "cartoon", "photo")
    # two sources at validation +-1 around the given mean, so the rule has to average them
    values = {sources[0]: validation - 1.0, sources[1]: validation + 1.0, sources[2]: validation}
    return record(target, seed, accuracy, method="clipood", base=None, routing=None, config=config,
                  validation_accuracy=values, **changes)


# per seed: (target accuracy, mean validation) of the preset's configuration and of finetune.lr=1e-5
SWEEP = {1: ((60.0, 90.0), (70.0, 80.0)), 2: ((62.0, 85.0), (58.0, 95.0)), 3: ((64.0, 91.0), (66.0, 91.0))}


def sweep(folder: Path) -> Path:
    items = [run("photo", seed, *ours) for seed, (ours, _) in SWEEP.items()]
    items += [run("photo", seed, *theirs, config=FASTER) for seed, (_, theirs) in SWEEP.items()]
    return write_all(folder, items)


def board(tmp_path: Path, selection: str, items=None):
    runs = sweep(tmp_path / "runs") if items is None else write_all(tmp_path / "runs", items)
    return build_leaderboard(collect(runs), (), "sd", selection)


def test_without_a_rule_every_configuration_is_its_own_row(tmp_path: Path) -> None:
    (table,) = board(tmp_path, "none").tables
    assert [(r.key.label, r.cells["photo"].values) for r in table.rows] == [
        ("clipood", (60.0, 62.0, 64.0)), ("clipood (finetune.lr=1e-5)", (70.0, 58.0, 66.0))]
    assert "selection" not in table.title().lower() and "selection" not in table.caption().lower()


def test_training_domain_validation_keeps_each_seeds_configuration_with_the_best_source_validation(
        tmp_path: Path) -> None:
    (table,) = board(tmp_path, "training-domain").tables
    (row,) = table.rows
    # seed 1: 90 > 80 -> 60; seed 2: 95 > 85 -> 58; seed 3: a tie at 91 goes to the preset's own -> 64
    assert row.key.label == "clipood" and row.cells["photo"].values == (60.0, 58.0, 64.0)
    assert [p.name for p in row.cells["photo"].runs] == ["run000", "run004", "run002"]


def test_the_oracle_keeps_each_seeds_configuration_with_the_best_target_accuracy(tmp_path: Path) -> None:
    (table,) = board(tmp_path, "oracle").tables
    (row,) = table.rows
    assert row.cells["photo"].values == (70.0, 62.0, 66.0)


@pytest.mark.parametrize("selection, title, caption", [
    ("training-domain", "selected by training-domain validation", "Model selection across configurations: "
                                                                   "training-domain validation"),
    ("oracle", "ORACLE selection on the target (upper bound)", "Model selection across configurations: ORACLE, an "
                                                                 "upper bound that looks at the target")])
def test_tables_under_a_rule_say_so_in_title_and_caption(tmp_path: Path, selection: str, title: str,
                                                         caption: str) -> None:
    found = board(tmp_path, selection)
    (table,) = found.tables
    assert table.title().endswith(title) and table.caption().startswith(caption)
    (overview,) = overviews(found)
    assert overview.title().endswith(title) and overview.caption().startswith(caption)
    assert any(caption in note for note in found.notes())


def test_the_average_is_taken_over_the_selected_runs_per_seed(tmp_path: Path) -> None:
    items = [run(t, seed, *values[i], config=config) for seed, values in SWEEP.items()
             for i, config in enumerate((PAPER, FASTER)) for t in ("photo", "sketch")]
    (table,) = board(tmp_path, "training-domain", items).tables
    (row,) = table.rows
    assert row.average.values == pytest.approx(row.cells["photo"].values) == (60.0, 58.0, 64.0)


def test_configurations_that_differ_in_more_than_their_settings_are_not_selected_among(tmp_path: Path) -> None:
    items = [run("photo", 1, 60.0, 90.0), run("photo", 1, 70.0, 80.0, config=FASTER, precision="fp32")]
    assert len(board(tmp_path / "none", "none", items).tables[0].rows) == 2  # two rows of their own: fine
    with pytest.raises(LeaderboardError, match=r"clipood; target photo.*precision differs"):
        board(tmp_path / "selected", "training-domain", items)


def test_a_configuration_run_twice_with_one_seed_is_still_refused(tmp_path: Path) -> None:
    items = [run("photo", 1, 60.0, 90.0), run("photo", 1, 61.0, 91.0, device_name="another GPU")]
    with pytest.raises(LeaderboardError, match=r"seed 1 \(split seed 1\) is recorded 2 times"):
        board(tmp_path, "oracle", items)


def test_training_domain_selection_refuses_records_without_source_validation(tmp_path: Path) -> None:
    items = [run("photo", 1, 60.0, 90.0), run("photo", 1, 70.0, 80.0, config=FASTER)]
    items[1] = record("photo", 1, 70.0, method="clipood", base=None, routing=None, config=FASTER,
                      validation_accuracy={})
    with pytest.raises(LeaderboardError, match=r"cannot select by training-domain: .*run001.* hold no source "
                                               r"validation accuracies"):
        board(tmp_path, "training-domain", items)


def test_the_command_shows_a_table_under_a_rule(tmp_path: Path) -> None:
    runs = sweep(tmp_path / "runs")
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--selection", "oracle"])
    assert result.exit_code == 0, result.output
    assert "ORACLE selection on the target (upper bound)" in result.output
    assert "| clipood | 66.0 ± 4.0 (3) |" in result.output  # (70 + 62 + 66) / 3, sd 4
    default = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs)])
    assert "clipood (finetune.lr=1e-5)" in default.output and "ORACLE" not in default.output
    bad = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--selection", "best"])
    assert bad.exit_code == 2 and "--selection" in bad.output
