"""The leaderboard's aggregation: cells over seeds, averages per seed, refusals, reported numbers beside ours."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from imagenet_dg.records import collect, write_record
from leaderboard.aggregation import (
    CELL_FIELDS, LeaderboardError, RowKey, build_leaderboard, overviews, spread_for, training_seconds,
)
from leaderboard.reported import REFERENCE_DIR, Reported, ReportedError, load_reported, read_reported_file
from test_records import make_record


def record(target: str, seed: int, accuracy: float, **changes):
    suite = changes.pop("suite", "pacs")
    domains = ("art_painting", "cartoon", "photo", "sketch")
    values = dict(suite=suite, task=target, target=target, sources=tuple(d for d in domains if d != target),
                  seed=seed, split_seed=seed, accuracy=accuracy, domain_accuracy={target: accuracy})
    values.update(changes)
    return make_record(**values)


def write_all(folder: Path, records) -> Path:
    for index, item in enumerate(records):
        write_record(folder / f"run{index:03d}", item)
    return folder


def board_of(tmp_path: Path, records, spread: str = "sd", reported=()):
    return build_leaderboard(collect(write_all(tmp_path / "runs", records)), reported, spread)


GUIDG = RowKey("guidg", "clipood", "batch")


def two_targets(tmp_path: Path, spread: str = "sd", **changes):
    # hand-computed: photo 60, 62, 64 -> mean 62, sd 2; sketch 70, 71, 75 -> mean 72, sd sqrt(7);
    # per-seed averages 65, 66.5, 69.5 -> mean 67, sd sqrt(5.25)
    items = [record("photo", s, a, **changes) for s, a in ((1, 60.0), (2, 62.0), (3, 64.0))]
    items += [record("sketch", s, a, **changes) for s, a in ((1, 70.0), (2, 71.0), (3, 75.0))]
    return board_of(tmp_path, items, spread)


def test_a_cell_is_the_mean_and_standard_deviation_over_seeds(tmp_path: Path) -> None:
    (table,) = two_targets(tmp_path).tables
    (row,) = table.rows
    assert row.key == GUIDG
    assert row.cells["photo"].mean == pytest.approx(62.0) and row.cells["photo"].spread == pytest.approx(2.0)
    assert row.cells["sketch"].mean == pytest.approx(72.0) and row.cells["sketch"].spread == pytest.approx(math.sqrt(7))
    assert row.cells["photo"].n == 3


def test_the_average_spread_is_over_per_seed_averages(tmp_path: Path) -> None:
    (row,) = two_targets(tmp_path).tables[0].rows
    assert row.average.values == pytest.approx((65.0, 66.5, 69.5))
    assert row.average.mean == pytest.approx(67.0)
    assert row.average.spread == pytest.approx(math.sqrt(5.25))  # not the mean of the cells' spreads
    assert row.average.spread != pytest.approx((2.0 + math.sqrt(7)) / 2)


def test_standard_error_is_the_deviation_over_root_n(tmp_path: Path) -> None:
    (table,) = two_targets(tmp_path, "se").tables
    assert table.spread_kind == "se"
    assert table.rows[0].cells["photo"].spread == pytest.approx(2.0 / math.sqrt(3))
    assert "standard error" in table.caption()


def test_auto_spread_follows_the_protocol_literature() -> None:
    assert spread_for("fewshot", "auto") == "sd" and spread_for("full", "auto") == "se"
    assert spread_for("full", "sd") == "sd"
    with pytest.raises(LeaderboardError, match="spread 'iqr'"):
        spread_for("full", "iqr")


def test_every_caption_states_the_spread(tmp_path: Path) -> None:
    (table,) = two_targets(tmp_path).tables
    assert "standard deviation" in table.caption()


def test_one_seed_has_no_spread(tmp_path: Path) -> None:
    (table,) = board_of(tmp_path, [record("photo", 1, 50.0)]).tables
    assert table.rows[0].cells["photo"].spread is None and table.rows[0].cells["photo"].n == 1


def test_cells_with_fewer_seeds_are_marked_and_the_average_uses_complete_seeds(tmp_path: Path) -> None:
    items = [record(t, s, 50.0 + s) for t in ("photo", "sketch") for s in (1, 2, 3)]
    items += [record("photo", s, 40.0 + s, method="erm", base=None, routing=None) for s in (1, 2)]
    items += [record("sketch", s, 30.0 + s, method="erm", base=None, routing=None) for s in (1, 2, 3)]
    (table,) = board_of(tmp_path, items).tables
    erm = next(r for r in table.rows if r.key.method == "erm")
    assert table.max_seeds == 3
    assert table.fewer_seeds(erm.cells["photo"]) and not table.fewer_seeds(erm.cells["sketch"])
    assert erm.average.replicates == ((1, 1), (2, 2))
    assert erm.average.values == pytest.approx(((41 + 31) / 2, (42 + 32) / 2))
    assert table.fewer_seeds(erm.average)
    assert "†" in table.caption()


def test_a_row_missing_a_target_has_no_average(tmp_path: Path) -> None:
    items = [record("photo", 1, 50.0), record("sketch", 1, 60.0), record("photo", 1, 40.0, method="coop", base=None,
                                                                          routing=None)]
    (table,) = board_of(tmp_path, items).tables
    coop = next(r for r in table.rows if r.key.method == "coop")
    assert "sketch" not in coop.cells and coop.average.n == 0 and coop.average.mean is None


def test_columns_show_classes_and_chance(tmp_path: Path) -> None:
    (table,) = two_targets(tmp_path).tables
    assert [(c.target, c.num_classes) for c in table.columns] == [("photo", 7), ("sketch", 7)]
    assert table.columns[0].chance == pytest.approx(100 / 7)


def test_tables_are_split_by_suite_protocol_model_weights_and_shots(tmp_path: Path) -> None:
    items = [record("photo", 1, 50.0), record("photo", 1, 51.0, shots=4), record("photo", 1, 52.0, model="RN50"),
             record("photo", 1, 53.0, pretrained="laion2b"), record("photo", 1, 54.0, protocol="full", shots=None),
             record("caltech", 1, 55.0, suite="vlcs", num_classes=5)]
    board = board_of(tmp_path, items)
    assert len(board.tables) == 6
    assert sorted(t.rows[0].cells[t.columns[0].target].mean for t in board.tables) == [50, 51, 52, 53, 54, 55]


def test_rows_are_method_base_routing_in_the_papers_order(tmp_path: Path) -> None:
    rows = [("guidg", "clipood", "sample"), ("clipood", None, None), ("guidg", "clipood", "batch"),
            ("zeroshot", None, None), ("guidg", "erm", "batch"), ("erm", None, None), ("coop", None, None)]
    items = [record("photo", 1, 50.0, method=m, base=b, routing=r) for m, b, r in rows]
    (table,) = board_of(tmp_path, items).tables
    assert [r.key.label for r in table.rows] == [
        "zeroshot", "coop", "erm", "guidg+erm", "clipood", "guidg+clipood", "guidg+clipood (sample routing)"]


@pytest.mark.parametrize("field", CELL_FIELDS)
def test_records_that_disagree_are_refused_from_one_cell_naming_the_files(tmp_path: Path, field: str) -> None:
    other = {"protocol_version": "2.0", "manifest_content_hash": "def456", "model": "RN50", "pretrained": "laion2b",
             "precision": "fp32", "shots": 4, "preset": "smoke", "synthetic_data": True,
             "synthetic_weights": True, "config": {"finetune": {"lr": 1e-5}}, "eval_batch_size": 512,
             "suite_source": {"kind": "hub", "repo_id": "flwrlabs/pacs", "revision": "abc"}}[field]
    runs = write_all(tmp_path / "runs", [record("photo", 1, 50.0), record("photo", 2, 52.0, **{field: other})])
    found = collect(runs)
    from leaderboard.aggregation import check_cell

    with pytest.raises(LeaderboardError, match=rf"{field} differs") as error:
        check_cell(found.runs, "photo")
    assert str(runs / "run000" / "results.jsonl") in str(error.value)
    assert str(runs / "run001" / "results.jsonl") in str(error.value)


@pytest.mark.parametrize("field, other", [("protocol_version", "2.0"), ("manifest_content_hash", "def456"),
                                          ("precision", "fp32"), ("preset", "paper-2025"),
                                          ("eval_batch_size", 512)])
def test_building_the_leaderboard_refuses_a_mixed_cell(tmp_path: Path, field: str, other: str) -> None:
    items = [record("photo", 1, 50.0), record("photo", 2, 52.0, **{field: other})]
    with pytest.raises(LeaderboardError, match=rf"cannot put into one cell.*guidg\+clipood; target photo.*{field} differs"):
        board_of(tmp_path, items)


SYNTHETIC = dict(synthetic_data=True, model="imagenet-dg-tiny", pretrained="none", synthetic_weights=False)


def test_synthetic_and_real_data_are_never_one_table_nor_one_overview(tmp_path: Path) -> None:
    items = [record("photo", 1, 50.0, synthetic_data=True), record("photo", 1, 90.0)]
    board = board_of(tmp_path, items)
    assert len(board.tables) == 2
    real, synthetic = sorted(board.tables, key=lambda t: t.key.synthetic_data)
    assert real.rows[0].cells["photo"].values == (90.0,) and synthetic.rows[0].cells["photo"].values == (50.0,)
    assert "synthetic" not in real.key.title() + real.caption()
    assert synthetic.key.title().startswith("pacs (synthetic miniature), ")
    assert "Synthetic miniature data" in synthetic.caption()
    assert len(overviews(board)) == 2 and all(not o.several for o in overviews(board))


def test_a_table_refuses_synthetic_records_among_real_ones(tmp_path: Path) -> None:
    from leaderboard.aggregation import build_table, table_key

    runs = collect(write_all(tmp_path / "runs", [record("photo", 1, 90.0), record("photo", 2, 50.0, synthetic_data=True)]))
    with pytest.raises(LeaderboardError, match=r"records of another table .*run001.*never share a table"):
        build_table(table_key(runs.runs[0].record), runs.runs, [], "sd")


@pytest.mark.parametrize("pretrained, synthetic_weights, label", [
    ("none", False, "random weights"), ("mini", True, "mini (synthetic-world weights)"),
    ("openai", False, "openai weights")])
def test_weights_are_named_for_what_they_are(tmp_path: Path, pretrained: str, synthetic_weights: bool,
                                            label: str) -> None:
    (table,) = board_of(tmp_path, [record("photo", 1, 50.0, pretrained=pretrained,
                                          synthetic_weights=synthetic_weights)]).tables
    assert f", {label}, 16 shots" in table.key.title()
    assert ("synthetic pictures only" in table.caption()) == synthetic_weights
    assert ("Random (untrained) weights" in table.caption()) == (pretrained == "none")


def test_the_same_seed_twice_in_a_cell_is_refused(tmp_path: Path) -> None:
    items = [record("photo", 1, 50.0), record("photo", 1, 52.0, device_name="another GPU")]
    with pytest.raises(LeaderboardError, match=r"seed 1 \(split seed 1\) is recorded 2 times.*run000.*run001"):
        board_of(tmp_path, items)


def test_one_target_with_two_class_counts_is_refused(tmp_path: Path) -> None:
    items = [record("photo", 1, 50.0), record("photo", 2, 52.0, method="coop", base=None, routing=None, num_classes=5)]
    with pytest.raises(LeaderboardError, match="different numbers of classes.*5 classes in .*7 classes in"):
        board_of(tmp_path, items)


def test_unfinished_runs_are_counted(tmp_path: Path) -> None:
    runs = write_all(tmp_path / "runs", [record("photo", 1, 50.0)])
    (runs / "killed").mkdir()
    (runs / "killed" / "run.json").write_text("{}")
    board = build_leaderboard(collect(runs))
    assert board.unfinished == (runs / "killed",) and board.run_count == 1


def test_training_time_is_the_fit_phase_without_adding_its_parts() -> None:
    item = make_record(phase_seconds={"load": 3.0, "fit": 111.0, "experts": 10.0, "finetune": 100.0, "evaluate": 5.0})
    assert training_seconds(item) == pytest.approx(111.0)


def test_training_time_without_a_fit_phase_leaves_out_loading_and_scoring() -> None:
    item = make_record(phase_seconds={"load": 3.0, "experts": 10.0, "finetune": 100.0, "evaluate": 5.0, "eval_guide": 1.0})
    assert training_seconds(item) == pytest.approx(110.0)


def test_the_overview_puts_suite_averages_side_by_side(tmp_path: Path) -> None:
    items = [record("photo", 1, 50.0), record("sketch", 1, 70.0),
             record("caltech", 1, 90.0, suite="vlcs", num_classes=5, sources=("labelme",))]
    (overview,) = overviews(board_of(tmp_path, items))
    assert overview.suites == ("pacs", "vlcs")
    ((row, cells),) = overview.rows
    assert cells["pacs"].mean == pytest.approx(60.0) and cells["vlcs"].mean == pytest.approx(90.0)
    assert overview.mean_over_suites(cells) == pytest.approx(75.0) and overview.several


def test_one_suite_has_no_mean_over_suites(tmp_path: Path) -> None:
    board = board_of(tmp_path, [record("photo", 1, 50.0)])
    (overview,) = overviews(board)
    assert not overview.several
    from leaderboard.markdown import render_markdown

    assert "mean over suites" not in render_markdown(board)


# --- reported numbers -------------------------------------------------------------------------------------------

def test_published_numbers_are_never_put_beside_synthetic_rows(tmp_path: Path) -> None:
    published = [reported("photo", 60.0)]
    (real,) = board_of(tmp_path / "real", [record("photo", 1, 50.0)], reported=published).tables
    assert real.reported  # the same row on real data does get them
    for changes in ({"synthetic_data": True}, {"synthetic_weights": True}):
        (table,) = board_of(tmp_path / str(changes), [record("photo", 1, 50.0, **changes)], reported=published).tables
        assert table.reported == ()


def reported(target: str, accuracy: float, **changes) -> Reported:
    values = dict(suite="pacs", protocol="fewshot", model="ViT-B-16", pretrained="openai", shots=16, method="guidg",
                  base="clipood", routing="batch", target=target, accuracy=accuracy, paper="P", table="T1", file="p.tsv")
    values.update(changes)
    return Reported(**values)


def test_reported_rows_sit_beside_the_same_row_with_the_difference(tmp_path: Path) -> None:
    published = [reported("photo", 61.0), reported("sketch", 75.0)]
    board = build_leaderboard(collect(write_all(tmp_path / "runs", [
        record(t, s, a) for t, values in (("photo", (60, 62, 64)), ("sketch", (70, 71, 75))) for s, a in
        zip((1, 2, 3), values)])), published, "sd")
    (row,) = board.tables[0].reported
    assert row.key == GUIDG and row.source == "P, T1"
    assert row.values == {"photo": 61.0, "sketch": 75.0, "average": 68.0}  # average of the reported targets
    assert row.differences == pytest.approx({"photo": 1.0, "sketch": -3.0, "average": -1.0})


def test_reported_numbers_of_another_method_model_weights_shots_or_protocol_are_left_out(tmp_path: Path) -> None:
    published = [reported("photo", 1.0, method="coop", base=None, routing=None), reported("photo", 2.0, model="RN50"),
                 reported("photo", 3.0, pretrained="laion2b"), reported("photo", 4.0, shots=4),
                 reported("photo", 5.0, protocol="full", shots=None), reported("photo", 6.0, suite="vlcs"),
                 reported("photo", 7.0, routing="sample")]
    board = board_of(tmp_path, [record("photo", 1, 50.0)], reported=published)
    assert board.tables[0].reported == ()


def test_a_reported_average_alone_and_any_shots(tmp_path: Path) -> None:
    published = [reported("average", 40.0, shots="any")]
    board = board_of(tmp_path, [record("photo", 1, 50.0), record("sketch", 1, 70.0)], reported=published)
    (row,) = board.tables[0].reported
    assert row.values == {"average": 40.0} and row.differences == pytest.approx({"average": 20.0})


def test_the_shipped_reported_files_load_with_their_sources() -> None:
    rows = load_reported()
    files = {r.file for r in rows}
    assert {"paper_table8.tsv", "published_anchors.tsv"} <= files
    table8 = [r for r in rows if r.file == "paper_table8.tsv"]
    assert len(table8) == 7 * 12 and all(r.source == "GuiDG (AAAI 2026), Table 8" for r in table8)
    clipood_ti = next(r for r in table8 if (r.method, r.base, r.target) == ("guidg", "clipood", "location_100"))
    assert clipood_ti.accuracy == 74.7 and clipood_ti.routing == "batch" and clipood_ti.shots == 16
    assert {r.protocol for r in rows if r.file == "published_anchors.tsv"} == {"full", "fewshot"}
    assert (REFERENCE_DIR / "README.md").is_file()


def test_the_paper_table8_averages_match_the_paper(tmp_path: Path) -> None:
    # the paper prints the averages (its Table 8); they are recomputed from the targets, so check them
    rows = [r for r in load_reported() if r.file == "paper_table8.tsv" and r.suite == "terraincognita"
            and r.method == "clipood"]
    assert round(sum(r.accuracy for r in rows) / 4, 1) == 60.0


@pytest.mark.parametrize("line, message", [
    ("pacs\tfewshot\tViT-B-16\topenai\t16\tzeroshot\t\t\tphoto\t101\tP\tT", "percentage"),
    ("pacs\tdomainbed\tViT-B-16\topenai\t16\tzeroshot\t\t\tphoto\t50\tP\tT", "protocol"),
    ("pacs\tfewshot\tViT-B-16\topenai\tmany\tzeroshot\t\t\tphoto\t50\tP\tT", "shots"),
    ("pacs\tfewshot\tViT-B-16\topenai\t16\tzeroshot\t\tdiagonal\tphoto\t50\tP\tT", "routing"),
    ("pacs\tfewshot\tViT-B-16\topenai\t16\tzeroshot\t\t\tphoto\t50\tP", "cells"),
    ("pacs\tfewshot\tViT-B-16\topenai\t16\tzeroshot\t\t\tphoto\t50\t\tT", "empty paper"),
])
def test_a_malformed_reported_file_is_refused_naming_it(tmp_path: Path, line: str, message: str) -> None:
    header = (REFERENCE_DIR / "paper_table8.tsv").read_text().splitlines()
    header = next(h for h in header if h.startswith("suite\t"))
    path = tmp_path / "bad.tsv"
    path.write_text(f"# comment\n{header}\n{line}\n")
    with pytest.raises(ReportedError, match=rf"bad.tsv: data row 1.*{message}|bad.tsv.*{message}"):
        read_reported_file(path)


def test_a_reported_file_with_other_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.tsv"
    path.write_text("suite\tmethod\ttarget\taccuracy\npacs\tzeroshot\tphoto\t50\n")
    with pytest.raises(ReportedError, match="old.tsv: columns suite, method, target, accuracy; expected exactly"):
        read_reported_file(path)


def test_one_source_reporting_a_number_twice_is_refused(tmp_path: Path) -> None:
    header = next(h for h in (REFERENCE_DIR / "paper_table8.tsv").read_text().splitlines() if h.startswith("suite\t"))
    line = "pacs\tfewshot\tViT-B-16\topenai\t16\tzeroshot\t\t\tphoto\t50\tP\tT"
    path = tmp_path / "twice.tsv"
    path.write_text(f"{header}\n{line}\n{line}\n")
    with pytest.raises(ReportedError, match="reported twice"):
        load_reported([path])
