"""One evaluation run: its record, its folder, resumption of a sweep, failures, and the leaderboard built from runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import open_clip
import pytest
import torch
from click.testing import CliRunner

import guidg.run as run_module
from guidg.backbone import TINY_SPEC, BackboneSpec
from guidg.methods import Citation, Method, Predictor
from guidg.presets import get_preset
from guidg.run import PREDICTOR_FILE, RunSpec, attempt
from imagenet_dg.cli import main
from imagenet_dg.loading import load_task
from imagenet_dg.manifests import read_manifest
from imagenet_dg.records import DONE_FILE, RESULTS_FILE, Record, collect, read_record

QUICK = get_preset("smoke").replace(prompt={"epochs": 2}, finetune={"epochs": 1, "steps_per_epoch": 2})


def spec(benchmark, method: str = "zeroshot", seed: int = 1) -> RunSpec:
    return RunSpec(benchmark, "a-16shot-seed1", method, TINY_SPEC, "smoke", QUICK, seed)


def finished(folder) -> list:
    return [p for p in folder.iterdir() if (p / DONE_FILE).is_file()]


def execute(run: RunSpec, roots, runs, **options) -> Record:
    """The record of ``run``, run now (or read, when it finished before)."""
    return attempt(run, roots, runs, **options).record


@dataclass
class CyclingPredictor(Predictor):
    """Predicts class ``i mod C`` for the i-th image it is asked about: predictions a test knows beforehand."""

    classes: int
    n_trainable: int = 7
    details: dict = field(default_factory=lambda: {"trained": "nothing"})

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        chosen = torch.arange(len(features)) % self.classes
        return torch.nn.functional.one_hot(chosen, self.classes).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"classes": torch.tensor(self.classes)}


CYCLING = Method(
    name="cycling", description="predicts i mod C", citations=(Citation("a test", "https://example.org", None),),
    sections=(), trains="nothing", trainable_parameters="7", selection="none",
    fit=lambda context: CyclingPredictor(len(context.task.class_ids)),
    load=lambda context, state: CyclingPredictor(int(state["classes"])),
)


def expected_scores(labels, classes: int) -> tuple[float, dict[int, float]]:
    """Accuracy and per-class accuracy (percent) of predicting ``i mod classes`` for image i, counted here."""
    hits = [label == i % classes for i, label in enumerate(labels)]
    per_class = {}
    for c in sorted(set(labels)):
        mine = [hit for hit, label in zip(hits, labels) if label == c]
        per_class[c] = 100.0 * sum(mine) / len(mine)
    return 100.0 * sum(hits) / len(hits), per_class


def test_a_run_records_the_scores_of_its_predictions(mini_benchmark, mini_releases, tmp_path, monkeypatch) -> None:
    import guidg.methods as registry

    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, "cycling": CYCLING})
    record = execute(spec(mini_benchmark, "cycling"), dict(mini_releases.paths), tmp_path, device="cpu")
    task = load_task(mini_benchmark, "a-16shot-seed1", dict(mini_releases.paths))
    classes = len(task.class_ids)
    accuracy, per_class = expected_scores(list(task.test.labels), classes)
    assert 0.0 < accuracy < 100.0 and len(set(per_class.values())) > 1  # the check below can tell them apart
    assert record.accuracy == pytest.approx(accuracy)
    assert record.domain_accuracy == pytest.approx({"imagenet-a": accuracy})
    assert record.class_accuracy == pytest.approx({task.class_ids[c]: a for c, a in per_class.items()})
    assert record.worst_class_accuracy == pytest.approx(min(per_class.values()))
    # the sources' guide samples, pooled in source order, are the selection images under fewshot
    pooled = [label for source in task.sources for label in task.guide[source].labels]
    hits = [label == i % classes for i, label in enumerate(pooled)]
    start, validation = 0, {}
    for source in task.sources:
        size = len(task.guide[source])
        validation[source] = 100.0 * sum(hits[start:start + size]) / size
        start += size
    assert record.validation_accuracy == pytest.approx(validation)
    assert (record.n_trainable, record.test_images) == (7, len(task.test))
    assert record.details["trained"] == "nothing"
    assert (record.model_selection, record.details["trains"]) == ("none", "nothing")


def test_a_run_records_what_produced_it(mini_benchmark, mini_releases, tmp_path) -> None:
    record = execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu")
    assert isinstance(record, Record)
    assert (record.suite, record.protocol, record.method, record.base) == ("imagenet-dg", "fewshot", "zeroshot", None)
    assert record.target == "imagenet-a" and record.task == "a" and record.shots == 16 and record.split_seed == 1
    assert (record.precision, record.device_type, record.pretrained) == ("fp32", "cpu", "none")
    assert record.test_images == sum(mini_releases.expected_counts["imagenet-a"].values())
    assert set(record.validation_accuracy) == {"imagenet", "imagenet-sketch", "imagenetv2"}
    assert record.config == json.loads(json.dumps(QUICK.to_dict()))
    assert {"load", "fit", "evaluate"} <= set(record.phase_seconds)
    folders = finished(tmp_path)
    assert len(folders) == 1 and read_record(folders[0]) == record
    assert record.synthetic_weights is False  # random weights are not synthetic-world weights
    assert record.synthetic_data is bool(read_manifest(mini_benchmark).get("synthetic", False))


def test_a_run_records_the_calibration_of_its_target_logits(mini_benchmark, mini_releases, tmp_path,
                                                            monkeypatch) -> None:
    seen = []
    measure = run_module.expected_calibration_error

    def spying(logits, labels):
        seen.append((logits.clone(), list(labels)))
        return measure(logits, labels)

    monkeypatch.setattr(run_module, "expected_calibration_error", spying)
    record = execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu")
    ((logits, labels),) = seen
    # the logits measured are the target's: as many as its images, and the accuracy recorded is theirs
    assert logits.shape[0] == record.test_images == len(labels)
    correct = (logits.argmax(dim=-1) == torch.tensor(labels)).double().mean().item()
    assert record.accuracy == pytest.approx(100.0 * correct)
    assert record.ece == measure(logits, labels) and 0.0 <= record.ece <= 100.0
    assert record.nll == run_module.negative_log_likelihood(logits, labels) and record.nll > 0.0


def test_a_run_stopped_after_training_resumes_by_scoring_its_saved_predictor(
    mini_benchmark, mini_releases, tmp_path, monkeypatch
) -> None:
    straight = execute(spec(mini_benchmark, "coop"), dict(mini_releases.paths), tmp_path / "straight", device="cpu")
    real_predict = run_module.predict

    def power_cut(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(run_module, "predict", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        execute(spec(mini_benchmark, "coop"), dict(mini_releases.paths), tmp_path / "resumed", device="cpu")
    folder = next((tmp_path / "resumed").glob("*/" + PREDICTOR_FILE)).parent
    monkeypatch.setattr(run_module, "predict", real_predict)
    monkeypatch.setattr(run_module, "fit_method", power_cut)  # training again would fail the run
    resumed = execute(spec(mini_benchmark, "coop"), dict(mini_releases.paths), tmp_path / "resumed", device="cpu")
    assert not (folder / PREDICTOR_FILE).exists()  # a finished run keeps no training state
    keep = {"phase_seconds", "git_commit"}
    assert {k: v for k, v in resumed.to_dict().items() if k not in keep} == {
        k: v for k, v in straight.to_dict().items() if k not in keep}


def test_a_run_with_the_packaged_synthetic_world_weights_says_so(mini_benchmark, mini_releases, tmp_path) -> None:
    from dataclasses import replace

    mini_weights = replace(spec(mini_benchmark), backbone=BackboneSpec(TINY_SPEC.arch, "mini"))
    record = execute(mini_weights, dict(mini_releases.paths), tmp_path, device="cpu")
    assert (record.pretrained, record.synthetic_weights) == ("mini", True) and record.synthetic
    assert record.details["backbone"]["synthetic"] is True


def test_a_run_on_data_its_manifest_calls_synthetic_says_so(mini_benchmark, mini_releases, tmp_path) -> None:
    assert read_manifest(mini_benchmark)["synthetic"] is True  # built from the (marked) miniature releases
    record = execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path / "runs", device="cpu")
    assert record.synthetic_data is True and record.synthetic
    assert read_record(finished(tmp_path / "runs")[0]).synthetic_data is True


def test_guidg_records_its_base_routing_phases_and_selection_in_percent(mini_benchmark, mini_releases, tmp_path) -> None:
    record = execute(spec(mini_benchmark, "guidg+clipood"), dict(mini_releases.paths), tmp_path, device="cpu")
    assert (record.method, record.base, record.routing) == ("guidg", "clipood", "batch")
    assert {"experts", "finetune"} <= set(record.phase_seconds)
    selection = [e["select_accuracy"] for e in record.details["experts"].values()]
    assert all(0.0 <= a <= 100.0 for a in selection) and max(selection) > 1.0  # percent, not a fraction


def test_a_finished_run_is_not_repeated(mini_benchmark, mini_releases, tmp_path) -> None:
    first = attempt(spec(mini_benchmark, "erm"), dict(mini_releases.paths), tmp_path, device="cpu")
    stamp = (first.folder / RESULTS_FILE).stat().st_mtime_ns
    again = attempt(spec(mini_benchmark, "erm"), dict(mini_releases.paths), tmp_path, device="cpu")
    assert (first.status, again.status) == ("ran", "done")
    assert again.record == first.record and (first.folder / RESULTS_FILE).stat().st_mtime_ns == stamp


def test_another_seed_is_another_run(mini_benchmark, mini_releases, tmp_path) -> None:
    for seed in (1, 2):
        execute(spec(mini_benchmark, seed=seed), dict(mini_releases.paths), tmp_path, device="cpu")
    assert len(finished(tmp_path)) == 2


def test_a_failed_run_leaves_no_folder_and_no_done_marker(mini_benchmark, mini_releases, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(run_module, "fit_method", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu")
    assert list(tmp_path.iterdir()) == [] or [p.name for p in tmp_path.iterdir()] == ["experts"]


def test_non_finite_logits_stop_the_run_unrecorded(mini_benchmark, mini_releases, tmp_path, monkeypatch) -> None:
    import guidg.evaluation as evaluation_module
    from guidg.divergence import TrainingDivergedError

    real = evaluation_module.image_features
    monkeypatch.setattr(evaluation_module, "image_features", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDivergedError, match="NaN"):
        execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu")
    assert finished(tmp_path) == []


def test_export_model_on_a_finished_run_says_why_it_cannot(mini_benchmark, mini_releases, tmp_path, caplog) -> None:
    execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu")
    with caplog.at_level("WARNING", logger="guidg.run"):
        execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu", export_model=True)
    assert "without --export-model" in caplog.text and "remove the folder" in caplog.text


def test_the_same_run_twice_gives_the_same_result_on_cpu(mini_benchmark, mini_releases, tmp_path) -> None:
    records = [
        execute(spec(mini_benchmark, "guidg+ueo"), dict(mini_releases.paths), tmp_path / name, device="cpu").to_dict()
        for name in ("first", "second")
    ]
    for record in records:
        record.pop("phase_seconds"), record.pop("git_commit")  # wall time, and commits made meanwhile
    assert records[0] == records[1]


def test_evaluate_command_runs_a_method_and_prints_the_table(mini_benchmark, mini_releases, tmp_path) -> None:
    args = ["evaluate", "--benchmark", str(mini_benchmark), "--target", "a", "--seeds", "1", "--method", "guidg",
            "--base", "clipood", "--model", "imagenet-dg-tiny", "--pretrained", "none", "--preset", "smoke",
            "--set", "prompt.epochs=2", "--set", "finetune.epochs=1", "--set", "finetune.steps_per_epoch=2",
            "--device", "cpu", "--runs", str(tmp_path / "runs"), "--root", str(mini_releases.root),
            "--export-model"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    assert table[-2].split()[:4] == ["state", "method", "task", "target"]
    assert table[-1].split()[:4] == ["ran", "guidg+clipood", "a", "imagenet-a"]
    exported = list((tmp_path / "runs").glob("*/model.safetensors"))
    assert len(exported) == 1
    model, _, _ = open_clip.create_model_and_transforms("imagenet-dg-tiny", pretrained=str(exported[0]))
    assert model.visual.conv1.weight.shape[0] > 0
    assert len(collect(tmp_path / "runs").runs) == 1
    again = CliRunner().invoke(main, [*args[:-1], "--dry-run"])
    assert again.exit_code == 0 and "1 runs, 1 done, 0 to run" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--method", "zeroshot", "--base", "clipood"], "--base applies only to guidg"),
     (["--method", "guidg"], "runs on a base method"),
     (["--method", "zeroshot", "--device", "cuda"], "no CUDA GPU"),
     (["--method", "zeroshot", "--set", "finetune.lr=fast"], "finetune.lr=fast")],
)
def test_evaluate_refuses_a_bad_request_in_one_line(extra, message, tmp_path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["evaluate", "--runs", str(tmp_path / "runs"), *extra])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
