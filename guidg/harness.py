"""The evaluation harness: a sweep (suite x targets x methods x shots x seeds) turned into runs, checked, run.

Data flows one way: a :class:`Sweep` (what was asked) -> :func:`validate` (every name, the preset and its
overrides, the device: nothing is scanned or trained before all of them are right) -> :func:`prepare`
(the built manifests, building them when missing (from a Hub mirror first written out as files when one is
given), and the folders the images are in, a sample of them
checked) -> :func:`plan` (one :class:`PlannedRun` per run, with its folder and whether it is done) -> a
launcher (:mod:`guidg.launchers`: ``local`` runs them in sequence, ``slurm`` submits them with submitit) ->
records -> :func:`summary_table`. The command line is a thin layer over these functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imagenet_dg.build import BuildOptions, build
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.hub_suite_source import HubColumns
from imagenet_dg.labels import SYNTHETIC_CAPTION, suite_label, weights_label
from imagenet_dg.loading import check_roots, load_task
from imagenet_dg.manifests import MANIFEST_FILE, read_manifest
from imagenet_dg.protocols import (
    DEFAULT_FEWSHOT_SEEDS,
    DEFAULT_SHOTS,
    DEFAULT_TRIAL_SEEDS,
    PROTOCOLS,
    config_name,
    protocol_of_manifest,
)
from imagenet_dg.sources import (
    DEFAULT_MINI_DIR,
    DataRequest,
    check_request,
    find_images,
    is_synthetic,
    locate_images,
    scan_images,
)
from imagenet_dg.suites import IMAGENET_DG, Suite, get_suite, suite_of_manifest
from guidg.backbone import BackboneSpec, tower_depths
from guidg.bases import BASES
from guidg.distributed import barrier, init_from_environment, rank_device
from guidg.methods import METHODS, all_sections, families_with_base, get_method, resolve_method
from guidg.methods.interface import RunShape
from guidg.presets import PRESETS, method_config
from guidg.run import RunOutcome, RunSpec, default_workers, is_done, run_folder
from guidg.settings import MethodConfig, SettingError, parse_setting, section_settings, suggest

logger = logging.getLogger(__name__)

ALL_METHODS = "all"
BUILT_DIR = "manifests"
"""Sub-folder of the runs folder where the harness builds manifests that were not built beforehand."""


class SweepError(ImageNetDGError):
    """A sweep asks for something that does not exist or does not fit together."""


# --- what was asked -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """Everything an ``evaluate`` invocation asks for. Empty tuples mean "the default" (see each field)."""

    suite: str = IMAGENET_DG
    protocol: str = "fewshot"
    targets: tuple[str, ...] = ()
    """Targets or task names; empty: every leave-one-domain-out task."""
    methods: tuple[str, ...] = ()
    """Registered method names, ``guidg`` (with :attr:`base`) or ``all``."""
    base: str | None = None
    model: str = "ViT-B-16"
    pretrained: str = "openai"
    """open_clip tag, checkpoint file, or ``none`` for random weights."""
    shots: tuple[int, ...] = ()
    """Shots per class (fewshot); empty: 16."""
    seeds: tuple[int, ...] = ()
    """Few-shot seeds (fewshot; also the training seed) or trial seeds (full); empty: 1 2 3, or 0 1 2."""
    preset: str | None = None
    """None: ``paper`` for the standard suites, ``paper-imagenet-dg`` (``-i`` for task i) for ImageNet-DG,
    ``mini`` for synthetic data."""
    overrides: tuple[str, ...] = ()
    """``section.key=value`` changes to the preset, e.g. ``finetune.lr=1e-5``."""
    device: str | None = None
    workers: int | None = None
    runs: Path = Path("runs")
    benchmark: Path | None = None
    """Built manifests; None: the harness builds them under ``<runs>/manifests/``."""
    root: Path | None = None
    """A folder searched for the suite (or the ImageNet releases)."""
    release_paths: Mapping[str, Path] = field(default_factory=dict)
    """ImageNet-DG only: domain id -> release folder given one by one."""
    mini_dir: Path = Path(DEFAULT_MINI_DIR)
    """Where miniature data is written when a miniature suite (or ImageNet-DG with ``mini``) is asked for."""
    mini: bool = False
    """Run ImageNet-DG on the miniature synthetic releases (chosen explicitly, never a fallback)."""
    export_model: bool = False
    hub: str | None = None
    """A standard suite's parquet mirror on the Hugging Face Hub (or a local copy of one), materialised under
    :attr:`root` in the suite's folder layout before the manifests are built."""
    revision: str | None = None
    """With :attr:`hub`: the commit, branch or tag (a branch is pinned to its commit and recorded)."""
    hub_columns: tuple[str, str, str] = ("image", "domain", "label")


@dataclass(frozen=True)
class Checked:
    """A validated sweep: names resolved, configuration built, device known."""

    sweep: Sweep
    suite: Suite
    methods: tuple[str, ...]
    """Registered method names."""
    backbone: BackboneSpec
    shots: tuple[int, ...] | None
    """None for the full protocol."""
    seeds: tuple[int, ...]
    device: str
    workers: int
    preset: str | None
    """The preset named on the command line (None: chosen per task from the suite)."""
    changes: Mapping[str, Mapping[str, Any]]
    """Overrides per configuration section, each value checked against its declaration, and the configuration of
    every run checked with them (:func:`check_overrides`)."""


@dataclass(frozen=True)
class Prepared:
    """Built manifests and where their images are."""

    benchmark: Path
    manifest: Mapping[str, Any]
    roots: Mapping[str, Path]
    """Domain id -> the folder that domain's manifest paths are relative to."""
    suite_source: Mapping[str, Any]
    built: bool
    """Whether the harness built the manifests now."""
    synthetic: bool = False
    """Whether the images are miniature synthetic ones (the manifest says so, or the harness made them)."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep."""

    spec: RunSpec
    folder: Path
    done: bool
    task: str
    target: str
    shots: int | None
    split_seed: int | None


@dataclass(frozen=True)
class Plan:
    """Every run of a sweep, in order, and what running them needs."""

    checked: Checked
    prepared: Prepared
    runs: tuple[PlannedRun, ...]


# --- validation -----------------------------------------------------------------------------------------------


def resolve_methods(names: Sequence[str], base: str | None) -> tuple[str, ...]:
    """Registered method names meant by ``names`` (``all``: every registered one) and ``base``.

    ``base`` chooses the base of the methods that run on one (``guidg``); a base given when no chosen method
    runs on one is an error, as is a method family named without its base. Order is kept, duplicates dropped.
    """
    if not names:
        raise SweepError(f"no method given; expected --method with one of {', '.join([*METHODS, 'guidg', 'all'])}")
    if base is not None and base not in BASES:
        raise SweepError(f"--base {base}: unknown base method; expected one of {', '.join(BASES)}")
    families = families_with_base()
    chosen: list[str] = []
    for name in names:
        if name == ALL_METHODS:
            chosen += [m for m, spec in METHODS.items() if base is None or spec.base in (None, base)]
        elif name in families or base is None:
            chosen.append(resolve_method(name, base).name)
        else:
            spec = get_method(name)
            if spec.base is not None and spec.base != base:
                raise SweepError(f"--method {name} runs on base {spec.base}, but --base {base} was given")
            chosen.append(name)
    if base is not None and not any(METHODS[m].base is not None for m in chosen):
        raise SweepError(
            f"--base {base} was given, but none of the methods {', '.join(names)} runs on a base; --base applies "
            f"only to {', '.join(families)}: remove --base or add --method {families[0]}"
        )
    return tuple(dict.fromkeys(chosen))


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``section.key=value`` texts as ``{section: {key: value}}``, each value of its setting's type and within
    what its declaration allows (:func:`guidg.settings.parse_setting`).

    Values are read as YAML scalars (``1e-5``, ``true``, ``null``), tuples as comma-separated lists.
    """
    changes: dict[str, dict[str, Any]] = {}
    sections = {kind.NAME: kind for kind in all_sections()}
    keys = {name: tuple(section_settings(kind)) for name, kind in sections.items()}
    every_key = [f"{name}.{key}" for name, names in keys.items() for key in names]
    for text in overrides:
        name, equals, value = text.partition("=")
        section, dot, key = name.strip().partition(".")
        if not equals or not dot or not key:
            raise SweepError(f"--set {text}: expected section.key=value, e.g. finetune.lr=1e-5")
        if section not in sections:
            raise SweepError(f"--set {text}: unknown section {section!r}; expected one of {', '.join(sections)}"
                             f"{suggest(name.strip(), every_key)} (imagenet-dg settings lists them all)")
        if key not in keys[section]:
            raise SweepError(f"--set {text}: {section} has no setting {key!r}; it has "
                             f"{', '.join(keys[section])}{suggest(name.strip(), every_key)}")
        try:
            changes.setdefault(section, {})[key] = parse_setting(sections[section], key, value.strip())
        except SettingError as error:
            raise SweepError(f"--set {error}") from None
    return changes


def sweep_presets(sweep: Sweep, suite: Suite) -> tuple[str, ...]:
    """Every preset the runs of ``sweep`` can use: the one named, or the default of each task (:func:`default_preset`)
    on real data, on synthetic data, or, when that is not known before the manifests are built, on either."""
    if sweep.preset is not None:
        return (sweep.preset,)
    synthetic: tuple[bool, ...] = (False, True)
    if sweep.mini or suite.synthetic:
        synthetic = (True,)
    elif sweep.benchmark is not None and (Path(sweep.benchmark) / MANIFEST_FILE).is_file():
        synthetic = (bool(read_manifest(sweep.benchmark).get("synthetic", False)),)
    tasks = [suite.task(t).name for t in sweep.targets] or [t.name for t in suite.tasks()]
    return tuple(dict.fromkeys(default_preset(suite, task, flag) for flag in synthetic for task in tasks))


def check_overrides(
    changes: Mapping[str, Mapping[str, Any]], methods: Sequence[str], presets: Sequence[str], shape: RunShape
) -> None:
    """Refuse an override no method of the sweep reads, one that a run's configuration refuses (a rule between
    several values), or a configuration a method cannot run on this model or protocol (:attr:`Method.check`),
    under any preset the sweep uses; the error names the setting, the value, the preset and what is allowed."""
    for section, values in changes.items():
        readers = [m for m in methods if section in {k.NAME for k in METHODS[m].all_sections}]
        if not readers:
            every = [m for m in METHODS if section in {k.NAME for k in METHODS[m].all_sections}]
            shown = ", ".join(f"{section}.{key}={value}" for key, value in values.items())
            raise SweepError(f"--set {shown}: no method of this sweep ({', '.join(methods)}) reads the {section} "
                             f"settings; they are read by {', '.join(every)}")
    for preset in presets:
        chosen = "" if len(presets) == 1 else (
            f"; preset {preset} is one this sweep may use: give --preset to choose one")
        for method in methods:
            try:
                config = method_config(method, preset, changes)
            except SettingError as error:
                shown = " ".join(f"--set {s}.{k}={v}" for s, values in changes.items() for k, v in values.items())
                raise SweepError(f"{shown}: {error} (preset {preset}, method {method}{chosen})") from None
            problems = METHODS[method].problems(config, shape)
            if problems:
                raise SweepError(f"{'; '.join(problems)} (preset {preset}, method {method}{chosen})")


def resolve_device(device: str | None) -> str:
    """The torch device to run on: ``cuda`` when a GPU is visible and none was named, else ``cpu``.

    ``gpu`` means ``cuda``. A CUDA device that is not there is an error saying so, not a fallback to the CPU.
    """
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = "cuda" + device[3:] if device.startswith("gpu") else device
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise SweepError(f"--device {device}: not a device; expected cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SweepError(f"--device {device}: no CUDA GPU is visible to PyTorch on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise SweepError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
            )
    elif parsed.type != "cpu":
        raise SweepError(f"--device {device}: expected cpu, cuda or cuda:N")
    return text


def validate(sweep: Sweep) -> Checked:
    """Check every name and value of ``sweep`` before anything is scanned, built or trained."""
    suite = get_suite(sweep.suite)
    if sweep.protocol not in PROTOCOLS:
        raise SweepError(f"--protocol {sweep.protocol}: expected one of {', '.join(PROTOCOLS)}")
    suite.split_protocol(sweep.protocol)  # a protocol the suite does not offer is refused
    for target in sweep.targets:
        suite.task(target)
    methods = resolve_methods(sweep.methods, sweep.base)
    if sweep.preset is not None and sweep.preset not in PRESETS:
        raise SweepError(f"--preset {sweep.preset}: unknown preset; expected one of {', '.join(PRESETS)}")
    changes = parse_overrides(sweep.overrides)
    check_overrides(changes, methods, sweep_presets(sweep, suite),
                    RunShape(sweep.protocol, tower_depths(sweep.model)))
    if sweep.protocol == "full":
        if sweep.shots:
            raise SweepError("--shots: the full protocol trains on every image; leave --shots out")
        shots = None
    else:
        shots = tuple(dict.fromkeys(sweep.shots or DEFAULT_SHOTS))
        if any(k < 1 for k in shots):
            raise SweepError(f"--shots {' '.join(map(str, shots))}: expected positive numbers of images per class")
    seeds = tuple(dict.fromkeys(sweep.seeds or (DEFAULT_FEWSHOT_SEEDS if sweep.protocol == "fewshot"
                                                 else DEFAULT_TRIAL_SEEDS)))
    if any(s < 0 for s in seeds):
        raise SweepError(f"--seeds: expected non-negative integers, got {' '.join(map(str, seeds))}")
    device = resolve_device(sweep.device)
    if changes.get("pipeline", {}).get("decoder") == "nvjpeg" and not device.startswith("cuda"):
        raise SweepError(
            f"--set pipeline.decoder=nvjpeg: nvjpeg decodes on a CUDA GPU and this sweep runs on {device}; "
            "use pipeline.decoder=pil or --device cuda"
        )
    if sweep.workers is not None and sweep.workers < 0:
        raise SweepError(f"--workers {sweep.workers}: expected 0 or more")
    workers = default_workers(device) if sweep.workers is None else sweep.workers
    pretrained = None if sweep.pretrained.lower() == "none" else sweep.pretrained
    backbone = BackboneSpec(sweep.model, pretrained)
    backbone.describe()  # an unknown tag or a missing checkpoint file is refused before anything runs
    check_request(data_request(sweep, suite))  # writes nothing
    if sweep.hub is not None and sweep.benchmark is not None:
        raise SweepError("--hub builds the manifests from the Hub copy; leave --benchmark out")
    return Checked(sweep, suite, methods, backbone, shots, seeds, device, workers, sweep.preset, changes)


def default_preset(suite: Suite, task: str, synthetic: bool) -> str:
    """The preset that fits a suite: ``paper`` for the standard suites, ``paper-imagenet-dg`` for ImageNet-DG
    (``paper-imagenet-dg-i`` on its task i, whose reference script uses prompt batch 8), ``mini`` for
    synthetic miniature data, which the paper's settings would train for hours."""
    if synthetic or suite.synthetic:
        return "mini"
    if suite.name == IMAGENET_DG:
        return "paper-imagenet-dg-i" if task == "i" else "paper-imagenet-dg"
    return "paper"


# --- manifests and images -------------------------------------------------------------------------------------


def data_request(sweep: Sweep, suite: Suite) -> DataRequest:
    """Where the sweep says ``suite``'s images are."""
    return DataRequest(suite, root=sweep.root, folders=dict(sweep.release_paths), mini=sweep.mini,
                       mini_dir=sweep.mini_dir, hub=sweep.hub, revision=sweep.revision,
                       columns=HubColumns(*sweep.hub_columns))


def built_tasks(suite: Suite, asked: Sequence[str]) -> tuple[str, ...]:
    """The tasks the harness builds for a sweep over the tasks ``asked`` (none: every task): those, and every
    other task whose domains they need anyway. A leave-one-domain-out suite builds all its tasks (one manifest
    serves every target); ImageNet-DG builds only the asked tasks, whose releases may be all there is."""
    chosen = [suite.task(t) for t in asked] or list(suite.tasks())
    domains = {d for t in chosen for d in (t.target, *t.sources)}
    return tuple(t.name for t in suite.tasks() if t in chosen or {t.target, *t.sources} <= domains)


def built_folder_name(
    checked: Checked, tasks: Sequence[str], *, mini: bool, hub: Mapping[str, Any] | None = None
) -> str:
    """Name of the folder the harness builds a sweep's manifests into: the suite, protocol, shots and seeds; a
    build of some tasks only is named for them (so a later sweep over other targets builds its own instead of
    finding a folder that lacks its configurations), a Hub copy for its repository and pinned revision, the
    miniature ImageNet releases with ``-mini``."""
    parts = [checked.suite.name, checked.sweep.protocol]
    if checked.shots is not None:
        parts.append("-".join(map(str, sorted(checked.shots))) + "shot")
    parts.append("seeds" + "-".join(map(str, sorted(checked.seeds))))
    name = "-".join(parts)
    if set(tasks) != {t.name for t in checked.suite.tasks()}:
        name += "-tasks-" + "-".join(sorted(tasks))
    if hub is not None:
        pinned = json.dumps({k: hub.get(k) for k in ("repo_id", "revision", "columns")}, sort_keys=True)
        name += "-hub-" + hashlib.sha256(pinned.encode()).hexdigest()[:10]
    return name + ("-mini" if mini else "")


class SyntheticMismatchError(SweepError):
    """Built manifests record real data, but the images they are run on are synthetic."""


def prepare(checked: Checked, on_build: Callable[[str], None] = logger.info) -> Prepared:
    """The manifests the sweep runs on (built now into a folder named after the sweep when missing) and the
    folder each domain's images are in; ``on_build`` is told where a build goes before it starts.

    Every suite takes this one path: its images found (written out from a Hub mirror, or the miniature written,
    where asked), its manifests built (:func:`imagenet_dg.build.build`) unless given or built before, its
    domains located for the manifests' paths. Whether the data are synthetic is decided from the data
    (:func:`imagenet_dg.sources.is_synthetic`); manifests that record real data for synthetic images are refused.
    """
    sweep, suite = checked.sweep, checked.suite
    if sweep.hub is not None:
        on_build(f"Reading {sweep.hub} into {sweep.root} in the {suite.display_name} folder layout")
    images = find_images(data_request(sweep, suite))
    tasks = built_tasks(suite, sweep.targets)
    name = built_folder_name(checked, tasks, mini=sweep.mini, hub=images.hub.source if images.hub else None)
    benchmark = (sweep.benchmark or Path(sweep.runs) / BUILT_DIR / name).absolute()
    built = False
    if not (benchmark / MANIFEST_FILE).is_file():
        options = BuildOptions(protocol=sweep.protocol, tasks=tasks, shots=checked.shots or (), seeds=checked.seeds)
        on_build(f"Building the {suite.name} manifests ({sweep.protocol}) into {benchmark}")
        build(scan_images(images, options.domains(suite)), benchmark, options)
        built = True
    manifest = read_manifest(benchmark)
    held, protocol = suite_of_manifest(manifest).name, protocol_of_manifest(manifest)
    if held != suite.name or protocol != sweep.protocol:
        raise SweepError(
            f"{benchmark}: holds suite {held} under protocol {protocol}, not {suite.name} under {sweep.protocol}; "
            "give the right --benchmark, or leave it out to let the harness build one"
        )
    domains = sorted({d for c in manifest["configs"].values() for d in (c["target"], *c["sources"])})
    roots = dict(locate_images(images, domains).domain_folders)
    synthetic = is_synthetic(roots.values(), manifest)
    if synthetic and not is_synthetic(manifest=manifest):
        raise SyntheticMismatchError(
            f"{benchmark / MANIFEST_FILE} records real data, but the images under {images.root or 'the folders given'} "
            "are synthetic (written by a miniature generator); results on them would pass for real ones. Rebuild "
            "the manifests from these images (leave --benchmark out, or 'imagenet-dg build' them), or give the "
            "real images"
        )
    return Prepared(benchmark, manifest, roots, dict(manifest.get("source") or {"kind": "folder"}), built, synthetic)


def check_image_sample(prepared: Prepared, configs: Sequence[str]) -> None:
    """Read every configuration of the sweep, checking its shards against their hashes and that each domain's
    folder holds a sample of the images the manifests name there
    (:func:`imagenet_dg.loading.check_roots`); the error names the domain, its folder and the files missing or
    not decodable."""
    for config in configs:
        check_roots(load_task(prepared.benchmark, config, prepared.roots), prepared.roots)


# --- the runs -------------------------------------------------------------------------------------------------


def select_configs(checked: Checked, manifest: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The manifest configurations the sweep asks for, in task, shots, seed order; every asked-for
    combination must be there."""
    suite, sweep = checked.suite, checked.sweep
    tasks = [suite.task(t) for t in sweep.targets] or list(suite.tasks())
    configs = manifest["configs"]
    chosen, missing = [], []
    for task in tasks:
        for shots in checked.shots or (None,):
            for seed in checked.seeds:
                name = config_name(task.name, sweep.protocol, shots=shots, seed=seed)
                if name in configs:
                    chosen.append((name, configs[name]))
                else:
                    missing.append(name)
    if missing:
        raise SweepError(
            f"the manifests in {sweep.benchmark or 'the built folder'} lack the configuration(s) "
            f"{', '.join(missing)}; they hold {', '.join(configs) or 'none'}: rebuild them with these shots and "
            "seeds, or leave --benchmark out to let the harness build what is asked"
        )
    return chosen


def hparams_for(checked: Checked, task: str, synthetic: bool, method: str) -> tuple[str, MethodConfig]:
    """The preset name and the resolved configuration of a run of ``method`` on ``task``: the method's sections
    and the run's, with the overrides to them."""
    name = checked.preset or default_preset(checked.suite, task, synthetic)
    return name, method_config(method, name, checked.changes)


def plan(checked: Checked, prepared: Prepared) -> Plan:
    """Every run of the sweep: configurations x methods, each with its folder and whether it is done."""
    manifest = prepared.manifest
    synthetic = prepared.synthetic
    device_type = torch.device(checked.device).type
    runs = []
    for name, entry in select_configs(checked, manifest):
        seed = int(entry["seed"])
        for method in checked.methods:
            preset, hparams = hparams_for(checked, str(entry.get("task", entry["target"])), synthetic, method)
            spec = RunSpec(prepared.benchmark, name, method, checked.backbone, preset, hparams, seed,
                           prepared.suite_source)
            folder = run_folder(spec, checked.sweep.runs, str(manifest["content_hash"]), device_type)
            runs.append(PlannedRun(spec, folder, is_done(folder), str(entry.get("task", entry["target"])),
                                   str(entry["target"]), entry.get("shots"), entry.get("seed")))
    return Plan(checked, prepared, tuple(runs))


def make_plan(sweep: Sweep, on_build: Callable[[str], None] = logger.info) -> Plan:
    """Validate ``sweep``, prepare its manifests and images (checking a sample), and plan its runs."""
    checked = validate(sweep)
    # Under torchrun, rank 0 builds whatever is missing while the others wait, then they read what it built.
    replica = init_from_environment(torch.device(rank_device(checked.device)).type)
    if not replica.is_main:
        barrier(replica)
    prepared = prepare(checked, on_build)
    if replica.is_main:
        barrier(replica)
    configs = [name for name, _ in select_configs(checked, prepared.manifest)]
    check_image_sample(prepared, configs)
    return plan(checked, prepared)


def describe_plan(the_plan: Plan) -> str:
    """The dry-run listing: one line per run (done or to run, what, where it writes), then a count."""
    lines = []
    for run in the_plan.runs:
        state = "done" if run.done else "to run"
        lines.append(f"{state:<7} {run.spec.method:<15} {run.spec.config:<28} seed {run.spec.seed:<3} "
                     f"preset {run.spec.preset:<20} {run.folder}")
    done = sum(r.done for r in the_plan.runs)
    lines.append(f"{len(the_plan.runs)} runs, {done} done, {len(the_plan.runs) - done} to run "
                 f"({the_plan.checked.device}; manifests {the_plan.prepared.benchmark})")
    return "\n".join(lines)


# --- the table ------------------------------------------------------------------------------------------------


def summary_table(the_plan: Plan, outcomes: Sequence[RunOutcome]) -> str:
    """What was run: one row per run with its state, what it is, its accuracy and its folder."""
    header = ["state", "method", "task", "target", "shots", "seed", "accuracy", "validation", "run"]
    rows = []
    for run, outcome in zip(the_plan.runs, outcomes):
        record = outcome.record
        accuracy = f"{record.accuracy:.2f}" if record is not None else "-"
        validation = "-"
        if record is not None and record.validation_accuracy:
            values = list(record.validation_accuracy.values())
            validation = f"{sum(values) / len(values):.2f}"
        rows.append([outcome.status, run.spec.method, run.task, run.target,
                     "-" if run.shots is None else str(run.shots), str(run.spec.seed), accuracy, validation,
                     outcome.folder.name])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    # the notes come first, so that the table's rows stay the last lines of the output
    return "\n".join(summary_notes([o.record for o in outcomes if o.record is not None]) + lines)


def summary_notes(records: Sequence[Any]) -> list[str]:
    """What a reader needs to judge the table's accuracies: each target's classes and chance level, the weights,
    and, for synthetic data, that it is not the real benchmark."""
    notes = [f"{suite_label(suite, synthetic)}, target {target}: {n} classes, chance {100.0 / n:.1f}%"
             for suite, synthetic, target, n in sorted({(r.suite, r.synthetic_data, r.target, r.num_classes)
                                                       for r in records})]
    notes += [f"{model}: {weights_label(pretrained, synthetic)}"
              for model, pretrained, synthetic in sorted({(r.model, r.pretrained, r.synthetic_weights) for r in records})]
    if any(r.synthetic_data for r in records):
        notes.append(SYNTHETIC_CAPTION)
    return [*notes, ""] if notes else []
