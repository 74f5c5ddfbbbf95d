"""Byte identity of the built manifests: the SHA-256 of every file every kind of build writes, recorded and compared.

The same inputs must give byte-identical manifests (parquet shards, ``manifest.json``, ``README.md``) from one
version of the code to the next, so that the committed records, which cite manifest content hashes, and users'
builds stay valid. This script makes the miniature inputs once (the six ImageNet releases, every miniature
suite in its layout variants, a Hub parquet mirror of PACS written locally) into ``--data``, keeps them there,
runs every kind of build through the command line on them (ImageNet-DG from a root and from the release
folders one by one, with several tasks, shots and seeds, with ``--verify`` and ``--embed-images``; every suite
under both protocols with several shots and seeds; the Hub route; the harness's own builds through
``evaluate --dry-run``), and hashes every file written, plus the output of ``stats``.

    python benchmarks/manifest_identity.py --data /tmp/identity/data --record before.json
    python benchmarks/manifest_identity.py --data /tmp/identity/data --check before.json

``--check`` exits with status 1 and lists every file whose hash differs, is missing or is new. The inputs in
``--data`` are made only when absent, so a later version of the generators does not change them: the check is
about the build code, given the same images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

from imagenet_dg.cli import main as cli
from imagenet_dg.mini import make_mini_releases
from imagenet_dg.mini_suites import VARIANTS, make_mini_suite

SUITES = ("pacs", "vlcs", "officehome", "terraincognita", "domainnet")
EVALUATE = ("--model", "imagenet-dg-tiny", "--pretrained", "none", "--method", "zeroshot", "--device", "cpu",
            "--dry-run")


def make_inputs(data: Path) -> None:
    """The miniature releases, every miniature suite in every layout variant and a local Hub mirror of PACS."""
    if not (data / "releases").is_dir():
        make_mini_releases(data / "releases")
    for suite in SUITES:
        for variant in VARIANTS[suite]:
            folder = data / "suites" / f"{suite}-{variant}"
            if not folder.is_dir():
                make_mini_suite(suite, folder, variant=variant)
    hub = data / "hub" / "pacs"
    if not hub.is_dir():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_suites_hub import write_hub_repo  # the tests' mirror writer: one definition of that layout

        write_hub_repo(hub, domain_names=["art painting", "Cartoon", "photo", "sketch"], per_class=4)


def builds(data: Path) -> dict[str, list[str]]:
    """Name -> command-line arguments (without the output) of every build hashed."""
    releases = data / "releases"
    one_by_one = [arg for domain, folder in (("imagenet", "train"), ("imagenet-val", "val"),
                                              ("imagenet-a", "imagenet-a"), ("imagenet-r", "imagenet-r"),
                                              ("imagenet-sketch", "sketch"),
                                              ("imagenetv2", "imagenetv2-matched-frequency-format-val"))
                  for arg in (f"--{domain}", str(releases / folder))]
    runs: dict[str, list[str]] = {
        "imagenet-dg-default": ["build", "--root", str(releases)],
        "imagenet-dg-shots-seeds": ["build", "--root", str(releases), "--shots", "1,4,16", "--seeds", "1,2,7"],
        "imagenet-dg-one-by-one": ["build", *one_by_one, "--tasks", "r,a", "--shots", "2,8", "--seeds", "5"],
        "imagenet-dg-verify": ["build", "--root", str(releases), "--tasks", "a,i", "--shots", "4", "--seeds", "1",
                               "--verify", "--on-bad-image", "skip", "--workers", "1"],
        "imagenet-dg-embed": ["build", "--root", str(releases), "--tasks", "a", "--shots", "1", "--seeds", "1",
                              "--embed-images"],
    }
    for suite in SUITES:
        for variant in VARIANTS[suite]:
            root = str(data / "suites" / f"{suite}-{variant}")
            runs[f"mini-{suite}-{variant}-fewshot"] = ["build", "--suite", f"mini-{suite}", "--root", root]
            runs[f"mini-{suite}-{variant}-full"] = ["build", "--suite", f"mini-{suite}", "--root", root,
                                                    "--protocol", "full"]
        root = str(data / "suites" / f"{suite}-domainbed")
        runs[f"mini-{suite}-fewshot-shots-seeds"] = ["build", "--suite", f"mini-{suite}", "--root", root,
                                                     "--shots", "1,4,8", "--seeds", "2,9"]
        runs[f"mini-{suite}-full-seeds"] = ["build", "--suite", f"mini-{suite}", "--root", root, "--protocol",
                                            "full", "--seeds", "0,5"]
    pacs = str(data / "suites" / "pacs-domainbed")
    runs["pacs-as-registered-suite-fewshot"] = ["build", "--suite", "pacs", "--root", pacs, "--shots", "2",
                                                "--seeds", "1", "--targets", "sketch,photo"]
    runs["pacs-as-registered-suite-full"] = ["build", "--suite", "pacs", "--root", pacs, "--protocol", "full",
                                             "--seeds", "1", "--targets", "cartoon"]
    return runs


def evaluations(data: Path) -> dict[str, list[str]]:
    """Name -> ``evaluate --dry-run`` arguments (without ``--runs``) whose harness builds are hashed."""
    return {
        "harness-imagenet-dg-mini": ["evaluate", "--mini", "--mini-dir", str(data / "releases"), "--seeds", "1",
                                     "--target", "a", *EVALUATE],
        "harness-mini-pacs-fewshot": ["evaluate", "--suite", "mini-pacs", "--root",
                                      str(data / "suites" / "pacs-domainbed"), "--seeds", "1", "2", *EVALUATE],
        "harness-mini-vlcs-full": ["evaluate", "--suite", "mini-vlcs", "--root",
                                   str(data / "suites" / "vlcs-domainbed"), "--protocol", "full", "--seeds", "0",
                                   *EVALUATE],
    }


def file_hashes(folder: Path) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"imagenet-dg {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
    return result.output


def record(data: Path, work: Path) -> dict[str, dict[str, str]]:
    """Build name -> file -> SHA-256, for every build (and ``stats --root``'s output, hashed as one file)."""
    make_inputs(data)
    hashes: dict[str, dict[str, str]] = {}
    for name, args in builds(data).items():
        out = work / name
        invoke([*args, "--out", str(out)])
        hashes[name] = file_hashes(out)
        print(f"{name}: {len(hashes[name])} files", file=sys.stderr)
    hub_root = work / "hub-images"
    out = work / "pacs-hub-full"
    invoke(["build", "--suite", "pacs", "--hub", str(data / "hub" / "pacs"), "--root", str(hub_root), "--protocol", "full", "--seeds", "0", "--out", str(out)])
    hashes["pacs-hub-full"] = file_hashes(out)
    for name, args in evaluations(data).items():
        runs = work / name
        invoke([*args, "--runs", str(runs)])
        built = runs / "manifests"
        hashes[name] = {f"{f.name}/{path}": sha for f in sorted(built.iterdir())
                        for path, sha in file_hashes(f).items()}
        print(f"{name}: {len(hashes[name])} files", file=sys.stderr)
    stats = invoke(["stats", "--root", str(data / "releases")])
    hashes["stats"] = {"stdout": hashlib.sha256(stats.encode()).hexdigest()}
    return hashes


def compare(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    """Every difference between two recordings, one line each."""
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}), after.get(name, {})
        for path in sorted(set(old) | set(new)):
            if path not in new:
                lines.append(f"{name}: {path} missing")
            elif path not in old:
                lines.append(f"{name}: {path} new")
            elif old[path] != new[path]:
                lines.append(f"{name}: {path} differs")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Folder of the miniature inputs (made if absent).")
    parser.add_argument("--record", type=Path, help="Write the hashes to this JSON file.")
    parser.add_argument("--check", type=Path, help="Compare the hashes with this JSON file.")
    args = parser.parse_args()
    if (args.record is None) == (args.check is None):
        parser.error("give exactly one of --record and --check")
    work = Path(tempfile.mkdtemp(prefix="manifest-identity-"))
    try:
        hashes = record(args.data.absolute(), work)
    finally:
        shutil.rmtree(work)
    total = sum(len(files) for files in hashes.values())
    if args.record is not None:
        args.record.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{len(hashes)} builds, {total} files recorded in {args.record}")
        return 0
    differences = compare(json.loads(args.check.read_text(encoding="utf-8")), hashes)
    for line in differences:
        print(line)
    print(f"{len(hashes)} builds, {total} files: {len(differences)} difference(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
