"""A disk that is full, over quota, read-only or closed to us: one ``error:`` line naming the folder, what was
written and the sizes, exit code 2, never a traceback; nothing marked complete, no temporary file left, and the
same command resumes once there is room. Each case runs on a real small tmpfs where the machine allows one,
and with the fault injected into the write primitives everywhere."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import guidg.image_cache as image_cache
import imagenet_dg.atomic as atomic
import imagenet_dg.disk as disk
import imagenet_dg.hub as hub
import imagenet_dg.manifests as manifests
from guidg.checkpoints import save_training_state
from imagenet_dg.atomic import atomic_file, write_text_atomic
from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.disk import fault_errno, format_bytes, require_free_space
from imagenet_dg.errors import NotEnoughSpaceError, WriteError
from imagenet_dg.loading import LabeledImages
from imagenet_dg.records import DONE_FILE, RESULTS_FILE

FAULTS = [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM]
SAID = {errno.ENOSPC: "no space left", errno.EDQUOT: "quota", errno.EROFS: "read-only",
        errno.EACCES: "permission denied", errno.EPERM: "not permitted"}
BUILD = ["--shots", "1,2,4,8,16", "--seeds", "1,2,3,4,5"]
EVALUATE = ["evaluate", "--target", "a", "--method", "clipood", "--model", "imagenet-dg-tiny", "--pretrained", "mini",
            "--seeds", "1", "--device", "cpu", "--preset", "smoke", "--set", "finetune.epochs=1",
            "--set", "finetune.steps_per_epoch=6", "--set", "finetune.checkpoint_every=3"]


def fault(code: int, filename: str | os.PathLike[str] | None = None) -> OSError:
    return OSError(code, os.strerror(code), *([str(filename)] if filename is not None else []))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(output: str) -> str:
    """The single ``error:`` line of ``output``, checked to be the only one and to come without a traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and output.strip().splitlines()[-1] == errors[0], output
    return errors[0]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command line in its own process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "imagenet_dg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=environment)


# --- the library: what a refused write says and leaves ---------------------------------------------------


def test_the_fault_behind_an_error_is_read_from_its_errno_its_message_or_its_cause() -> None:
    assert fault_errno(fault(errno.ENOSPC)) == errno.ENOSPC
    assert fault_errno(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")) == 28
    wrapped = RuntimeError("unexpected pos 4000704 vs 598")
    wrapped.__cause__ = fault(errno.EDQUOT)
    assert fault_errno(wrapped) == errno.EDQUOT
    assert fault_errno(FileNotFoundError(errno.ENOENT, "gone")) is None and fault_errno(ValueError("x")) is None


@pytest.mark.parametrize("code", FAULTS)
def test_a_refused_atomic_write_names_folder_file_and_cause_and_keeps_the_old_file(
    code, tmp_path, monkeypatch, leftovers
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    real = Path.write_bytes

    def refusing(self, data):
        real(self, data[: len(data) // 2])  # half written, then refused, as a filling disk does
        raise fault(code)

    monkeypatch.setattr(Path, "write_bytes", refusing)
    with pytest.raises(WriteError) as caught:
        write_text_atomic(target, "x" * 5000)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: cannot write state.json: ") and SAID[code] in message
    assert caught.value.errno == code and "run the same command again" in message
    if code in (errno.ENOSPC, errno.EDQUOT):
        assert f"{format_bytes(5000)} needed" in message and "free)" in message
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_a_writer_that_hides_the_os_error_still_reports_the_full_disk(tmp_path, monkeypatch, leftovers) -> None:
    real = os.write

    def filling(fd, data):  # the temporary file's writes fail once 1 kB is in
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and os.fstat(fd).st_size + len(data) > 1024:
            raise fault(errno.ENOSPC)
        return real(fd, data)

    monkeypatch.setattr(os, "write", filling)
    with pytest.raises(WriteError) as caught:
        save_training_state(tmp_path / "finetune-state.pt", {"w": torch.zeros(100_000), "step": 3})
    assert "the resumable training state (finetune-state.pt)" in str(caught.value)
    assert f"{format_bytes(400_000)} needed" in str(caught.value)  # torch.save alone says "unexpected pos"
    assert leftovers(tmp_path) == [] and not (tmp_path / "finetune-state.pt").exists()


def test_training_state_on_a_full_tmpfs_is_one_write_error_with_its_size(small_disk, leftovers) -> None:
    disk_ = small_disk("400k")
    with pytest.raises(WriteError) as caught:
        save_training_state(disk_.path / "finetune-state.pt", {"w": torch.zeros(1_000_000), "step": 3})
    assert f"{disk_.path}: cannot write the resumable training state" in str(caught.value)
    assert "3.8 MiB needed" in str(caught.value) and leftovers(disk_.path) == []
    with atomic_file(disk_.path / "small.bin") as handle:  # the disk is usable again at once
        handle.write(b"ok")
    assert (disk_.path / "small.bin").read_bytes() == b"ok"


def test_a_large_write_is_refused_before_it_starts_with_both_figures(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: 3 * 1024**2)
    with pytest.raises(NotEnoughSpaceError) as caught:
        require_free_space(tmp_path / "not-yet", 10 * 1024**3, "the decoded-image cache of 50000 images")
    assert str(caught.value).startswith(f"{tmp_path / 'not-yet'}: not enough free space for the decoded-image cache")
    assert "about 10.0 GiB needed, 3.0 MiB free" in str(caught.value)
    require_free_space(tmp_path, 1024, "a small thing")  # enough room: nothing said


# --- the decoded-image cache -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> LabeledImages:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate([(40, 60), (60, 40), (45, 60), (50, 50)] * 5):
        path = folder / f"{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return LabeledImages(tuple(paths), tuple(i % 2 for i in range(len(paths))), ("d",) * len(paths))


def test_the_cache_size_estimate_is_close_to_the_built_cache(photos, tmp_path) -> None:
    spec = image_cache.DecodeSpec(64)
    cache, _ = image_cache.open_or_build(tmp_path, photos, spec)
    built = sum(p.stat().st_size for p in cache.folder.iterdir())
    assert abs(image_cache.estimated_bytes(photos, spec) - built) < 0.05 * built


def test_a_cache_larger_than_the_free_space_is_refused_before_decoding(
    photos, tmp_path, monkeypatch, leftovers
) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: 10_000)
    monkeypatch.setattr(image_cache, "_write_cache", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises(NotEnoughSpaceError) as caught:
        image_cache.open_or_build(tmp_path / "caches", photos, image_cache.DecodeSpec(64))
    assert "the decoded-image cache of 20 images" in str(caught.value) and "9.8 KiB free" in str(caught.value)
    assert leftovers(tmp_path) == []


def test_a_disk_filling_during_a_cache_build_leaves_no_temporary_folder(photos, small_disk, leftovers) -> None:
    disk_ = small_disk("200k")  # room for the estimate's check on a few images, not for all of them
    with pytest.raises(WriteError) as caught:
        image_cache.open_or_build(disk_.path, photos, image_cache.DecodeSpec(96))
    assert str(caught.value).startswith(f"{disk_.path}: ") and "decoded-image cache of 20 images" in str(caught.value)
    assert leftovers(disk_.path) == [] and list(disk_.path.iterdir()) == []
    disk_.resize("8m")
    cache, stats = image_cache.open_or_build(disk_.path, photos, image_cache.DecodeSpec(96))
    assert stats.built and len(cache) == 20


# --- build: the real command line ------------------------------------------------------------------------


def test_build_on_a_full_disk_is_one_error_line_and_resumes_once_there_is_room(mini_releases, small_disk, tmp_path, leftovers):
    disk_ = small_disk("400k")
    out = disk_.path / "imagenet-dg"
    failed = cli("build", "--root", str(mini_releases.root), "--out", str(out), *BUILD, cwd=tmp_path)
    assert failed.returncode == 2
    line = one_error_line(failed.stderr)
    assert line.startswith(f"error: {disk_.path}/.imagenet-dg.partial: cannot write ") and "no space left" in line
    assert "free" in line and leftovers(disk_.path) == [] and not out.exists()  # nothing published
    disk_.resize("16m")
    resumed = cli("build", "--root", str(mini_releases.root), "--out", str(out), *BUILD, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "kept " in resumed.stderr and "configuration(s) of the interrupted build" in resumed.stderr
    elsewhere = tmp_path / "clean"
    clean = cli("build", "--root", str(mini_releases.root), "--out", str(elsewhere), *BUILD, cwd=tmp_path)
    assert clean.returncode == 0
    assert folder_bytes(out) == folder_bytes(elsewhere)
    assert sorted(p.name for p in disk_.path.iterdir()) == ["imagenet-dg"]


def refuse_rename(monkeypatch, code: int, at: int, name: str | None = None) -> list[str]:
    """Make the ``at``-th rename (of those onto a file called ``name``, when given) fail with ``code``."""
    real = os.replace
    calls: list[str] = []

    def replace(source, target):
        if name is None or Path(target).name == name:
            calls.append(str(target))
            if len(calls) == at:
                raise fault(code, target)
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("code", FAULTS)
def test_every_refused_write_of_a_build_is_one_error_line_and_the_rerun_resumes(
    code, mini_releases, tmp_path, monkeypatch, caplog, leftovers
) -> None:
    out = tmp_path / "imagenet-dg"
    args = ["build", "--root", str(mini_releases.root), "--out", str(out), "--tasks", "a", "--shots", "1",
            "--seeds", "1,2"]
    refuse_rename(monkeypatch, code, at=6)  # a shard of the second configuration
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    line = one_error_line(result.output)
    assert line.startswith(f"error: {tmp_path}/.imagenet-dg.partial/data/a-1shot-seed2: cannot write ")
    assert SAID[code] in line and leftovers(tmp_path) == [] and not out.exists()
    monkeypatch.undo()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "kept 1 configuration(s) of the interrupted build: a-1shot-seed1" in caplog.text
    clean = tmp_path / "clean"
    assert CliRunner().invoke(main, [*args[:4], str(clean), *args[5:]]).exit_code == 0
    assert folder_bytes(out) == folder_bytes(clean)


def test_an_embedded_image_build_too_large_for_the_disk_is_refused_before_writing_a_shard(
    mini_releases, small_disk, tmp_path
) -> None:
    disk_ = small_disk("400k")
    result = cli("build", "--root", str(mini_releases.root), "--out", str(disk_.path / "embedded"), "--tasks", "a",
                 "--embed-images", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "not enough free space for the embedded images: about " in line and "MiB needed" in line
    assert not list(disk_.path.rglob("*.parquet"))


# --- evaluate: records, checkpoints, logs, the cache, the harness's manifests ----------------------------


def test_evaluate_on_a_full_disk_is_one_error_line_and_resumes_once_there_is_room(mini_releases, small_disk, tmp_path, leftovers):
    disk_ = small_disk("300k")
    runs = disk_.path / "runs"
    args = [*EVALUATE, "--mini", "--mini-dir", str(mini_releases.root), "--runs", str(runs)]
    failed = cli(*args, cwd=tmp_path)
    assert failed.returncode == 2
    line = one_error_line(failed.stderr)
    assert line.startswith(f"error: {runs}") and ("no space left" in line or "not enough free space" in line)
    assert leftovers(disk_.path) == [] and not list(disk_.path.rglob(DONE_FILE))
    disk_.resize("64m")
    finished = cli(*args, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip().splitlines()[-1].startswith("ran    clipood")
    assert len(list(runs.rglob(DONE_FILE))) == 1 and leftovers(disk_.path) == []


@pytest.fixture
def evaluate_here(mini_benchmark, mini_releases, tmp_path):
    """Run ``evaluate`` in this process on the miniature benchmark; returns (result, runs folder)."""
    def run(runs: Path = tmp_path / "runs"):
        result = CliRunner().invoke(main, [*EVALUATE, "--benchmark", str(mini_benchmark), "--root",
                                           str(mini_releases.root), "--runs", str(runs)])
        return result, runs

    return run


def only_run_folder(runs: Path) -> Path:
    [folder] = [p for p in runs.iterdir() if p.is_dir() and p.name not in ("experts", "decoded-images")]
    return folder


@pytest.mark.parametrize("code", FAULTS)
@pytest.mark.parametrize(("written", "at"), [(RESULTS_FILE, 1), (DONE_FILE, 1), ("finetune-state.pt", 2)])
def test_a_refused_record_or_checkpoint_is_one_error_line_and_the_run_finishes_on_the_rerun(
    written, at, code, evaluate_here, monkeypatch, tmp_path, leftovers
) -> None:
    # the record, its done marker, or the second of the run's two checkpoints
    refuse_rename(monkeypatch, code, at, name=written)
    result, runs = evaluate_here()
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    line = one_error_line(result.output)
    folder = only_run_folder(runs)
    assert line.startswith(f"error: {folder}: cannot write ") and written in line and SAID[code] in line
    assert not (folder / DONE_FILE).exists() and leftovers(runs) == []
    monkeypatch.undo()
    again, _ = evaluate_here()
    assert again.exit_code == 0, again.output
    clean, clean_runs = evaluate_here(tmp_path / "clean")
    assert clean.exit_code == 0 and (folder / DONE_FILE).is_file()
    resumed, uninterrupted = (json.loads((f / RESULTS_FILE).read_text()) for f in (folder, only_run_folder(clean_runs)))
    assert resumed["class_accuracy"] == uninterrupted["class_accuracy"]
    assert resumed["validation_accuracy"] == uninterrupted["validation_accuracy"]


def test_a_log_line_the_disk_refuses_stops_the_run_with_one_error_line(evaluate_here, monkeypatch) -> None:
    import guidg.run as run

    real = run._RunLogHandler.flush
    flushes = []

    def flush(self):  # the disk fills after the log's third line
        flushes.append(1)
        if len(flushes) > 3:
            raise fault(errno.ENOSPC)
        real(self)

    monkeypatch.setattr(run._RunLogHandler, "flush", flush)
    result, runs = evaluate_here()
    assert result.exit_code == 2 and "Logging error" not in result.output
    line = one_error_line(result.output)
    assert "cannot write the run's log (run.log): no space left" in line
    assert not list(runs.rglob(DONE_FILE))


def test_a_cache_the_disk_refuses_is_one_error_line_naming_its_folder(mini_benchmark, mini_releases, tmp_path,
                                                                      monkeypatch, leftovers) -> None:
    benchmark = tmp_path / "imagenet-dg"
    shutil.copytree(mini_benchmark, benchmark)  # no cache beside it yet

    def refusing(*args, **kwargs):
        raise fault(errno.ENOSPC)

    monkeypatch.setattr(image_cache, "_write_cache", refusing)
    result = CliRunner().invoke(main, [*EVALUATE, "--benchmark", str(benchmark), "--root", str(mini_releases.root),
                                       "--runs", str(tmp_path / "runs")])
    line = one_error_line(result.output)
    assert result.exit_code == 2 and "cannot write the decoded-image cache of " in line
    assert line.startswith(f"error: {tmp_path / 'imagenet-dg.decoded-images'}: ") and "no space left" in line
    assert leftovers(tmp_path) == [] and not list(tmp_path.rglob(DONE_FILE))


# --- leaderboard, verify, push ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_build(unmarked_scans, tmp_path_factory) -> Path:
    """A build that looks real (its images carry no generator's marker), so that push gets as far as the Hub."""
    out = tmp_path_factory.mktemp("faults") / "imagenet-dg"
    build(unmarked_scans, out, BuildOptions(tasks=("a",), shots=(1,), seeds=(1,)))
    return out


def test_a_runs_folder_on_a_read_only_file_system_is_one_error_line_before_anything_runs(
    mini_benchmark, mini_releases, small_disk, tmp_path
) -> None:
    disk_ = small_disk("100k")
    disk_.make_read_only()
    result = cli(*EVALUATE, "--benchmark", str(mini_benchmark), "--root", str(mini_releases.root), "--runs",
                 str(disk_.path / "runs"), cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: {disk_.path}") and "read-only" in line


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_leaderboard_into_a_folder_that_refuses_writes_is_one_error_line(code, tmp_path, monkeypatch) -> None:
    def refusing(target):
        raise fault(code, target.parent)

    monkeypatch.setattr(atomic, "_create_temporary", refusing)
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(tmp_path / "runs"), "--out",
                                       str(tmp_path / "board")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    line = one_error_line(result.output)
    assert line.startswith(f"error: {tmp_path / 'board'}: cannot write ") and SAID[code] in line


def test_leaderboard_onto_a_read_only_file_system_is_one_error_line(small_disk, tmp_path) -> None:
    disk_ = small_disk("100k")
    disk_.make_read_only()
    (tmp_path / "runs").mkdir()
    result = cli("leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(disk_.path / "board"), cwd=tmp_path)
    assert result.returncode == 2
    assert "read-only" in one_error_line(result.stderr) and str(disk_.path) in result.stderr


def test_verify_of_an_unreadable_shard_is_one_error_line_naming_it(small_build, monkeypatch) -> None:
    def unreadable(path):
        raise fault(errno.EACCES, path)

    monkeypatch.setattr(manifests, "file_sha256", unreadable)
    result = CliRunner().invoke(main, ["verify", str(small_build)])
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert line.startswith(f"error: {small_build}/data/") and ".parquet: permission denied" in line


def test_push_whose_client_cannot_write_its_cache_says_so_not_that_the_network_failed(small_build, monkeypatch):
    class FullCacheApi:
        def __init__(self, token=None) -> None:
            pass

        def create_repo(self, repo_id, **kwargs):
            raise fault(errno.ENOSPC, "/root/.cache/huggingface/hub/.locks/x.lock")

    monkeypatch.setattr(hub, "HfApi", FullCacheApi)
    result = CliRunner().invoke(main, ["push", str(small_build), "--repo-id", "someone/x", "--token", "hf_secret"])
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert line.startswith("error: /root/.cache/huggingface/hub/.locks: cannot write x.lock: no space left")
    assert "could not be reached" not in line and "hf_secret" not in line


def test_a_write_fault_shows_its_traceback_with_verbose(mini_releases, tmp_path, monkeypatch) -> None:
    args = ["build", "--root", str(mini_releases.root), "--out", str(tmp_path / "o"), "--tasks", "a", "--shots", "1",
            "--seeds", "1"]
    refuse_rename(monkeypatch, errno.ENOSPC, at=2)
    quiet = CliRunner().invoke(main, args)
    refuse_rename(monkeypatch, errno.ENOSPC, at=2)
    loud = CliRunner().invoke(main, ["-v", *args])
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback (most recent call last)" in loud.output
    assert loud.output.strip().splitlines()[-1] == one_error_line(quiet.output)
