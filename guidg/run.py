"""One evaluation run: a method trained on one task configuration and scored once on its target.

Each run lives in a folder named by a hash of everything that determines its result (manifest content,
configuration, method, backbone, hyperparameters, seed, device type and precision: a CPU fp32 run and a GPU
bf16 run of one spec are two runs). While the run is going the folder holds its lock, ``run.json`` (what it
is), ``run.log`` and the resumable training state; once it has finished, the record written by
:func:`imagenet_dg.records.write_record` (``results.jsonl``, then the ``done`` marker). A run whose folder is
done is not repeated, so a sweep resumes by running the same command again; two processes sharing a runs
folder never run one run twice (:mod:`guidg.run_lock`). A trained predictor is kept in the folder
(``predictor.safetensors``) until the record is written, so a run stopped after training resumes with scoring.
Model selection uses source data only (:mod:`guidg.model_selection`); the target is scored once, at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import Tensor

from imagenet_dg import __version__
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.calibration import expected_calibration_error, negative_log_likelihood
from imagenet_dg.disk import reporting_write_faults, write_error
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData, load_task
from imagenet_dg.manifests import read_manifest
from imagenet_dg.records import DONE_FILE, RUN_FILE, Record, read_record, write_record
from imagenet_dg.suites import get_suite, suite_of_manifest
from guidg.backbone import Backbone, BackboneSpec, load_backbone
from guidg.checkpoints import CheckpointError, export_open_clip_checkpoint, load_tensors, save_tensors
from guidg.distributed import broadcast_object, current_replica
from guidg.divergence import NonFiniteOutputError
from guidg.evaluation import predict
from guidg.experts import ExpertStore
from guidg.finetune import CHECKPOINT_FILE
from guidg.image_cache import run_cache_settings, using_image_cache
from guidg.image_pipeline import describe_pipeline, machine_workers
from guidg.interruption import RunInterrupted
from guidg.methods import Method, Predictor, fit_method, get_method, load_method
from guidg.model_selection import pooled_validation_images
from guidg.pooled_training import CHECKPOINT_FILE as POOLED_CHECKPOINT_FILE
from guidg.run_lock import LOCK_FILE, RunLock
from guidg.settings import MethodConfig

logger = logging.getLogger(__name__)

EXPERTS_DIR = "experts"
MODEL_FILE = "model.safetensors"
PREDICTOR_FILE = "predictor.safetensors"
"""The trained predictor's tensors (:meth:`guidg.methods.Predictor.state_dict`) and what its fit recorded."""
LOG_FILE = "run.log"
BOOKKEEPING_FILES = frozenset({LOCK_FILE, RUN_FILE, LOG_FILE})
"""What a run folder holds before the run has produced anything worth keeping."""
TRAINING_STATE_FILES = (CHECKPOINT_FILE, POOLED_CHECKPOINT_FILE)
"""The resumable training states a run may leave in its folder (image-encoder fine-tuning, pooled-source training)."""

@dataclass(frozen=True)
class RunSpec:
    """What one run trains and scores."""

    benchmark: Path
    """A folder of built manifests (``imagenet-dg build``)."""
    config: str
    """A configuration of that folder, e.g. ``a-16shot-seed1`` or ``sketch-16shot-seed1``."""
    method: str
    """A registered method name (:data:`guidg.methods.METHODS`), e.g. ``guidg+clipood``."""
    backbone: BackboneSpec
    preset: str
    hparams: MethodConfig
    """The run's configuration: the method's sections and the run's (:func:`guidg.presets.method_config`)."""
    seed: int
    """Training seed (initialisation, batches, augmentation)."""
    suite_source: Mapping[str, Any] = field(default_factory=lambda: {"kind": "folder"})
    """Where the images came from, as recorded (``{"kind": "folder"}`` or the Hub repository and revision)."""


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`attempt` did with a run."""

    folder: Path
    status: str
    """``ran`` (trained and scored now), ``done`` (finished before) or ``busy`` (another process holds it)."""
    record: Record | None
    """The record; None when busy, and on data-parallel ranks other than 0 (they write nothing)."""


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers(device: str) -> int:
    """Image-loading processes: none on CPU (they would compete with the model for the cores), on a GPU every
    core but one (:func:`guidg.image_pipeline.machine_workers`)."""
    return machine_workers(device)


def precision_of(device_type: str) -> str:
    """The compute precision of a device type: bf16 autocast on CUDA, fp32 elsewhere (the backbone's rule)."""
    return "bf16" if device_type == "cuda" else "fp32"


def run_key(spec: RunSpec, content_hash: str, device_type: str = "cpu") -> str:
    """Name of the run's folder: a hash of everything that determines its result."""
    payload = {
        "benchmark": content_hash,
        "config": spec.config,
        "method": spec.method,
        "backbone": spec.backbone.describe(),
        "hparams": _key_hparams(spec.hparams),
        "seed": spec.seed,
        "device_type": device_type,
        "precision": precision_of(device_type),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _key_hparams(hparams: MethodConfig) -> dict[str, Any]:
    """The hyperparameters as the run key sees them: the pipeline settings only when they are not the
    defaults, so the exact path keeps the folders of runs made before those settings existed."""
    values = hparams.to_dict()
    if hparams.pipeline.is_default():
        del values["pipeline"]
    return values


def run_folder(spec: RunSpec, runs_dir: str | os.PathLike[str], content_hash: str, device_type: str) -> Path:
    """Where ``spec`` runs on a device of ``device_type``."""
    return Path(runs_dir) / run_key(spec, content_hash, device_type)


def is_done(folder: str | os.PathLike[str]) -> bool:
    """Whether the run folder holds a finished run."""
    return (Path(folder) / DONE_FILE).is_file()


@dataclass
class _Phases:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def source_commit() -> str | None:
    """The git commit of this package's source tree when it is a git checkout, else None."""
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA; the processor's otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or device.type


def pretrained_label(spec: BackboneSpec) -> str:
    """The weights as a record names them: the tag, ``none`` for random weights, a file by name and hash."""
    described = spec.describe()
    if described["pretrained_kind"] == "random":
        return "none"
    if described["pretrained_kind"] == "file":
        return f"file {Path(str(spec.pretrained)).name} sha256:{described['pretrained_sha256'][:16]}"
    return str(spec.pretrained)


def _scores(suite_name: str, logits: Tensor, images: LabeledImages, class_ids: tuple[str, ...]):
    suite = get_suite(suite_name)
    predictions = logits.argmax(dim=-1).cpu().tolist()
    return suite.scoring.score(images.labels, predictions, images.domains, class_ids)


@dataclass(frozen=True)
class Fitted:
    """What a method's fit produced besides the predictor's tensors: its count and details, and the time it took."""

    n_trainable: int
    details: Mapping[str, Any]
    fit_seconds: float


def _save_predictor(folder: Path, spec: RunSpec, predictor: Predictor, fitted: Fitted) -> None:
    metadata = {
        "run": folder.name, "method": spec.method, "n_trainable": str(fitted.n_trainable),
        "details": json.dumps(fitted.details, sort_keys=True, default=str), "fit_seconds": repr(fitted.fit_seconds),
    }
    save_tensors(folder / PREDICTOR_FILE, predictor.state_dict(), metadata)


def _saved_predictor(
    folder: Path, spec: RunSpec, backbone: Backbone, task: TaskData
) -> tuple[Predictor, Fitted]:
    """The predictor this run trained before it stopped (its folder holds :data:`PREDICTOR_FILE`)."""
    path = folder / PREDICTOR_FILE
    state, metadata = load_tensors(path)
    if metadata.get("run") != folder.name or metadata.get("method") != spec.method:
        raise CheckpointError(f"{path} holds the predictor of another run; delete it to train this one again")
    predictor = load_method(spec.method, backbone, task, spec.hparams, state, seed=spec.seed)
    fitted = Fitted(int(metadata["n_trainable"]), json.loads(metadata["details"]), float(metadata["fit_seconds"]))
    logger.info("%s on %s: trained before; scoring the saved predictor %s", spec.method, spec.config, path)
    return predictor, fitted


def _record(
    spec: RunSpec, method: Method, manifest: Mapping[str, Any], task: TaskData, fitted: Fitted,
    test_logits: Tensor, validation: Mapping[str, float], device: torch.device, phases: _Phases, requeues: int = 0,
) -> Record:
    entry = manifest["configs"][spec.config]
    suite_name = suite_of_manifest(manifest).name
    scores = _scores(suite_name, test_logits, task.test, task.class_ids)
    phase_seconds = dict(phases.seconds)
    for name, seconds in fitted.details.get("phase_seconds", {}).items():
        phase_seconds[name] = round(float(seconds), 3)
    details = {k: v for k, v in fitted.details.items() if k not in ("history", "phase_seconds", "model_selection")}
    details["trains"] = method.trains
    details["backbone"] = spec.backbone.describe()
    details["config_name"] = spec.config
    details["eval_order"] = "manifest (class, path)"
    details["processes"] = current_replica().world_size  # data-parallel processes that fine-tuned
    details["image_pipeline"] = describe_pipeline(device)
    details["requeues"] = int(requeues)  # times a cluster job running this run was requeued before it finished
    return Record(
        suite=suite_name,
        protocol=str(manifest.get("protocol", "fewshot")),
        protocol_version=str(manifest["protocol_version"]),
        task=str(entry.get("task", task.target)),
        target=task.target,
        sources=tuple(task.sources),
        num_classes=len(task.class_ids),
        method=method.family,
        base=method.base,
        routing=method.routing_of(spec.hparams),
        model=spec.backbone.arch,
        pretrained=pretrained_label(spec.backbone),
        synthetic_weights=bool(spec.backbone.describe().get("synthetic", False)),
        precision=precision_of(device.type),
        device_type=device.type,
        shots=entry.get("shots"),
        seed=spec.seed,
        split_seed=entry.get("seed"),
        accuracy=scores.accuracy,
        domain_accuracy=dict(scores.domain_accuracy),
        class_accuracy=dict(scores.class_accuracy),
        worst_class_accuracy=scores.worst_class_accuracy,
        ece=expected_calibration_error(test_logits, task.test.labels),
        nll=negative_log_likelihood(test_logits, task.test.labels),
        validation_accuracy=dict(validation),
        model_selection=method.selection_of(spec.hparams),
        test_images=len(task.test),
        # the manifest says so for the miniature releases; a registered miniature suite is synthetic by name too
        synthetic_data=bool(manifest.get("synthetic", False)) or get_suite(suite_name).synthetic,
        preset=spec.preset,
        config=json.loads(json.dumps(spec.hparams.to_dict())),  # as a reader of the file sees it
        manifest_content_hash=str(manifest["content_hash"]),
        suite_source=dict(spec.suite_source),
        package_version=__version__,
        git_commit=source_commit(),
        versions={"torch": torch.__version__, "open_clip": open_clip.__version__,
                  "python": platform.python_version()},
        device_name=device_name(device),
        phase_seconds=phase_seconds,
        n_trainable=int(fitted.n_trainable),
        eval_batch_size=int(spec.hparams.eval.batch_size),
        details=json.loads(json.dumps(details, default=str)),
    )


class _RunLogHandler(logging.FileHandler):
    """``run.log``: a line the disk refuses stops the run with one WriteError instead of logging's traceback
    on stderr (and the handler stops writing, so the error's own way out is not logged into it again)."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        converted = write_error(error, self.baseFilename, "the run's log") if error is not None else None
        if converted is None:
            super().handleError(record)
            return
        self.failed = True
        with contextlib.suppress(OSError):
            self.close()
        raise converted from error

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)


@contextlib.contextmanager
def _run_log(folder: Path) -> Iterator[None]:
    """Copy the project's log lines into ``folder/run.log`` while the run goes."""
    with reporting_write_faults(folder / LOG_FILE, "the run's log"):
        handler = _RunLogHandler(folder / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("guidg", "imagenet_dg", "leaderboard")]
    for one in loggers:
        one.addHandler(handler)
    try:
        yield
    finally:
        for one in loggers:
            one.removeHandler(handler)
        handler.close()


def _clear_if_empty(folder: Path, lock: RunLock) -> None:
    """After a failure: remove a run folder that holds nothing but bookkeeping (no resumable state)."""
    try:
        leftovers = {p.name for p in folder.iterdir()}
    except FileNotFoundError:
        return
    if leftovers <= BOOKKEEPING_FILES:
        for name in leftovers - {LOCK_FILE}:
            (folder / name).unlink(missing_ok=True)
        lock.release(remove=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def _say_why_not_exported(folder: Path) -> None:
    if not (folder / MODEL_FILE).is_file():
        logger.warning(
            "%s: finished earlier without --export-model, and its trained weights were not kept, so there is "
            "nothing to export; remove the folder and run again with --export-model to get %s",
            folder, MODEL_FILE,
        )


def attempt(
    spec: RunSpec,
    roots: Mapping[str, str | os.PathLike[str]],
    runs_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    num_workers: int = 0,
    export_model: bool = False,
    blocking: bool = True,
    requeues: int = 0,
) -> RunOutcome:
    """Run ``spec`` unless it is finished (then read its record) or, without ``blocking``, held by another
    process (then leave it).

    ``roots`` maps domain id -> the folder the manifest's paths of that domain are relative to. The run folder
    is locked for the whole run; a failure leaves no done marker and removes the folder unless it holds
    resumable training state. With ``export_model``, the trained model is also saved as
    ``model.safetensors`` in the run folder, in a form ``open_clip.create_model_and_transforms(arch,
    pretrained=<file>)`` loads. Under several data-parallel processes every rank calls this for the same
    spec; rank 0 decides, locks, scores and writes. ``requeues`` (how often the cluster job running it was
    requeued) goes into the record. A stop signal (:mod:`guidg.interruption`) raises
    :class:`~guidg.interruption.RunInterrupted` naming the run and its folder, which then resumes.
    """
    method = get_method(spec.method)
    manifest = read_manifest(spec.benchmark)
    if spec.config not in manifest["configs"]:
        raise ImageNetDGError(
            f"{spec.benchmark}: no configuration {spec.config!r}; it holds {', '.join(manifest['configs'])}"
        )
    torch_device = torch.device(device or default_device())
    folder = run_folder(spec, runs_dir, str(manifest["content_hash"]), torch_device.type)
    replica = current_replica()
    lock = RunLock(folder)
    status = "run"
    if replica.is_main:
        if is_done(folder):
            status = "done"
        elif not lock.acquire(blocking=blocking):
            status = "busy"
        elif is_done(folder):  # finished by another process while this one waited
            lock.release()
            status = "done"
    status = str(broadcast_object(status, replica))
    if status == "done":
        if export_model and replica.is_main:
            _say_why_not_exported(folder)
        logger.info("%s on %s: already done (%s)", spec.method, spec.config, folder)
        return RunOutcome(folder, "done", read_record(folder) if replica.is_main else None)
    if status == "busy":
        logger.info("%s on %s: running in another process (%s)", spec.method, spec.config, folder)
        return RunOutcome(folder, "busy", None)
    try:
        if replica.is_main:
            write_text_atomic(folder / RUN_FILE, json.dumps(_describe(spec, torch_device), sort_keys=True) + "\n")
        pipeline = spec.hparams.pipeline
        cache = run_cache_settings(spec.benchmark, runs_dir, manifest.get("content_hash"), num_workers,
                                   decoder=pipeline.decoder, augment_on=pipeline.augment_on)
        with _run_log(folder) if replica.is_main else contextlib.nullcontext(), using_image_cache(cache):
            logger.info("%s on %s: running in %s", spec.method, spec.config, folder)
            record = _train_and_score(spec, method, manifest, roots, runs_dir, folder, torch_device, num_workers,
                                      export_model, replica.is_main, requeues)
    except BaseException as error:
        if replica.is_main:
            _clear_if_empty(folder, lock)
        if isinstance(error, RunInterrupted):
            error.run, error.folder = f"{spec.method} on {spec.config}", folder
        raise
    finally:
        lock.release()
    return RunOutcome(folder, "ran", record)


def _describe(spec: RunSpec, device: torch.device) -> dict[str, Any]:
    return {
        "benchmark": str(spec.benchmark), "config": spec.config, "method": spec.method,
        "backbone": spec.backbone.describe(), "preset": spec.preset, "hparams": spec.hparams.to_dict(),
        "seed": spec.seed, "device_type": device.type, "precision": precision_of(device.type),
    }


def _train_and_score(
    spec: RunSpec, method: Method, manifest: Mapping[str, Any], roots: Mapping[str, str | os.PathLike[str]],
    runs_dir: str | os.PathLike[str], folder: Path, device: torch.device, num_workers: int, export_model: bool,
    is_main: bool, requeues: int = 0,
) -> Record | None:
    phases = _Phases()
    with phases.timed("load"):
        task = load_task(spec.benchmark, spec.config, roots)
        backbone = load_backbone(spec.backbone, device)
        if spec.hparams.pipeline.compile:
            backbone.compile_image_encoder()
    # Every rank takes the same path: the saved predictor, or training (in which they all take part).
    trained_before = bool(broadcast_object((folder / PREDICTOR_FILE).is_file(), current_replica()))
    if trained_before:
        predictor, fitted = _saved_predictor(folder, spec, backbone, task)
        phases.seconds["fit"] = round(fitted.fit_seconds, 3)
    else:
        with phases.timed("fit"):
            predictor = fit_method(
                spec.method, backbone, task, spec.hparams, seed=spec.seed, run_dir=folder,
                experts=ExpertStore(Path(runs_dir) / EXPERTS_DIR), num_workers=num_workers,
            )
        fitted = Fitted(int(predictor.n_trainable), dict(predictor.details), phases.seconds["fit"])
        if is_main:
            _save_predictor(folder, spec, predictor, fitted)
    if not is_main:
        return None  # rank 0 scores and writes
    with phases.timed("evaluate"):
        validation_images = pooled_validation_images(task)
        try:
            validation_logits = predict(predictor, backbone, validation_images, num_workers)
            # The target, once, after training and model selection.
            test_logits = predict(predictor, backbone, task.test, num_workers)
        except NonFiniteOutputError:
            (folder / PREDICTOR_FILE).unlink(missing_ok=True)  # a predictor of non-finite outputs is not worth resuming
            raise
        validation = _scores(suite_of_manifest(manifest).name, validation_logits, validation_images,
                             task.class_ids).domain_accuracy
    record = _record(spec, method, manifest, task, fitted, test_logits, validation, device, phases, requeues)
    if export_model:
        export_open_clip_checkpoint(
            backbone.model, folder / MODEL_FILE, {"method": spec.method, "config": spec.config, "arch": spec.backbone.arch}
        )
    write_record(folder, record)
    _clear_training_state(folder, keep_predictor=export_model)
    logger.info("%s on %s: %.2f%% on %s (%s)", spec.method, spec.config, record.accuracy, task.target, folder)
    return record


def _clear_training_state(folder: Path, keep_predictor: bool) -> None:
    """A finished run needs its resumable state no more (it can be as large as the model); an exported run keeps
    its predictor."""
    for name in TRAINING_STATE_FILES:
        (folder / name).unlink(missing_ok=True)
    if not keep_predictor:
        (folder / PREDICTOR_FILE).unlink(missing_ok=True)

