"""One evaluation run: its record, its folder, resumption of a sweep, and the leaderboard built from runs."""

from __future__ import annotations

import json

import open_clip
from click.testing import CliRunner

from guidg.backbone import TINY_SPEC
from guidg.presets import get_preset
from guidg.run import DONE_FILE, RESULTS_FILE, RunSpec, execute
from imagenet_dg.cli import main
from leaderboard.records import collect
from leaderboard.table import render_markdown

QUICK = get_preset("smoke").replace(prompt={"epochs": 2}, finetune={"epochs": 1, "steps_per_epoch": 2})


def spec(benchmark, method: str = "zeroshot", seed: int = 1) -> RunSpec:
    return RunSpec(benchmark, "a-16shot-seed1", method, TINY_SPEC, "smoke", QUICK, seed)


def test_a_run_records_its_score_and_what_produced_it(mini_benchmark, mini_releases, tmp_path) -> None:
    record = execute(spec(mini_benchmark), dict(mini_releases.paths), tmp_path, device="cpu")
    assert record["method"] == "zeroshot" and record["target"] == "imagenet-a" and record["task"] == "a"
    assert 0.0 <= record["accuracy"] <= 100.0
    assert record["test_images"] == sum(mini_releases.expected_counts["imagenet-a"].values())
    assert set(record["guide_accuracy"]) == {"imagenet", "imagenet-sketch", "imagenetv2"}
    assert record["backbone"]["arch"] == TINY_SPEC.arch
    assert record["hparams"] == json.loads(json.dumps(QUICK.to_dict()))
    assert record["eval_batch_size"] == QUICK.eval.batch_size
    assert {"torch", "open_clip", "imagenet_dg"} <= set(record["environment"])
    folders = [p for p in tmp_path.iterdir() if (p / DONE_FILE).is_file()]
    assert len(folders) == 1
    assert json.loads((folders[0] / RESULTS_FILE).read_text()) == record


def test_a_finished_run_is_not_repeated(mini_benchmark, mini_releases, tmp_path) -> None:
    first = execute(spec(mini_benchmark, "erm"), dict(mini_releases.paths), tmp_path, device="cpu")
    folder = next(p for p in tmp_path.iterdir() if (p / DONE_FILE).is_file())
    stamp = (folder / RESULTS_FILE).stat().st_mtime_ns
    again = execute(spec(mini_benchmark, "erm"), dict(mini_releases.paths), tmp_path, device="cpu")
    assert again == first and (folder / RESULTS_FILE).stat().st_mtime_ns == stamp


def test_another_seed_is_another_run(mini_benchmark, mini_releases, tmp_path) -> None:
    for seed in (1, 2):
        execute(spec(mini_benchmark, seed=seed), dict(mini_releases.paths), tmp_path, device="cpu")
    assert len([p for p in tmp_path.iterdir() if (p / DONE_FILE).is_file()]) == 2


def test_the_leaderboard_averages_runs_over_seeds(mini_benchmark, mini_releases, tmp_path) -> None:
    scores = [execute(spec(mini_benchmark, seed=s), dict(mini_releases.paths), tmp_path, device="cpu")["accuracy"] for s in (1, 2)]
    records = collect(tmp_path)
    assert len(records) == 2
    table = render_markdown(records)
    row = next(line for line in table.splitlines() if line.startswith("| zeroshot"))
    assert f"{sum(scores) / 2:.1f}" in row and "(2)" in row
    assert "imagenet-a" in table


def test_unfinished_runs_are_left_out_of_the_leaderboard(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RESULTS_FILE).write_text("{}\n")
    assert collect(tmp_path).empty


def test_evaluate_command_runs_a_method_on_the_miniature_benchmark(mini_benchmark, mini_releases, tmp_path) -> None:
    args = ["evaluate", "--benchmark", str(mini_benchmark), "--method", "guidg", "--base", "clipood",
            "--model", "imagenet-dg-tiny", "--pretrained", "none", "--preset", "smoke", "--device", "cpu",
            "--runs", str(tmp_path / "runs"), "--root", str(mini_releases.root), "--export-model"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "guidg+clipood\ta-16shot-seed1\timagenet-a" in result.output
    exported = list((tmp_path / "runs").glob("*/model.safetensors"))
    assert len(exported) == 1
    model, _, _ = open_clip.create_model_and_transforms("imagenet-dg-tiny", pretrained=str(exported[0]))
    assert model.visual.conv1.weight.shape[0] > 0
    board = CliRunner().invoke(main, ["leaderboard", "--runs", str(tmp_path / "runs")])
    assert board.exit_code == 0 and "| guidg+clipood |" in board.output


def test_the_same_run_twice_gives_the_same_result_on_cpu(mini_benchmark, mini_releases, tmp_path) -> None:
    records = [
        execute(spec(mini_benchmark, "guidg+ueo"), dict(mini_releases.paths), tmp_path / name, device="cpu")
        for name in ("first", "second")
    ]
    for record in records:
        record.pop("train_seconds")
    assert records[0] == records[1]
