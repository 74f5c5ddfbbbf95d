"""The result record: schema validation, the atomic writer, the reader and the collection of run folders."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet_dg.records import (
    DONE_FILE, RESULTS_FILE, RUN_FILE, SCHEMA_2_MODEL_SELECTION, SCHEMA_VERSION, Record, RecordError, collect,
    read_record, upgrade_schema_2, write_record,
)


def make_record(**changes) -> Record:
    values = dict(
        suite="pacs", protocol="fewshot", protocol_version="1.0", task="sketch", target="sketch",
        sources=("art_painting", "cartoon", "photo"), num_classes=7, method="guidg", base="clipood",
        routing="batch", model="ViT-B-16", pretrained="openai", synthetic_weights=False, precision="bf16", device_type="cuda", shots=16,
        seed=1, split_seed=1, accuracy=91.25, domain_accuracy={"sketch": 91.25},
        class_accuracy={str(c): 80.0 + c for c in range(7)}, worst_class_accuracy=80.0, ece=3.5, nll=0.31,
        validation_accuracy={"art_painting": 95.0, "cartoon": 96.0, "photo": 99.0},
        model_selection="last step", test_images=786, synthetic_data=False,
        preset="paper", config={"finetune": {"lr": 5e-6}}, manifest_content_hash="abc123",
        suite_source={"kind": "folder"}, package_version="0.1.0", git_commit=None,
        versions={"torch": "2.4", "open_clip": "2.26", "python": "3.11"}, device_name="NVIDIA H200",
        phase_seconds={"experts": 10.0, "finetune": 100.0, "evaluate": 5.0}, n_trainable=86_000_000,
        eval_batch_size=36, details={"best_epoch": 5},
    )
    values.update(changes)
    return Record(**values)


def test_a_written_record_reads_back_equal(tmp_path: Path) -> None:
    record = make_record()
    write_record(tmp_path / "run", record)
    assert read_record(tmp_path / "run") == record
    assert (tmp_path / "run" / DONE_FILE).is_file()
    data = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["sources"] == ["art_painting", "cartoon", "photo"]


def test_the_record_file_is_one_canonical_line(tmp_path: Path) -> None:
    write_record(tmp_path, make_record())
    text = (tmp_path / RESULTS_FILE).read_text()
    assert text.count("\n") == 1 and text == make_record().to_json() + "\n"
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_record(tmp_path, make_record())
    assert sorted(p.name for p in tmp_path.iterdir()) == [DONE_FILE, RESULTS_FILE]


def test_a_finished_run_is_never_overwritten(tmp_path: Path) -> None:
    write_record(tmp_path, make_record())
    with pytest.raises(RecordError, match="already holds a finished run"):
        write_record(tmp_path, make_record(accuracy=10.0))
    assert read_record(tmp_path).accuracy == 91.25


def test_a_failed_record_write_leaves_no_done_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imagenet_dg.records as records

    def broken(target, text):
        raise OSError("disk full")

    monkeypatch.setattr(records, "write_text_atomic", broken)
    with pytest.raises(OSError):
        write_record(tmp_path, make_record())
    assert not (tmp_path / DONE_FILE).exists()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"protocol": "domainbed"}, "protocol"),
        ({"accuracy": 0.9125 * 1000}, "accuracy"),
        ({"accuracy": float("nan")}, "accuracy"),
        ({"accuracy": "91"}, "accuracy"),
        ({"domain_accuracy": {"sketch": 101.0}}, "domain_accuracy"),
        ({"validation_accuracy": {"photo": -1}}, "validation_accuracy"),
        ({"num_classes": 1}, "num_classes"),
        ({"shots": 0}, "shots"),
        ({"shots": True}, "shots"),
        ({"precision": "fp8"}, "precision"),
        ({"device_type": "gpu"}, "device_type"),
        ({"routing": "random"}, "routing"),
        ({"sources": ()}, "sources"),
        ({"sources": ("sketch", "photo")}, "sources"),
        ({"phase_seconds": {"finetune": -3.0}}, "phase_seconds"),
        ({"versions": {"torch": "2.4"}}, "versions"),
        ({"suite_source": {}}, "suite_source"),
        ({"protocol": "full"}, "shots"),
        ({"shots": None}, "shots"),
        ({"model": ""}, "model"),
        ({"worst_class_accuracy": 85.0}, "worst_class_accuracy"),
        ({"synthetic_data": "yes"}, "synthetic_data"),
        ({"synthetic_data": 1}, "synthetic_data"),
        ({"synthetic_weights": None}, "synthetic_weights"),
        ({"pretrained": "none", "synthetic_weights": True}, "synthetic_weights"),
        ({"ece": 150.0}, "ece"),
        ({"ece": -0.5}, "ece"),
        ({"nll": -0.1}, "nll"),
        ({"nll": float("inf")}, "nll"),
        ({"nll": True}, "nll"),
        ({"model_selection": ""}, "model_selection"),
        ({"model_selection": 3}, "model_selection"),
    ],
)
def test_an_invalid_record_is_refused_naming_the_field(changes: dict, field: str) -> None:
    with pytest.raises(RecordError, match=rf"\b{field}:"):
        make_record(**changes)


def test_per_class_accuracy_may_be_unmeasured() -> None:
    record = make_record(class_accuracy={}, worst_class_accuracy=None)
    assert record.worst_class_accuracy is None


def test_calibration_and_model_selection_may_be_unmeasured(tmp_path: Path) -> None:
    record = make_record(ece=None, nll=None, model_selection=None)
    write_record(tmp_path / "run", record)
    assert read_record(tmp_path / "run") == record
    data = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert data["ece"] is None and data["nll"] is None and data["model_selection"] is None


def test_a_schema_2_record_upgrades_with_calibration_unmeasured_and_everything_else_kept() -> None:
    data = make_record(method="coop", base=None, routing=None).to_dict()
    for name in ("ece", "nll", "model_selection"):
        del data[name]
    data["schema_version"] = 2
    upgraded = upgrade_schema_2(data)
    assert upgraded.ece is None and upgraded.nll is None and upgraded.schema_version == SCHEMA_VERSION == 3
    assert upgraded.model_selection == SCHEMA_2_MODEL_SELECTION["coop"] == "best epoch on source validation"
    kept = upgraded.to_dict()
    assert {k: kept[k] for k in data if k != "schema_version"} == {k: v for k, v in data.items()
                                                                   if k != "schema_version"}
    assert set(kept) - set(data) == {"ece", "nll", "model_selection"}


def test_only_a_schema_2_record_of_a_known_method_is_upgraded() -> None:
    data = make_record().to_dict()
    with pytest.raises(RecordError, match="expected a record of schema version 2 to upgrade, found 3"):
        upgrade_schema_2(data)
    data = {**data, "schema_version": 2, "method": "mystery"}
    with pytest.raises(RecordError, match="method 'mystery' has no known model selection"):
        upgrade_schema_2(data)


def test_the_full_protocol_has_no_shots() -> None:
    assert make_record(protocol="full", shots=None).shots is None


def write_raw(folder: Path, data: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_FILE).write_text(data if isinstance(data, str) else json.dumps(data) + "\n")
    (folder / DONE_FILE).write_text("")
    return folder / RESULTS_FILE


def test_reading_an_invalid_record_names_the_file(tmp_path: Path) -> None:
    data = make_record().to_dict()
    data["accuracy"] = 0.91 * 200
    results = write_raw(tmp_path / "run", data)
    with pytest.raises(RecordError, match=f"{results}.*accuracy"):
        read_record(tmp_path / "run")


def test_a_record_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    data = make_record().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    results = write_raw(tmp_path / "run", data)
    with pytest.raises(RecordError, match=f"{results}.*schema version {SCHEMA_VERSION + 1}"):
        read_record(tmp_path / "run")


def test_a_record_without_a_schema_version_is_refused(tmp_path: Path) -> None:
    data = {"method": "zeroshot", "accuracy": 50.0}  # the shape of records written before the schema
    write_raw(tmp_path / "run", data)
    with pytest.raises(RecordError, match="schema version None"):
        read_record(tmp_path / "run")


def test_missing_and_unknown_fields_are_named(tmp_path: Path) -> None:
    data = make_record().to_dict()
    del data["worst_class_accuracy"]
    data["acuracy"] = 1.0
    write_raw(tmp_path / "run", data)
    with pytest.raises(RecordError, match="missing worst_class_accuracy; unknown acuracy"):
        read_record(tmp_path / "run")


def test_whether_the_data_are_synthetic_is_required(tmp_path: Path) -> None:
    data = make_record().to_dict()
    del data["synthetic_data"]
    write_raw(tmp_path / "run", data)
    with pytest.raises(RecordError, match="missing synthetic_data"):
        read_record(tmp_path / "run")


def test_a_record_is_synthetic_when_its_data_or_its_weights_are() -> None:
    assert not make_record().synthetic
    assert make_record(synthetic_data=True).synthetic
    assert make_record(pretrained="mini", synthetic_weights=True).synthetic


def test_details_may_be_left_out(tmp_path: Path) -> None:
    data = make_record().to_dict()
    del data["details"]
    write_raw(tmp_path / "run", data)
    assert read_record(tmp_path / "run").details == {}


@pytest.mark.parametrize("text", ["not json\n", "", "{}\n{}\n"])
def test_a_results_file_that_is_not_one_json_record_is_refused(tmp_path: Path, text: str) -> None:
    results = write_raw(tmp_path / "run", text)
    with pytest.raises(RecordError, match=str(results)):
        read_record(tmp_path / "run")


def test_reading_an_unfinished_run_is_an_error(tmp_path: Path) -> None:
    (tmp_path / RESULTS_FILE).write_text(make_record().to_json() + "\n")
    with pytest.raises(RecordError, match="not a finished run"):
        read_record(tmp_path)


def test_a_done_marker_without_results_is_a_damaged_folder(tmp_path: Path) -> None:
    (tmp_path / DONE_FILE).write_text("")
    with pytest.raises(RecordError, match="damaged"):
        read_record(tmp_path)


def test_collect_finds_finished_and_unfinished_runs_under_several_folders(tmp_path: Path) -> None:
    write_record(tmp_path / "a" / "run1", make_record(seed=1))
    write_record(tmp_path / "b" / "nested" / "run2", make_record(seed=2))
    (tmp_path / "a" / "killed").mkdir()
    (tmp_path / "a" / "killed" / RESULTS_FILE).write_text(make_record(seed=3).to_json() + "\n")  # no done marker
    (tmp_path / "b" / "started").mkdir()
    (tmp_path / "b" / "started" / RUN_FILE).write_text("{}")
    (tmp_path / "a" / "experts").mkdir()  # not a run folder: holds none of the run files
    found = collect([tmp_path / "a", tmp_path / "b"])
    assert sorted(r.seed for r in found.records) == [1, 2]
    assert [run.folder for run in found] == [tmp_path / "a" / "run1", tmp_path / "b" / "nested" / "run2"]
    assert sorted(found.unfinished) == [tmp_path / "a" / "killed", tmp_path / "b" / "started"]


def test_a_folder_given_twice_is_collected_once(tmp_path: Path) -> None:
    write_record(tmp_path / "run", make_record())
    assert len(collect([tmp_path, tmp_path])) == 1


def test_collect_stops_at_an_invalid_record_naming_it(tmp_path: Path) -> None:
    write_record(tmp_path / "good", make_record())
    data = make_record().to_dict()
    data["precision"] = "half"
    results = write_raw(tmp_path / "bad", data)
    with pytest.raises(RecordError, match=f"{results}.*precision"):
        collect(tmp_path)


def test_collect_of_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no such runs folder"):
        collect(tmp_path / "nowhere")


def test_row_label_names_method_base_and_non_default_routing() -> None:
    assert make_record().row_label == "guidg+clipood"
    assert make_record(routing="sample").row_label == "guidg+clipood (sample routing)"
    assert make_record(method="zeroshot", base=None, routing=None).row_label == "zeroshot"


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_record().accuracy = 1.0  # type: ignore[misc]


def test_the_producer_of_records_does_not_import_the_leaderboard() -> None:
    code = ("import sys, guidg.run, guidg.harness, imagenet_dg.records; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'leaderboard'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
