"""The ``imagenet-dg`` command line: a thin layer over the library functions."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="imagenet-dg")
def main() -> None:
    """ImageNet-DG: build the benchmark, evaluate methods, print the leaderboard."""
