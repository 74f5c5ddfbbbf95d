"""The result record of one evaluation run: its schema, its writer and its reader.

A run folder holds, once the run has finished, ``results.jsonl`` (one JSON object on one line) and then an
empty ``done`` marker. The record is written atomically before the marker, so a folder with a ``done`` marker
always holds a complete record, and a folder without one is an unfinished run (still going, or killed).
Every accuracy, and the expected calibration error, is in percent; the negative log-likelihood in nats. The schema
carries a version: a record of another version is refused rather than read with guessed meanings. Version 3 added
the target's calibration (``ece``, ``nll``) and the model-selection rule (``model_selection``);
:func:`upgrade_schema_2` converts a version-2 record without guessing (its calibration was not measured).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.errors import ImageNetDGError

SCHEMA_VERSION = 3
"""Version of the record's fields and their meaning; raised whenever either changes."""
SCHEMA_2_MODEL_SELECTION = {
    "zeroshot": "none: nothing is trained",
    "zeroshot-ensemble": "none: nothing is trained",
    "coop": "best epoch on source validation",
    "erm": "last step",
    "ueo": "last step",
    "clipood": "last step",
    "guidg": "step 1: best epoch on source validation (each expert); step 2: last step",
}
"""How the methods of version-2 records chose the model they scored (by the record's ``method``), fixed by the code
that wrote them: CoOp and GuiDG's experts keep the epoch with the best accuracy on the sources' validation images,
the fine-tuned image encoders their weights after the last step (averaged as their base says)."""
RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"
RUN_FILE = "run.json"
"""Optional: written by a run when it starts, so that a run killed before its record is still found and
counted as unfinished."""

PROTOCOLS = ("fewshot", "full")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
ROUTINGS = (None, "batch", "sample")


class RecordError(ImageNetDGError):
    """A result record is malformed, of another schema version, or would overwrite a finished run."""


@dataclass(frozen=True)
class Record:
    """What one run (suite, protocol, task, method, base, routing, model, weights, precision, shots, seed) scored.

    Mapping fields are plain dicts so the record round-trips through JSON; treat them as read-only.
    Constructing a record validates it: a wrong type or value raises :class:`RecordError` naming the field.
    """

    suite: str
    """Registered suite name, e.g. ``imagenet-dg`` or ``pacs``."""
    protocol: str
    """``fewshot`` (the paper's) or ``full`` (DomainBed's)."""
    protocol_version: str
    task: str
    """The leave-one-domain-out task (``a`` for ImageNet-DG's ImageNet-A task; the target for the suites)."""
    target: str
    sources: tuple[str, ...]
    num_classes: int
    method: str
    """E.g. ``zeroshot``, ``coop``, ``erm``, ``clipood``, ``ueo``, ``guidg``."""
    base: str | None
    """The base fine-tuning method under ``guidg`` (``erm``, ``clipood``, ``ueo``); None for the others."""
    routing: str | None
    """CMAttn routing (``batch`` or ``sample``) for methods that route; None for the others."""
    model: str
    """open_clip architecture."""
    pretrained: str
    """open_clip pretrained tag or checkpoint description; ``none`` for random weights."""
    synthetic_weights: bool
    """Whether the weights were trained on synthetic images only (the packaged ``mini`` synthetic-world weights);
    False for random weights and for real pretrained weights."""
    precision: str
    device_type: str
    shots: int | None
    """Shots per class; None for the full protocol."""
    seed: int
    """Training seed."""
    split_seed: int | None
    """Seed of the few-shot draw (fewshot) or DomainBed's trial seed (full)."""
    accuracy: float
    domain_accuracy: dict[str, float]
    class_accuracy: dict[str, float]
    """Per class id (the label index, as a string); empty when the run did not measure it."""
    worst_class_accuracy: float | None
    """The lowest per-class accuracy; None when the run did not measure per-class accuracy."""
    ece: float | None
    """Expected calibration error on the target, in percent (:func:`imagenet_dg.calibration.expected_calibration_error`:
    15 equal-width bins of the maximum softmax probability); None when the run did not measure it."""
    nll: float | None
    """Mean negative log-likelihood of the true class on the target, in nats
    (:func:`imagenet_dg.calibration.negative_log_likelihood`); None when the run did not measure it."""
    validation_accuracy: dict[str, float]
    """Source-only model-selection accuracy per source domain."""
    model_selection: str | None
    """How the run chose the model it scored, as its method says it (e.g. the best epoch on source validation, the
    last step); None when the record does not say."""
    test_images: int
    synthetic_data: bool
    """Whether the images are synthetic (the miniature releases or suites; their manifest says so): such a
    number is never put beside, or averaged with, one measured on the real benchmark."""
    preset: str
    config: dict[str, Any]
    """The full resolved hyperparameters."""
    manifest_content_hash: str
    suite_source: dict[str, Any]
    """Where the suite's images came from, e.g. ``{"kind": "folder"}`` or ``{"kind": "hub", "repo_id": ...}``."""
    package_version: str
    git_commit: str | None
    versions: dict[str, str]
    """At least ``torch``, ``open_clip`` and ``python``."""
    device_name: str
    phase_seconds: dict[str, float]
    """Wall time of each phase (e.g. ``experts``, ``finetune``, ``evaluate``) in seconds."""
    n_trainable: int
    eval_batch_size: int
    details: dict[str, Any] = field(default_factory=dict)
    """Free-form, method-specific facts (selected epochs, CMAttn weights ...)."""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # JSON gives lists; the record keeps the sources as a tuple so equal records compare equal.
        if isinstance(self.sources, list):
            object.__setattr__(self, "sources", tuple(self.sources))
        problems = [f"{name}: {problem}" for name, check in _CHECKS.items()
                    if (problem := check(getattr(self, name))) is not None]
        problems += _consistency_problems(self)
        if problems:
            raise RecordError("invalid record: " + "; ".join(problems))

    @property
    def synthetic(self) -> bool:
        """Whether anything synthetic (the data or the weights' training images) is behind this number."""
        return self.synthetic_data or self.synthetic_weights

    @property
    def row_label(self) -> str:
        """The leaderboard row of this record: the method, its base and, when it is not the default, its routing."""
        label = self.method if self.base is None else f"{self.method}+{self.base}"
        return label if self.routing in (None, "batch") else f"{label} ({self.routing} routing)"

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able data (the form stored in ``results.jsonl``)."""
        data = dataclasses.asdict(self)
        data["sources"] = list(self.sources)
        return data

    def to_json(self) -> str:
        """Canonical one-line JSON of the record (sorted keys), as written to ``results.jsonl``."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "record") -> Record:
        """Validate ``data`` against the schema and build the record; errors name ``origin`` (e.g. the file)."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{origin}: expected a JSON object, found {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"{origin}: record schema version {version!r}, this version of imagenet-dg reads version "
                f"{SCHEMA_VERSION}; rerun the evaluation with this version to regenerate the record"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in data and n != "details")
        unknown = sorted(set(data) - names)
        if missing or unknown:
            said = [f"missing {', '.join(missing)}"] if missing else []
            said += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise RecordError(f"{origin}: record fields do not match schema version {SCHEMA_VERSION} ({'; '.join(said)})")
        try:
            return cls(**dict(data))
        except RecordError as error:
            raise RecordError(f"{origin}: {error}") from None


def upgrade_schema_2(data: Mapping[str, Any], *, origin: str = "record") -> Record:
    """A version-2 record as version 3: ``ece`` and ``nll`` null (not measured), ``model_selection`` as its method
    did it (:data:`SCHEMA_2_MODEL_SELECTION`), every other field as it was."""
    if not isinstance(data, Mapping) or data.get("schema_version") != 2:
        found = data.get("schema_version") if isinstance(data, Mapping) else type(data).__name__
        raise RecordError(f"{origin}: expected a record of schema version 2 to upgrade, found {found!r}")
    method = data.get("method")
    if method not in SCHEMA_2_MODEL_SELECTION:
        raise RecordError(f"{origin}: method {method!r} has no known model selection in schema version 2; expected "
                          f"one of {', '.join(SCHEMA_2_MODEL_SELECTION)}")
    upgraded = {**data, "ece": None, "nll": None, "model_selection": SCHEMA_2_MODEL_SELECTION[method],
                "schema_version": SCHEMA_VERSION}
    return Record.from_dict(upgraded, origin=origin)


# --- validation -----------------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"expected a non-empty string, found {value!r}"


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _one_of(choices: tuple[Any, ...]) -> Check:
    return lambda value: None if value in choices else f"expected one of {choices}, found {value!r}"


def _count(minimum: int) -> Check:
    return lambda value: None if _is_int(value) and value >= minimum else (
        f"expected an integer >= {minimum}, found {value!r}")


def _optional_count(minimum: int) -> Check:
    return lambda value: None if value is None else _count(minimum)(value)


def _optional_int(value: Any) -> str | None:
    return None if value is None or _is_int(value) else f"expected an integer or null, found {value!r}"


def _percent(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 100
    return None if ok else f"expected a percentage in [0, 100], found {value!r}"


def _optional_percent(value: Any) -> str | None:
    return None if value is None else _percent(value)


def _optional_nats(value: Any) -> str | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return None if ok else f"expected a number of nats >= 0 or null, found {value!r}"


def _seconds(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return None if ok else f"expected a number of seconds >= 0, found {value!r}"


def _mapping_of(check: Check, *, non_empty: bool = False) -> Check:
    def checked(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"expected an object, found {type(value).__name__}"
        if non_empty and not value:
            return "expected at least one entry"
        for key, item in value.items():
            if not isinstance(key, str):
                return f"expected string keys, found {key!r}"
            if (problem := check(item)) is not None:
                return f"{key!r}: {problem}"
        return None

    return checked


def _sources(value: Any) -> str | None:
    if not isinstance(value, tuple) or not value or any(_text(v) for v in value):
        return f"expected a non-empty list of domain names, found {value!r}"
    return None


def _anything(_: Any) -> None:
    return None


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, found {value!r}"


_CHECKS: dict[str, Check] = {
    "suite": _text, "protocol": _one_of(PROTOCOLS), "protocol_version": _text, "task": _text, "target": _text,
    "sources": _sources, "num_classes": _count(2), "method": _text, "base": _optional_text,
    "routing": _one_of(ROUTINGS), "model": _text, "pretrained": _text, "precision": _one_of(PRECISIONS),
    "device_type": _one_of(DEVICE_TYPES), "shots": _optional_count(1), "seed": _count(0),
    "split_seed": _optional_int, "accuracy": _percent, "domain_accuracy": _mapping_of(_percent),
    "class_accuracy": _mapping_of(_percent), "worst_class_accuracy": _optional_percent, "ece": _optional_percent,
    "nll": _optional_nats, "validation_accuracy": _mapping_of(_percent), "model_selection": _optional_text,
    "test_images": _count(1), "preset": _text,
    "synthetic_data": _flag, "synthetic_weights": _flag,
    "config": _mapping_of(_anything), "manifest_content_hash": _text, "suite_source": _mapping_of(_anything),
    "package_version": _text, "git_commit": _optional_text, "versions": _mapping_of(_text),
    "device_name": _text, "phase_seconds": _mapping_of(_seconds), "n_trainable": _count(0),
    "eval_batch_size": _count(1), "details": _mapping_of(_anything), "schema_version": _one_of((SCHEMA_VERSION,)),
}


def _consistency_problems(record: Record) -> list[str]:
    """Rules that tie fields together; run only once every field has the right type."""
    problems = []
    if record.protocol == "fewshot" and record.shots is None:
        problems.append("shots: the fewshot protocol needs a number of shots")
    if record.protocol == "full" and record.shots is not None:
        problems.append(f"shots: the full protocol trains on all images, found shots={record.shots}")
    if isinstance(record.sources, tuple) and record.target in record.sources:
        problems.append(f"sources: the target {record.target!r} is also a source")
    if record.synthetic_weights is True and record.pretrained == "none":
        problems.append("synthetic_weights: random weights (pretrained none) are not synthetic-world weights")
    if isinstance(record.suite_source, dict) and "kind" not in record.suite_source:
        problems.append("suite_source: expected a 'kind' entry (folder or hub)")
    if isinstance(record.class_accuracy, dict) and record.class_accuracy and record.worst_class_accuracy is not None \
            and all(_percent(v) is None for v in record.class_accuracy.values()) \
            and not math.isclose(record.worst_class_accuracy, min(record.class_accuracy.values())):
        problems.append(f"worst_class_accuracy: {record.worst_class_accuracy} is not the lowest class accuracy "
                        f"{min(record.class_accuracy.values())}")
    if isinstance(record.versions, dict):
        absent = [k for k in ("torch", "open_clip", "python") if k not in record.versions]
        if absent:
            problems.append(f"versions: missing {', '.join(absent)}")
    return problems


# --- files ----------------------------------------------------------------------------------------------------


def write_record(run_folder: str | os.PathLike[str], record: Record) -> Path:
    """Write ``record`` into ``run_folder``: ``results.jsonl`` atomically, then the ``done`` marker.

    Returns the path of the results file. A folder that already holds a finished run is never overwritten.
    """
    folder = Path(run_folder)
    if not isinstance(record, Record):
        raise RecordError(f"{folder}: expected a Record to write, found {type(record).__name__}")
    if (folder / DONE_FILE).exists():
        raise RecordError(f"{folder}: already holds a finished run ({DONE_FILE} exists); it is not overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / RESULTS_FILE
    write_text_atomic(results, record.to_json() + "\n")
    write_text_atomic(folder / DONE_FILE, "")
    return results


def read_record(run_folder: str | os.PathLike[str]) -> Record:
    """The validated record of a finished run folder (one with a ``done`` marker)."""
    folder = Path(run_folder)
    results = folder / RESULTS_FILE
    if not (folder / DONE_FILE).is_file():
        raise RecordError(f"{folder}: not a finished run (no {DONE_FILE} marker); run the evaluation to finish it")
    if not results.is_file():
        raise RecordError(f"{folder}: marked {DONE_FILE} but {RESULTS_FILE} is missing; the run folder is damaged, "
                          "remove it and rerun the evaluation")
    lines = [line for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != 1:
        raise RecordError(f"{results}: expected exactly one JSON record, found {len(lines)} lines")
    try:
        data = json.loads(lines[0])
    except json.JSONDecodeError as error:
        raise RecordError(f"{results}: not a JSON record ({error})") from None
    return Record.from_dict(data, origin=str(results))


@dataclass(frozen=True)
class FinishedRun:
    """A finished run folder and its record."""

    folder: Path
    record: Record


@dataclass(frozen=True)
class RecordSet:
    """Everything found under some runs folders: the finished runs and the unfinished run folders."""

    runs: tuple[FinishedRun, ...]
    unfinished: tuple[Path, ...]

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(run.record for run in self.runs)

    def __iter__(self) -> Iterator[FinishedRun]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


def _is_run_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in (DONE_FILE, RESULTS_FILE, RUN_FILE))


def collect(runs_dirs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> RecordSet:
    """Every run folder under ``runs_dirs`` (searched recursively, in sorted order).

    A folder is a run folder when it holds ``done``, ``results.jsonl`` or ``run.json``. Finished ones are read
    and validated (the first invalid record stops the collection with an error naming its file); the others are
    listed as unfinished. A runs folder that does not exist is an error.
    """
    dirs = [runs_dirs] if isinstance(runs_dirs, (str, os.PathLike)) else list(runs_dirs)
    runs: list[FinishedRun] = []
    unfinished: list[Path] = []
    seen: set[Path] = set()
    for runs_dir in map(Path, dirs):
        if not runs_dir.is_dir():
            raise RecordError(f"{runs_dir}: no such runs folder; expected the --runs folder of 'imagenet-dg evaluate'")
        candidates = [runs_dir, *sorted(p for p in runs_dir.rglob("*") if p.is_dir())]
        for folder in candidates:
            resolved = folder.resolve()
            if resolved in seen or not _is_run_folder(folder):
                continue
            seen.add(resolved)
            if (folder / DONE_FILE).is_file():
                runs.append(FinishedRun(folder, read_record(folder)))
            else:
                unfinished.append(folder)
    return RecordSet(tuple(runs), tuple(unfinished))
