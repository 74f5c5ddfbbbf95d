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

from guidg import harness, launchers
from guidg.bases import BASES
from guidg.distributed import current_replica, launched_as_main
from guidg.interruption import RunInterrupted, handling_stop_signals
from guidg.method_tables import settings_listing
from guidg.methods import METHODS, families_with_base
from imagenet_dg.build import BuildOptions, build_from, check_built, statistics
from imagenet_dg.disk import refused
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.health import BAD_IMAGE_POLICIES
from imagenet_dg.hub import push as run_push
from imagenet_dg.hub import upload_plan
from imagenet_dg.hub_suite_source import HubColumns
from imagenet_dg.mini import make_mini_releases
from imagenet_dg.protocols import DEFAULT_PROTOCOL, DEFAULT_SEEDS, DEFAULT_SHOTS, PROTOCOLS
from imagenet_dg.records import collect
from imagenet_dg.sources import DEFAULT_MINI_DIR, DataRequest
from imagenet_dg.suites import IMAGENET_DG, SUITES, get_suite
from leaderboard.aggregation import build_leaderboard
from leaderboard.markdown import render_markdown
from leaderboard.metrics import ACCURACY, METRICS
from leaderboard.publish import publish
from leaderboard.reported import load_reported
from leaderboard.selection import NO_SELECTION, SELECTIONS

logger = logging.getLogger("imagenet_dg")

RELEASE_OPTIONS = {
    "imagenet": "ILSVRC-2012 train (the folder holding train/, or train/ itself)",
    "imagenet-val": "ILSVRC-2012 val, flat or in wnid folders (the folder holding val/, or val/ itself)",
    "imagenet-a": "ImageNet-A (imagenet-a/)",
    "imagenet-r": "ImageNet-R (imagenet-r/)",
    "imagenet-sketch": "ImageNet-Sketch (sketch/)",
    "imagenetv2": "ImageNetV2 MatchedFrequency (imagenetv2-matched-frequency-format-val/)",
}
"""ImageNet-DG's domains, each an option taking its release folder."""


# --- lists: --seeds 1 2 3, --seeds 1,2,3 and --seeds 1 --seeds 2 alike ------------------------------------------


class ListOption(click.Option):
    """An option taking a list of words: every value up to the next option (``--seeds 1 2 3``), values separated
    by commas (``--seeds 1,2,3``), or the option repeated; :class:`ListCommand` reads the first form."""


class ListCommand(click.Command):
    """A command whose :class:`ListOption` options take every value up to the next option.

    Before click parses the arguments, ``--seeds 1 2 3`` is read as ``--seeds 1 --seeds 2 --seeds 3`` (the
    options are declared ``multiple``), so click itself checks every value and no parser internals are touched.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {name for param in self.params if isinstance(param, ListOption) for name in param.opts}
        expanded: list[str] = []
        current: str | None = None
        awaiting = False
        for position, arg in enumerate(args):
            if arg == "--":
                expanded += args[position:]
                break
            if awaiting:
                expanded.append(arg)
                awaiting = False
            elif arg in names:
                current, awaiting = arg, True
                expanded.append(arg)
            elif arg.startswith("-"):
                option = arg.split("=", 1)[0]
                current = option if "=" in arg and option in names else None
                expanded.append(arg)
            elif current is not None:
                expanded += [current, arg]
            else:
                expanded.append(arg)
        return super().parse_args(ctx, expanded)


def _words(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(word for value in values for word in value.replace(",", " ").split())


def _integers(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[int, ...]:
    words = _words(ctx, param, values)
    try:
        return tuple(int(word) for word in words)
    except ValueError:
        raise click.BadParameter(f"expected integers, got {' '.join(words)!r}", ctx=ctx, param=param) from None


def list_option(*names: str, integers: bool = False, **kwargs: Any) -> Callable[..., Any]:
    """An option taking a list (:class:`ListOption`), of integers when ``integers``."""
    kwargs.setdefault("metavar", "N..." if integers else "NAME...")
    return click.option(*names, cls=ListOption, multiple=True, callback=_integers if integers else _words, **kwargs)


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --protocol, --tasks (also --targets, --target), --shots and --seeds to ``command``."""
    fewshot, full = (" ".join(map(str, DEFAULT_SEEDS[p])) for p in PROTOCOLS)
    command = list_option("--seeds", integers=True,
                          help=f"Few-shot seeds [default: {fewshot}; DomainBed trial seeds {full} with --protocol "
                               "full].")(command)
    command = list_option("--shots", integers=True,
                          help=f"Shots per class (fewshot) [default: {' '.join(map(str, DEFAULT_SHOTS))}].")(command)
    command = list_option("--tasks", "--targets", "--target", "tasks",
                          help="Tasks or target domains (default: every task of the suite).")(command)
    return click.option("--protocol", type=click.Choice(PROTOCOLS), default=DEFAULT_PROTOCOL, show_default=True,
                        help="The paper's few-shot protocol, or DomainBed's full-data protocol.")(command)


def suite_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --suite (default: ImageNet-DG) to ``command``."""
    return click.option("--suite", default=IMAGENET_DG, show_default=True,
                        help=f"Registered suite: {', '.join(SUITES)}.")(command)


def data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add where the images are to ``command``: --root, --mini, --mini-dir, one option per ImageNet release, and
    --hub, --revision, --hub-columns (a standard suite read from its Hub parquet mirror)."""
    command = click.option("--hub-columns", default="image,domain,label", show_default=True,
                           help="With --hub: the image, domain and label columns, comma-separated.")(command)
    command = click.option("--revision", default=None,
                           help="With --hub: the commit, branch or tag to read (required).")(command)
    command = click.option(
        "--hub", default=None,
        help="With --suite: read the suite from this Hub parquet dataset (or a local copy of one), writing its "
             "images under --root in the suite's folder layout.",
    )(command)
    for domain, help_text in reversed(RELEASE_OPTIONS.items()):
        command = click.option(
            f"--{domain}", f"release_{domain.replace('-', '_')}",
            type=click.Path(file_okay=False, path_type=Path), help=help_text,
        )(command)
    command = click.option(
        "--mini-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULT_MINI_DIR),
        show_default=True, help="Where --mini (or a miniature suite without --root) writes the miniature data.",
    )(command)
    command = click.option(
        "--mini", is_flag=True,
        help="ImageNet-DG: use the miniature synthetic releases (made in --mini-dir) instead of real ones; "
             "recorded as synthetic.",
    )(command)
    return click.option(
        "--root", type=click.Path(file_okay=False, path_type=Path),
        help="A folder searched for the suite's folder (or the usual release folder names and the combined "
             "ImageNet/ tree).",
    )(command)


def _hub_columns(text: str) -> tuple[str, str, str]:
    names = [c.strip() for c in text.split(",")]
    if len(names) != 3 or not all(names):
        raise ImageNetDGError(f"--hub-columns: expected IMAGE,DOMAIN,LABEL column names, got {text!r}")
    return names[0], names[1], names[2]


def _request(suite: str, data: dict[str, Any]) -> DataRequest:
    """The :class:`~imagenet_dg.sources.DataRequest` of the data options (taken out of ``data``)."""
    folders = {d: data.pop(f"release_{d.replace('-', '_')}") for d in RELEASE_OPTIONS}
    return DataRequest(
        get_suite(suite), root=data.pop("root"), folders={d: p for d, p in folders.items() if p is not None},
        mini=data.pop("mini"), mini_dir=data.pop("mini_dir"), hub=data.pop("hub"), revision=data.pop("revision"),
        columns=HubColumns(*_hub_columns(data.pop("hub_columns"))),
    )


def _tell(text: str) -> None:
    click.echo(text, err=True)


def _verbose() -> bool:
    """Whether the command line asked for ``-v``."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("verbose"))


def _errors_to_exit(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's errors (a user's mistake, damaged input, or a disk that is full, read-only or closed
    to us) into one ``error:`` line and exit code 2; with ``-v`` the traceback is printed first. SIGINT and
    SIGTERM stop the command cleanly (:mod:`guidg.interruption`): it says how to resume and exits with 128 +
    the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with handling_stop_signals():
                return function(*args, **kwargs)
        except ImageNetDGError as error:
            _fail(str(error))
        except OSError as error:
            # A disk or permission fault raised where no code of ours could say what it was doing.
            converted = refused(error)
            if converted is None:
                raise
            _fail(str(converted))
        except RunInterrupted as stop:
            if _verbose():
                traceback.print_exc(file=sys.stderr)
            click.echo(str(stop), err=True)
            sys.exit(stop.exit_code)

    return wrapper


def _fail(message: str) -> None:
    """Print one ``error:`` line (the traceback first with ``-v``) and exit with code 2."""
    if _verbose():
        traceback.print_exc(file=sys.stderr)
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


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
        except click.Abort as error:
            if isinstance(error.__context__, KeyboardInterrupt):  # Ctrl-C outside a run: the shell's code
                click.echo("interrupted", err=True)
                sys.exit(130)
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


@main.command(cls=ListCommand)
@suite_option
@data_options
@selection_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("imagenet-dg"), show_default=True,
              help="Output folder (a Hugging Face dataset layout).")
@click.option("--embed-images", is_flag=True, help="Embed the image bytes (check the releases' terms first).")
@click.option("--verify", is_flag=True, help="Open every selected image and report defects.")
@click.option("--on-bad-image", type=click.Choice(BAD_IMAGE_POLICIES), default="stop", show_default=True,
              help="With --verify: stop with the list, or exclude unusable images and record them.")
@click.option("--workers", type=int, default=None, help="Parallel workers for --verify (default: all cores).")
@click.option("--overwrite", is_flag=True,
              help="Replace an output folder holding another or a damaged build (only a build: never other files, "
                   "the current folder or a folder of images).")
@_errors_to_exit
def build(suite: str, protocol: str, tasks: tuple[str, ...], shots: tuple[int, ...], seeds: tuple[int, ...],
          out: Path, embed_images: bool, verify: bool, on_bad_image: str, workers: int | None, overwrite: bool,
          **data: Any) -> None:
    """Build a suite's manifests (ImageNet-DG by default) from local copies of its images."""
    options = BuildOptions(protocol=protocol, tasks=tasks, shots=shots, seeds=seeds, embed_images=embed_images,
                           verify=verify, on_bad_image=on_bad_image, workers=workers)
    result = build_from(_request(suite, data), out, options, overwrite=overwrite,
                        on_config=lambda c: logger.info("wrote %s", c), tell=_tell)
    if result.resumed:
        logger.info("kept %d configuration(s) of the interrupted build: %s", len(result.resumed),
                    ", ".join(result.resumed))
    if result.health is not None:
        click.echo(result.health.format(), err=True)
    manifest = result.manifest
    state = "already up to date" if result.up_to_date else "built"
    kind = "synthetic " if manifest["synthetic"] else ""
    click.echo(f"{result.out}: {state}, {kind}{manifest['name']} {manifest['protocol']}, "
               f"{len(manifest['configs'])} configurations, content hash {manifest['content_hash']}")


@main.command()
@suite_option
@data_options
@_errors_to_exit
def stats(suite: str, **data: Any) -> None:
    """Print a suite's task statistics (classes, target and source images per task) of the images found."""
    click.echo(statistics(_request(suite, data), tell=_tell).to_string(index=False))


@main.command("make-mini")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULT_MINI_DIR),
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_errors_to_exit
def make_mini(out: Path, seed: int) -> None:
    """Write miniature synthetic copies of the six releases in their official layouts."""
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
@click.option("--suite", default=None,
              help=f"The suite FOLDER must hold (default: any); registered: {', '.join(SUITES)}.")
@_errors_to_exit
def verify(folder: Path, suite: str | None) -> None:
    """Check a built or downloaded FOLDER against the SHA-256 of every file its manifest.json lists."""
    manifest = check_built(folder, suite)
    files = sum(len(s["files"]) for c in manifest["configs"].values() for s in c["splits"].values())
    click.echo(f"{folder}: intact, {manifest['name']} {manifest.get('protocol', DEFAULT_PROTOCOL)}, "
               f"{len(manifest['configs'])} configurations, {files} data files, "
               f"content hash {manifest['content_hash']}")


@main.command(cls=ListCommand)
@suite_option
@data_options
@selection_options
@list_option("--method", "methods", required=True,
             help=f"Methods: {', '.join(METHODS)}, "
                  f"{', '.join(f'{family} (with --base)' for family in families_with_base())}, or all. README's method "
                  "table says what each trains; 'imagenet-dg settings --method M' lists its settings.")
@click.option("--base", type=click.Choice(list(BASES)), default=None,
              help="Base method under guidg (an error for methods without a base).")
@click.option("--model", default="ViT-B-16", show_default=True, help="open_clip architecture.")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip pretrained tag, a local checkpoint file, or 'none' for random weights.")
@click.option("--preset", default=None,
              help="Hyperparameter preset [default: paper; paper-imagenet-dg for ImageNet-DG; mini on synthetic data].")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one preset value, e.g. --set finetune.lr=1e-5 (repeatable). 'imagenet-dg settings' lists "
                   "every SECTION.KEY with its type, default, allowed values and presets.")
@click.option("--benchmark", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Built manifests (imagenet-dg build); default: built by this command under RUNS/manifests/.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when a GPU is visible).")
@click.option("--workers", type=int, default=None,
              help="Image-loading worker processes (default: none on CPU, every core but one with a GPU).")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Folder of run folders; finished runs are not repeated.")
@click.option("--export-model", is_flag=True,
              help="Also save each trained model as <run>/model.safetensors, loadable by open_clip.")
@click.option("--dry-run", is_flag=True, help="List the runs, which are done and where each writes, and stop.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="Run here, or submit each run as a Slurm job (an array job per sweep).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="With --launcher local: runs at once, each in its own process; with GPUs each takes its own "
                   "(cuda:0, cuda:1, ...), on CPU they share the cores. Not under torchrun, which trains one run "
                   "over several GPUs.")
@click.option("--partition", default=None, help="With --launcher slurm: the Slurm partition.")
@click.option("--time", "time_minutes", type=int, default=240, show_default=True,
              help="With --launcher slurm: minutes each job may run.")
@click.option("--gpus-per-job", type=int, default=1, show_default=True, help="With --launcher slurm.")
@click.option("--cpus-per-job", type=int, default=8, show_default=True, help="With --launcher slurm.")
@click.option("--signal-delay", "signal_delay_s", type=int, default=120, show_default=True,
              help="With --launcher slurm: seconds before the time limit at which Slurm warns a job, which then saves "
                   "its run's state at the next step and requeues itself.")
@click.option("--max-requeues", type=int, default=3, show_default=True,
              help="With --launcher slurm: times a job may requeue itself (time limits and preemptions) before it "
                   "stops with its run's state saved.")
@_errors_to_exit
def evaluate(suite: str, protocol: str, tasks: tuple[str, ...], shots: tuple[int, ...], seeds: tuple[int, ...],
             methods: tuple[str, ...], base: str | None, model: str, pretrained: str, preset: str | None,
             overrides: tuple[str, ...], benchmark: Path | None, device: str | None, workers: int | None,
             runs: Path, export_model: bool, dry_run: bool, launcher: str, jobs: int, partition: str | None,
             time_minutes: int, gpus_per_job: int, cpus_per_job: int, signal_delay_s: int, max_requeues: int,
             **data: Any) -> None:
    """Train methods on a suite's leave-one-domain-out tasks and score each on its target."""
    if not launched_as_main():  # under torchrun only rank 0 reports progress
        for name in ("imagenet_dg", "guidg", "leaderboard"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if launcher == "slurm" and jobs != 1:
        raise ImageNetDGError(f"--jobs {jobs} applies to --launcher local; a Slurm array runs its jobs at once")
    if launcher == "slurm":  # checked before any manifest is built
        options = launchers.SlurmOptions(partition=partition, time_minutes=time_minutes, gpus_per_job=gpus_per_job,
                                         cpus_per_job=cpus_per_job, signal_delay_s=signal_delay_s,
                                         max_requeues=max_requeues)
    else:
        launchers.check_jobs(jobs, harness.resolve_device(device))
    request = _request(suite, data)
    sweep = harness.Sweep(
        suite=suite, protocol=protocol, targets=tasks, methods=methods, base=base, model=model,
        pretrained=pretrained, shots=shots, seeds=seeds, preset=preset, overrides=overrides, device=device,
        workers=workers, runs=runs, benchmark=benchmark, root=request.root, release_paths=dict(request.folders),
        mini_dir=request.mini_dir, mini=request.mini, export_model=export_model, hub=request.hub,
        revision=request.revision, hub_columns=(request.columns.image, request.columns.domain, request.columns.label),
    )
    plan = harness.make_plan(sweep, on_build=lambda text: click.echo(text, err=True))
    if dry_run:
        click.echo(harness.describe_plan(plan))
        return
    if launcher == "slurm":
        submitted = launchers.submit_slurm(plan, options)
        for job in submitted:
            click.echo(f"submitted job {job.job_id}")
        click.echo(f"{len(submitted)} jobs submitted, {len(plan.runs) - len(submitted)} runs already done")
        return
    outcomes = launchers.run_local(plan, jobs=jobs)  # each run logs its folder when it starts
    if current_replica().is_main:
        click.echo(harness.summary_table(plan, outcomes))


@main.command()
@click.option("--method", default=None, help="Only the settings a run of this registered method has.")
@click.option("--preset", default=None, help="Show this preset's values instead of the defaults.")
@_errors_to_exit
def settings(method: str | None, preset: str | None) -> None:
    """List every setting 'evaluate --set SECTION.KEY=VALUE' takes: type, default, allowed values, presets."""
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
@click.option("--selection", type=click.Choice(SELECTIONS), default=NO_SELECTION,
              show_default=True,
              help="Reduce a hyperparameter sweep to one configuration per method, target and seed: by the sources' "
                   "validation accuracy (training-domain) or by the target's accuracy (oracle: an upper bound that "
                   "looks at the target). none: every configuration is a row of its own.")
@click.option("--metric", type=click.Choice(list(METRICS)), default=ACCURACY.name,
              show_default=True,
              help="The number in every table: accuracy, worst-class accuracy, expected calibration error (ece, "
                   "lower is better) or negative log-likelihood (nll, lower is better).")
@_errors_to_exit
def leaderboard(runs: tuple[Path, ...], more_runs: tuple[Path, ...], out: Path | None, spread: str, selection: str,
                metric: str) -> None:
    """Aggregate every finished run under the runs folders into the leaderboard's tables."""
    folders = [*runs, *more_runs] or [Path("runs")]
    if out is None:
        board = build_leaderboard(collect(folders), load_reported(), spread, selection, metric)
        click.echo(render_markdown(board), nl=False)
    else:
        published = publish(folders, out, spread=spread, selection=selection, metric=metric)
        board = published.board
        for file in published.files:
            click.echo(f"wrote {file}", err=True)
    if board.unfinished:
        click.echo(f"{len(board.unfinished)} unfinished run folder(s) not counted: "
                   + ", ".join(str(p) for p in board.unfinished), err=True)
