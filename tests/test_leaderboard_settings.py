"""Rows never mix settings: a run whose configuration differs from its preset's is a row of its own, labelled with
the differences, and the records of one cell agree on the whole configuration, evaluation batch and suite source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from guidg.presets import get_preset
from imagenet_dg.cli import main
from leaderboard.aggregation import LeaderboardError
from leaderboard.settings import (
    changed_settings, differing_settings, flatten, preset_config, setting_text, settings_text,
)
from test_leaderboard import board_of, record, write_all

PAPER = json.loads(json.dumps(get_preset("paper").to_dict()))


def with_changes(config: dict, **sections: dict) -> dict:
    """``config`` with some values of its sections changed (a copy)."""
    changed = json.loads(json.dumps(config))
    for section, values in sections.items():
        changed.setdefault(section, {}).update(values)
    return changed


def clipood(target: str, seed: int, accuracy: float, config: dict = PAPER, **changes):
    return record(target, seed, accuracy, method="clipood", base=None, routing=None, config=config, **changes)


def test_a_run_with_a_changed_setting_is_a_row_of_its_own_labelled_with_it(tmp_path: Path) -> None:
    items = [clipood("photo", 1, 70.0, with_changes(PAPER, finetune={"lr": 1e-5})),
             clipood("photo", 2, 60.0), clipood("photo", 3, 62.0)]
    (table,) = board_of(tmp_path, items).tables
    assert [(row.key.label, row.cells["photo"].values) for row in table.rows] == [
        ("clipood", (60.0, 62.0)), ("clipood (finetune.lr=1e-5)", (70.0,))]


def test_differences_are_computed_against_the_preset_the_record_names(tmp_path: Path) -> None:
    smoke = json.loads(json.dumps(get_preset("smoke").to_dict()))
    items = [clipood("photo", 1, 50.0, smoke, preset="smoke"), clipood("sketch", 1, 51.0, smoke, preset="smoke"),
             clipood("photo", 2, 52.0, with_changes(smoke, finetune={"epochs": 9}), preset="smoke")]
    (table,) = board_of(tmp_path, items).tables
    assert [row.key.label for row in table.rows] == ["clipood", "clipood (finetune.epochs=9)"]
    assert set(table.rows[0].cells) == {"photo", "sketch"}


def test_settings_are_labelled_as_set_on_the_command_line(tmp_path: Path) -> None:
    changed = with_changes(PAPER, finetune={"lr": 1e-5, "randaugment": False}, prompt={"crop_scale": [0.5, 1.0],
                                                                                       "ctx_init": "a photo of a"})
    (table,) = board_of(tmp_path, [clipood("photo", 1, 50.0, changed)]).tables
    assert table.rows[0].key.label == ("clipood (finetune.lr=1e-5, finetune.randaugment=false, "
                                       "prompt.crop_scale=0.5,1.0, prompt.ctx_init=a photo of a)")


def test_the_routing_a_row_names_is_not_repeated_as_a_setting(tmp_path: Path) -> None:
    sample = with_changes(PAPER, finetune={"routing": "sample"})
    items = [record("photo", 1, 50.0, routing="sample", config=sample), record("photo", 1, 52.0, config=PAPER)]
    (table,) = board_of(tmp_path, items).tables
    assert [row.key.label for row in table.rows] == ["guidg+clipood", "guidg+clipood (sample routing)"]


def test_records_of_an_unknown_preset_are_labelled_by_their_differences_among_themselves(tmp_path: Path) -> None:
    mine = {"finetune": {"lr": 1e-4, "epochs": 3}}
    items = [clipood("photo", 1, 50.0, mine, preset="my-preset"), clipood("photo", 2, 51.0, mine, preset="my-preset"),
             clipood("photo", 1, 60.0, with_changes(mine, finetune={"lr": 1e-3}), preset="my-preset")]
    (table,) = board_of(tmp_path, items).tables
    assert [(row.key.label, row.cells["photo"].n) for row in table.rows] == [
        ("clipood (finetune.lr=0.0001)", 2), ("clipood (finetune.lr=0.001)", 1)]
    alone = board_of(tmp_path / "alone", [clipood("photo", 1, 50.0, mine, preset="my-preset")]).tables[0]
    assert alone.rows[0].key.label == "clipood"


def test_records_of_one_cell_that_disagree_on_their_configuration_are_refused_naming_the_files(tmp_path: Path) -> None:
    # both agree with the preset where they hold a value, but one holds a setting the other does not record
    items = [clipood("photo", 1, 50.0, {"finetune": {"lr": 5e-6}}),
             clipood("photo", 2, 52.0, {"finetune": {"lr": 5e-6, "epochs": 10}})]
    with pytest.raises(LeaderboardError, match=r"cannot put into one cell.*config differs") as error:
        board_of(tmp_path, items)
    assert f"finetune.epochs not recorded in {tmp_path / 'runs' / 'run000' / 'results.jsonl'}" in str(error.value)
    assert f"finetune.epochs=10 in {tmp_path / 'runs' / 'run001' / 'results.jsonl'}" in str(error.value)


@pytest.mark.parametrize("field, other", [
    ("eval_batch_size", 512), ("suite_source", {"kind": "hub", "repo_id": "flwrlabs/pacs", "revision": "abc"})])
def test_records_of_one_cell_with_another_evaluation_batch_or_image_source_are_refused(
        tmp_path: Path, field: str, other) -> None:
    items = [clipood("photo", 1, 50.0), clipood("photo", 2, 52.0, **{field: other})]
    with pytest.raises(LeaderboardError, match=rf"cannot put into one cell.*clipood; target photo.*{field} differs"):
        board_of(tmp_path, items)


def test_the_command_refuses_a_cell_of_two_evaluation_batches_in_one_error_line(tmp_path: Path) -> None:
    runs = write_all(tmp_path / "runs", [clipood("photo", 1, 50.0), clipood("photo", 2, 52.0, eval_batch_size=512)])
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: cannot put into one cell") and "eval_batch_size differs" in result.output


def test_a_preset_resolves_to_the_configuration_a_record_keeps() -> None:
    assert preset_config("paper") == PAPER
    assert preset_config("paper")["prompt"]["crop_scale"] == [0.7, 1.0]  # JSON lists, as read from a record
    assert preset_config("no-such-preset") is None


def test_settings_are_dotted_names() -> None:
    assert flatten({"finetune": {"lr": 1e-5, "epochs": 3}, "eval": {}}) == {"finetune.lr": 1e-5, "finetune.epochs": 3}


@pytest.mark.parametrize("value, text", [(1e-5, "1e-5"), (5e-06, "5e-6"), (1e16, "1e16"), (0.001, "0.001"),
                                         (3, "3"), (True, "true"), (None, "null"), ([0.5, 1.0], "0.5,1.0"),
                                         ("sample", "sample")])
def test_setting_values_are_written_as_they_are_set(value, text: str) -> None:
    assert setting_text(value) == text


def test_a_setting_the_preset_lacks_is_a_change_and_one_the_record_lacks_is_not() -> None:
    preset = {"finetune": {"lr": 5e-6, "epochs": 10}}
    assert changed_settings({"finetune": {"lr": 5e-6}}, preset) == ()
    assert changed_settings({"finetune": {"lr": 5e-6, "heads": 8}}, preset) == (("finetune.heads", "8"),)
    assert changed_settings({"finetune": {"lr": 1e-5, "epochs": 10}}, preset) == (("finetune.lr", "1e-5"),)


def test_settings_that_differ_among_records_are_each_records_values_of_them() -> None:
    configs = [{"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}}, {"a": {"x": 1}}]
    assert differing_settings(configs) == [(("a.y", "2"),), (("a.y", "3"),), (("a.y", "not recorded"),)]
    assert settings_text(differing_settings(configs)[2]) == "a.y not recorded"
    assert differing_settings([{"a": {"x": 1}}, {"a": {"x": 1}}]) == [(), ()]
