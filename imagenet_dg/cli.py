"""The ``imagenet-dg`` command line: a thin layer over the library functions."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from guidg.bases import BASES
from imagenet_dg.errors import ImageNetDGError

logger = logging.getLogger("imagenet_dg")

RELEASE_OPTIONS = {
    "imagenet": "ILSVRC-2012 train (the folder holding train/, or train/ itself)",
    "imagenet-val": "ILSVRC-2012 val, flat or in wnid folders (the folder holding val/, or val/ itself)",
    "imagenet-a": "ImageNet-A (imagenet-a/)",
    "imagenet-r": "ImageNet-R (imagenet-r/)",
    "imagenet-sketch": "ImageNet-Sketch (sketch/)",
    "imagenetv2": "ImageNetV2 MatchedFrequency (imagenetv2-matched-frequency-format-val/)",
}
DEFAULT_MINI_DIR = "mini-releases"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {text!r}") from None


def hub_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --hub, --revision and --hub-columns (a standard suite read from its Hub parquet mirror) to ``command``."""
    command = click.option("--hub-columns", default="image,domain,label", show_default=True,
                           help="With --hub: the image, domain and label columns, comma-separated.")(command)
    command = click.option("--revision", default=None,
                           help="With --hub: the commit, branch or tag to read (required).")(command)
    return click.option(
        "--hub", default=None,
        help="With --suite: read the suite from this Hub parquet dataset (or a local copy of one), writing its "
             "images under --root in the suite's folder layout.",
    )(command)


def release_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --root, --mini-dir and one option per release to ``command``."""
    for domain, help_text in reversed(RELEASE_OPTIONS.items()):
        command = click.option(
            f"--{domain}", f"release_{domain.replace('-', '_')}",
            type=click.Path(file_okay=False, path_type=Path), help=help_text,
        )(command)
    command = click.option(
        "--mini-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULT_MINI_DIR),
        show_default=True, help="Where --mini writes the miniature releases.",
    )(command)
    command = click.option(
        "--mini", is_flag=True,
        help="Use miniature synthetic releases (made in --mini-dir) instead of real ones; recorded as synthetic.",
    )(command)
    command = click.option(
        "--root", type=click.Path(file_okay=False, path_type=Path),
        help="A folder searched for the usual release folder names (and the combined ImageNet/ tree).",
    )(command)
    return command


def _release_paths(kwargs: dict[str, Any]) -> tuple[dict[str, Path], Path | None]:
    """The release folders given on the command line and the root to search, or the miniature set when --mini
    chose it (never as a fallback: :func:`imagenet_dg.mini.choose_releases`)."""
    from imagenet_dg.mini import choose_releases

    explicit = {d: kwargs.pop(f"release_{d.replace('-', '_')}") for d in RELEASE_OPTIONS}
    paths, root, mini = choose_releases(explicit, kwargs.pop("root"), mini=kwargs.pop("mini"),
                                        mini_dir=kwargs.pop("mini_dir"))
    if mini is not None:
        click.echo(f"Using the miniature synthetic releases in {mini.root}", err=True)
    return paths, root


def _scan(kwargs: dict[str, Any], domains: tuple[str, ...]):
    from imagenet_dg.releases import scan_releases

    paths, root = _release_paths(kwargs)
    return scan_releases(paths, root=root, domains=domains)


def _verbose() -> bool:
    """Whether the command line asked for ``-v``."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("verbose"))


def _errors_to_exit(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's errors (a user's mistake or damaged input) into one ``error:`` line and exit code 2;
    with ``-v`` the traceback is printed first."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ImageNetDGError as error:
            if _verbose():
                traceback.print_exc(file=sys.stderr)
            click.echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _CommandLine(click.Group):
    """The command group, with click's usage errors (an unknown option, a missing or invalid value) given as
    one ``error:`` line and exit code 2, like every other user error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS_IS_HELP as error:  # the bare command: its help, as click gives it
            click.echo(error.format_message(), err=True)
            sys.exit(error.exit_code)
        except click.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "imagenet-dg"
            click.echo(f"error: {error.format_message()} (see '{command} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode click returns the exit code of --help, --version and ctx.exit().
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_CommandLine)
@click.version_option(package_name="imagenet-dg")
@click.option("-v", "--verbose", is_flag=True, help="Log progress in detail; show the traceback of an error.")
def main(verbose: bool) -> None:
    """ImageNet-DG: build the benchmark, evaluate methods, print the leaderboard."""
    # Our own progress at INFO; other libraries (open_clip logs every model build at INFO) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in ("imagenet_dg", "guidg", "leaderboard"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


@main.command()
@release_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("imagenet-dg"), show_default=True,
              help="Output folder (a Hugging Face dataset layout).")
@click.option("--tasks", default="a,i,r", show_default=True, help="Tasks to build, comma-separated.")
@click.option("--shots", default="16", show_default=True, help="Shots per class, comma-separated (1,2,4,8,16).")
@click.option("--seeds", default=None,
              help="Few-shot seeds, comma-separated [default: 1,2,3; DomainBed trial seeds 0,1,2 with --protocol full].")
@click.option("--suite", default=None,
              help="Build a standard suite (pacs, vlcs, officehome, terraincognita, domainnet, mini-pacs, ...) found "
                   "under --root instead of ImageNet-DG.")
@click.option("--protocol", type=click.Choice(["fewshot", "full"]), default="fewshot", show_default=True,
              help="With --suite: the paper's 40/40/20 few-shot splits, or DomainBed's 80/20 splits.")
@click.option("--targets", default=None, help="With --suite: target domains, comma-separated (default: all).")
@hub_options
@click.option("--embed-images", is_flag=True, help="Embed the image bytes (check the releases' terms first).")
@click.option("--verify", is_flag=True, help="Open every selected image and report defects.")
@click.option("--on-bad-image", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="With --verify: stop with the list, or exclude unusable images and record them.")
@click.option("--workers", type=int, default=None, help="Parallel workers for --verify (default: all cores).")
@click.option("--overwrite", is_flag=True,
              help="Replace an output folder holding another or a damaged build (only a build: never other files, "
                   "the current folder or a release folder).")
@_errors_to_exit
def build(out: Path, tasks: str, shots: str, seeds: str | None, suite: str | None, protocol: str,
          targets: str | None, hub: str | None, revision: str | None, hub_columns: str, embed_images: bool,
          verify: bool, on_bad_image: str, workers: int | None, overwrite: bool, **releases: Any) -> None:
    """Build ImageNet-DG from local copies of the official releases, or a standard suite with --suite."""
    from imagenet_dg.build import BuildOptions
    from imagenet_dg.build import build as run_build

    if suite not in (None, "imagenet-dg"):
        if embed_images or verify:
            raise ImageNetDGError("--embed-images and --verify apply to ImageNet-DG builds, not with --suite")
        _build_suite(suite, out, shots, seeds, protocol, targets, hub, revision, hub_columns, overwrite, releases)
        return
    suite_only = [f"--{n}" for n, v in (("targets", targets), ("hub", hub), ("revision", revision)) if v is not None]
    if protocol != "fewshot":
        suite_only.append(f"--protocol {protocol}")
    if suite_only:
        raise ImageNetDGError(f"{', '.join(suite_only)} apply only with --suite (ImageNet-DG has the fewshot protocol "
                              "and its tasks a, i, r: choose them with --tasks)")
    options = BuildOptions(
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        shots=_int_list(shots), seeds=_int_list(seeds or "1,2,3"), embed_images=embed_images, verify=verify,
        on_bad_image=on_bad_image, workers=workers,
    )
    scans = _scan(releases, options.domains())
    from dataclasses import replace

    from imagenet_dg.suite_build import releases_are_synthetic

    options = replace(options, synthetic=releases_are_synthetic([s.root for s in scans.values()]))
    result = run_build(scans, out, options, overwrite=overwrite, on_config=lambda c: logger.info("wrote %s", c))
    if result.resumed:
        logger.info("kept %d configuration(s) of the interrupted build: %s", len(result.resumed),
                    ", ".join(result.resumed))
    if result.health is not None:
        click.echo(result.health.format(), err=True)
    state = "already up to date" if result.up_to_date else "built"
    click.echo(f"{result.out}: {state}, {len(result.manifest['configs'])} configurations, "
               f"content hash {result.manifest['content_hash']}")


def _hub_columns(text: str) -> tuple[str, str, str]:
    names = [c.strip() for c in text.split(",")]
    if len(names) != 3 or not all(names):
        raise ImageNetDGError(f"--hub-columns: expected IMAGE,DOMAIN,LABEL column names, got {text!r}")
    return names[0], names[1], names[2]


def _build_suite(suite: str, out: Path, shots: str, seeds: str | None, protocol: str, targets: str | None,
                 hub: str | None, revision: str | None, hub_columns: str, overwrite: bool,
                 releases: dict[str, Any]) -> None:
    """``build --suite``: the options parsed, the work done by :func:`imagenet_dg.suite_build.build_suite_from`."""
    from imagenet_dg.hub_suite_source import HubColumns
    from imagenet_dg.suite_build import SuiteBuildOptions, build_suite_from

    given = [f"--{d}" for d in RELEASE_OPTIONS if releases.get(f"release_{d.replace('-', '_')}") is not None]
    if given:
        raise ImageNetDGError(f"{', '.join(given)} name ImageNet releases; with --suite give the suite's folder as --root")
    names = _hub_columns(hub_columns)
    options = SuiteBuildOptions(
        protocol=protocol,
        targets=tuple(t.strip() for t in (targets or "").split(",") if t.strip()),
        shots=_int_list(shots),
        seeds=_int_list(seeds) if seeds else (),
    )
    result = build_suite_from(
        suite, out, options, root=releases.get("root"), mini_dir=releases.get("mini_dir"), hub=hub,
        revision=revision, columns=HubColumns(*names), overwrite=overwrite,
        on_config=lambda c: logger.info("wrote %s", c),
    )
    state = "already up to date" if result.up_to_date else "built"
    kind = "synthetic " if result.manifest["synthetic"] else ""
    click.echo(f"{result.out}: {state}, {kind}{result.manifest['name']} {protocol}, "
               f"{len(result.manifest['configs'])} configurations, content hash {result.manifest['content_hash']}")


@main.command()
@release_options
@_errors_to_exit
def stats(**releases: Any) -> None:
    """Print the task statistics (classes, target and source images per task) of the releases found."""
    from imagenet_dg.protocol import task_statistics

    scans = _scan(releases, tuple(RELEASE_OPTIONS))
    table = task_statistics({d: s.table for d, s in scans.items()})
    click.echo(table.to_string(index=False))


@main.command("make-mini")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULT_MINI_DIR),
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_errors_to_exit
def make_mini(out: Path, seed: int) -> None:
    """Write miniature synthetic copies of the six releases in their official layouts."""
    from imagenet_dg.mini import make_mini_releases

    mini = make_mini_releases(out, seed=seed)
    for domain, path in mini.paths.items():
        click.echo(f"{domain}\t{path}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repo-id", required=True, help="Hub dataset repository, e.g. my-org/imagenet-dg.")
@click.option("--public", is_flag=True, help="Create the repository public (default: private).")
@click.option("--revision", default=None, help="Branch to push to.")
@click.option("--token", envvar="HF_TOKEN", default=None, show_envvar=True,
              help="Hub token (default: the saved login). Never printed.")
@click.option("--allow-embedded-images", is_flag=True, help="Publish a build that embeds images.")
@click.option("--dry-run", is_flag=True, help="List what would be sent and stop.")
@_errors_to_exit
def push(folder: Path, repo_id: str, public: bool, revision: str | None, token: str | None,
         allow_embedded_images: bool, dry_run: bool) -> None:
    """Publish a built FOLDER to the Hugging Face Hub."""
    from imagenet_dg.hub import push as run_push
    from imagenet_dg.hub import upload_plan

    plan = upload_plan(folder, allow_embedded_images)
    if dry_run:
        for file in plan:
            click.echo(f"{file.size:>12,}  {file.path}")
        click.echo(f"{len(plan)} files, {sum(f.size for f in plan):,} bytes -> datasets/{repo_id} (dry run)")
        return
    url = run_push(folder, repo_id, private=not public, revision=revision, token=token,
                   allow_embedded_images=allow_embedded_images)
    click.echo(url)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_errors_to_exit
def verify(folder: Path) -> None:
    """Check a built or downloaded FOLDER against the SHA-256 of every file its manifest.json lists."""
    from imagenet_dg.manifests import check_build

    manifest = check_build(folder)
    files = sum(len(s["files"]) for c in manifest["configs"].values() for s in c["splits"].values())
    click.echo(f"{folder}: intact, {len(manifest['configs'])} configurations, {files} data files, "
               f"content hash {manifest['content_hash']}")


class VariadicOption(click.Option):
    """An option that takes every value up to the next option: ``--seeds 1 2 3`` (commas work too)."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None:
                continue
            original = option.process

            def process(value: Any, state: Any, original: Callable[..., Any] = original) -> None:
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                original(" ".join(values), state)

            option.process = process


class MethodOption(VariadicOption):
    """``--method``: its help lists the registered methods, read from the registry only when help is shown (the
    registry loads the deep-learning libraries)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from guidg.methods import METHODS, families_with_base

        families = ", ".join(f"{family} (with --base)" for family in families_with_base())
        self.help = (f"Methods: {', '.join(METHODS)}, {families}, or all. README's method table says what each "
                     "trains; 'imagenet-dg settings --method M' lists its settings.")
        return super().get_help_record(ctx)


def _words(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for value in values for w in value.replace(",", " ").split())


def _ints(values: tuple[str, ...], option: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in _words(values))
    except ValueError:
        raise click.BadParameter(f"expected integers, got {' '.join(values)!r}", param_hint=option) from None


@main.command()
@release_options
@click.option("--suite", default="imagenet-dg", show_default=True,
              help="Registered suite: imagenet-dg, pacs, vlcs, officehome, terraincognita, domainnet, mini-pacs ...")
@click.option("--protocol", type=click.Choice(["fewshot", "full"]), default="fewshot", show_default=True,
              help="The paper's few-shot protocol, or DomainBed's full-data protocol.")
@click.option("--target", "targets", multiple=True, cls=VariadicOption,
              help="Target domains or task names (default: every leave-one-domain-out task).")
@click.option("--method", "methods", multiple=True, cls=MethodOption, required=True)
@click.option("--base", type=click.Choice(list(BASES)), default=None,
              help="Base method under guidg (an error for methods without a base).")
@click.option("--model", default="ViT-B-16", show_default=True, help="open_clip architecture.")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip pretrained tag, a local checkpoint file, or 'none' for random weights.")
@click.option("--shots", multiple=True, cls=VariadicOption, help="Shots per class (fewshot) [default: 16].")
@click.option("--seeds", multiple=True, cls=VariadicOption,
              help="Few-shot seeds, also the training seeds [default: 1 2 3; trial seeds 0 1 2 under full].")
@click.option("--preset", default=None,
              help="Hyperparameter preset [default: paper; paper-imagenet-dg for ImageNet-DG; mini on synthetic data].")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one preset value, e.g. --set finetune.lr=1e-5 (repeatable). 'imagenet-dg settings' lists "
                   "every SECTION.KEY with its type, default, allowed values and presets.")
@click.option("--benchmark", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Built manifests (imagenet-dg build); default: built by this command under RUNS/manifests/.")
@hub_options
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when a GPU is visible).")
@click.option("--workers", type=int, default=None,
              help="Image-loading worker processes (default: none on CPU, every core but one with a GPU).")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Folder of run folders; finished runs are not repeated.")
@click.option("--export-model", is_flag=True,
              help="Also save each trained model as <run>/model.safetensors, loadable by open_clip.")
@click.option("--dry-run", is_flag=True, help="List the runs, which are done and where each writes, and stop.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="Run here in sequence, or submit each run as a Slurm job (an array job per sweep).")
@click.option("--partition", default=None, help="With --launcher slurm: the Slurm partition.")
@click.option("--time", "time_minutes", type=int, default=240, show_default=True,
              help="With --launcher slurm: minutes each job may run.")
@click.option("--gpus-per-job", type=int, default=1, show_default=True, help="With --launcher slurm.")
@click.option("--cpus-per-job", type=int, default=8, show_default=True, help="With --launcher slurm.")
@_errors_to_exit
def evaluate(suite: str, protocol: str, targets: tuple[str, ...], methods: tuple[str, ...], base: str | None,
             model: str, pretrained: str, shots: tuple[str, ...], seeds: tuple[str, ...], preset: str | None,
             overrides: tuple[str, ...], benchmark: Path | None, hub: str | None, revision: str | None,
             hub_columns: str, device: str | None, workers: int | None,
             runs: Path, export_model: bool, dry_run: bool, launcher: str, partition: str | None,
             time_minutes: int, gpus_per_job: int, cpus_per_job: int, **releases: Any) -> None:
    """Train methods on a suite's leave-one-domain-out tasks and score each on its target."""
    from guidg import harness, launchers
    from guidg.distributed import current_replica, launched_as_main

    if not launched_as_main():  # under torchrun only rank 0 reports progress
        for name in ("imagenet_dg", "guidg", "leaderboard"):
            logging.getLogger(name).setLevel(logging.WARNING)
    paths = {d: releases.pop(f"release_{d.replace('-', '_')}") for d in RELEASE_OPTIONS}
    sweep = harness.Sweep(
        suite=suite, protocol=protocol, targets=_words(targets), methods=_words(methods), base=base, model=model,
        pretrained=pretrained, shots=_ints(shots, "--shots"), seeds=_ints(seeds, "--seeds"), preset=preset,
        overrides=overrides, device=device, workers=workers, runs=runs, benchmark=benchmark,
        root=releases.pop("root"), release_paths={d: p for d, p in paths.items() if p is not None},
        mini_dir=releases.pop("mini_dir"), mini=releases.pop("mini"), export_model=export_model,
        hub=hub, revision=revision, hub_columns=_hub_columns(hub_columns),
    )
    plan = harness.make_plan(sweep, on_build=lambda text: click.echo(text, err=True))
    if dry_run:
        click.echo(harness.describe_plan(plan))
        return
    if launcher == "slurm":
        options = launchers.SlurmOptions(partition=partition, time_minutes=time_minutes, gpus_per_job=gpus_per_job,
                                       cpus_per_job=cpus_per_job)
        jobs = launchers.submit_slurm(plan, options)
        for job in jobs:
            click.echo(f"submitted job {job.job_id}")
        click.echo(f"{len(jobs)} jobs submitted, {len(plan.runs) - len(jobs)} runs already done")
        return
    outcomes = launchers.run_local(plan)  # each run logs its folder when it starts
    if current_replica().is_main:
        click.echo(harness.summary_table(plan, outcomes))


@main.command()
@click.option("--method", default=None, help="Only the settings a run of this registered method has.")
@click.option("--preset", default=None, help="Show this preset's values instead of the defaults.")
@_errors_to_exit
def settings(method: str | None, preset: str | None) -> None:
    """List every setting 'evaluate --set SECTION.KEY=VALUE' takes: type, default, allowed values, presets."""
    from guidg.method_tables import settings_listing

    click.echo(settings_listing(method, preset))


@main.command()
@click.option("--runs", "runs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A runs folder of 'imagenet-dg evaluate' (several may follow, or repeat --runs). Default: runs.")
@click.argument("more_runs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write leaderboard.md, .csv, .tex and .html here (default: print the Markdown).")
@click.option("--spread", type=click.Choice(["auto", "sd", "se"]), default="auto", show_default=True,
              help="Spread over seeds: standard deviation (sd, the CoOp line), standard error (se, DomainBed), or "
                   "auto: sd for the fewshot protocol, se for the full one.")
@_errors_to_exit
def leaderboard(runs: tuple[Path, ...], more_runs: tuple[Path, ...], out: Path | None, spread: str) -> None:
    """Aggregate every finished run under the runs folders into the leaderboard's tables."""
    from leaderboard.aggregation import build_leaderboard
    from leaderboard.markdown import render_markdown
    from leaderboard.publish import publish
    from leaderboard.records import collect
    from leaderboard.reported import load_reported

    folders = [*runs, *more_runs] or [Path("runs")]
    if out is None:
        board = build_leaderboard(collect(folders), load_reported(), spread)
        click.echo(render_markdown(board), nl=False)
    else:
        published = publish(folders, out, spread=spread)
        board = published.board
        for file in published.files:
            click.echo(f"wrote {file}", err=True)
    if board.unfinished:
        click.echo(f"{len(board.unfinished)} unfinished run folder(s) not counted: "
                   + ", ".join(str(p) for p in board.unfinished), err=True)
