"""The dataset card: ``README.md`` of a built dataset, as the Hugging Face Hub reads it.

YAML front matter declares one configuration per (task, shots, seed) and where its split files are; the body
is the project's ``DATASET_CARD.md`` followed by the figures of this particular build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources

import yaml

from imagenet_dg.protocol import SPLITS

CARD_RESOURCE = "DATASET_CARD.md"


def card_text() -> str:
    """The text of ``DATASET_CARD.md`` shipped with the package."""
    return resources.files("imagenet_dg").joinpath(CARD_RESOURCE).read_text(encoding="utf-8")


_SPLIT_ORDER = ("expert", "guide", "train", "validation", "test")


def _ordered_splits(splits: Mapping) -> list[str]:
    """Split names in the conventional order, then any others by name: the same whatever the JSON key order."""
    known = [s for s in _SPLIT_ORDER if s in splits]
    return known + sorted(s for s in splits if s not in _SPLIT_ORDER)


def front_matter(configs: Mapping[str, Mapping]) -> dict:
    """The Hub metadata block: licence, task category and the configurations with their data files.

    ``configs`` is the manifest's ``configs`` object. Each split names its shard files one by one, as the
    manifest lists them, rather than by a glob: a file copied into a configuration's folder is not loaded
    by ``datasets.load_dataset`` as part of the split.
    """
    return {
        "pretty_name": "ImageNet-DG",
        "license": "other",
        "task_categories": ["image-classification"],
        "tags": ["domain-generalization", "few-shot", "clip", "imagenet"],
        "configs": [
            {
                "config_name": name,
                "data_files": [
                    {"split": split, "path": [shard["path"] for shard in config["splits"][split]["files"]]}
                    for split in _ordered_splits(config["splits"])
                ],
            }
            for name, config in configs.items()
        ],
    }


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def build_section(manifest: Mapping) -> str:
    """Markdown describing one build: releases scanned, task statistics, configurations and hashes."""
    releases = manifest["releases"]
    release_rows = [
        [d, r["release"], r["layout"], f"{r['images']:,}", f"{r['classes']} of {r['official_classes']}"]
        for d, r in releases.items()
    ]
    stats = manifest["statistics"]
    stat_header = list(stats[0]) if stats else []
    stat_rows = [[f"{v:,}" if isinstance(v, int) else v for v in row.values()] for row in stats]
    config_rows = []
    for name, config in manifest["configs"].items():
        splits = config["splits"]
        config_rows.append([name, config["task"], config["shots"], config["seed"]] + [splits[s]["rows"] for s in SPLITS])
    parts = [
        "## This build",
        "",
        f"Protocol version {manifest['protocol_version']}, partition seed {manifest['partition_seed']}, "
        f"built by {manifest['generator']}, manifest format {manifest['format']}. "
        f"Content hash `{manifest['content_hash']}`.",
        "",
        "Releases scanned:",
        "",
        _markdown_table(["domain", "release", "layout", "images", "classes"], release_rows),
        "",
        "Task statistics (sources restricted to the target's classes):",
        "",
        _markdown_table(stat_header, stat_rows),
        "",
        "Configurations:",
        "",
        _markdown_table(["config", "task", "shots", "seed", *SPLITS], config_rows),
        "",
    ]
    excluded = manifest.get("excluded", [])
    if excluded:
        parts += [
            f"{len(excluded)} unusable images were excluded before splitting (listed in manifest.json).",
            "",
        ]
    return "\n".join(parts)


def dataset_readme(manifest: Mapping, card: str | None = None) -> str:
    """The full ``README.md`` of a built dataset folder."""
    if manifest.get("suite", "imagenet-dg") != "imagenet-dg":
        from imagenet_dg.suite_card import suite_readme  # the standard suites have their own card

        return suite_readme(manifest)
    header = yaml.safe_dump(front_matter(manifest["configs"]), sort_keys=False, allow_unicode=True)
    body = card if card is not None else card_text()
    return f"---\n{header}---\n\n{synthetic_notice(manifest)}{body.rstrip()}\n\n{build_section(manifest)}"


SYNTHETIC_NOTICE = (
    "> **Synthetic data.** This build was made from the miniature synthetic releases (pictures drawn by "
    "`imagenet_dg.world`), not from ImageNet: its numbers say nothing about real images. It is for tests and "
    "demonstrations only and is never to be published as ImageNet-DG.\n\n"
)


def synthetic_notice(manifest: Mapping) -> str:
    """The warning that opens the card of a build of synthetic data (``"synthetic": true``), else nothing."""
    return SYNTHETIC_NOTICE if manifest.get("synthetic") else ""
