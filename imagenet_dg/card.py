"""The dataset card: ``README.md`` of a built dataset, as the Hugging Face Hub reads it.

YAML front matter declares one configuration per (task, shots, seed) and names its split files one by one; the
body says what the data are. A suite read from the ImageNet releases (ImageNet-DG) has the project's
``DATASET_CARD.md`` as its body, followed by the figures of the build; a suite read from its folders has a body
written from its manifest: the suite, the protocol that split it, where the images came from, what the build
holds. The card is a function of the manifest alone, whatever order its keys were read in, so a build's card can
be checked against its manifest (``docs/protocol.md#manifests``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources

import yaml

from imagenet_dg.manifests import dumps_json
from imagenet_dg.protocols import FEWSHOT, FULL, PROTOCOL_SPLITS
from imagenet_dg.suites import suite_of_manifest

CARD_RESOURCE = "DATASET_CARD.md"


def card_text() -> str:
    """The text of ``DATASET_CARD.md`` shipped with the package."""
    return resources.files("imagenet_dg").joinpath(CARD_RESOURCE).read_text(encoding="utf-8")


_SPLIT_ORDER = tuple(dict.fromkeys(split for splits in PROTOCOL_SPLITS.values() for split in splits[:-1])) + ("test",)


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def build_section(manifest: Mapping) -> str:
    """Markdown describing one build of the releases: releases scanned, task statistics, configurations and
    hashes."""
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
        config_rows.append([name, config["task"], config["shots"], config["seed"]]
                           + [splits[s]["rows"] for s in PROTOCOL_SPLITS[FEWSHOT]])
    parts = [
        "## This build",
        "",
        f"Protocol version {manifest['protocol_version']}, partition seed {manifest['partition_seed']}, "
        f"built by {manifest['generator']}, manifest format {manifest['format']}. "
        f"Content hash `{manifest['content_hash']}`.",
        "",
        "Releases scanned:",
        "",
        markdown_table(["domain", "release", "layout", "images", "classes"], release_rows),
        "",
        "Task statistics (sources restricted to the target's classes):",
        "",
        markdown_table(stat_header, stat_rows),
        "",
        "Configurations:",
        "",
        markdown_table(["config", "task", "shots", "seed", *PROTOCOL_SPLITS[FEWSHOT]], config_rows),
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
    """The full ``README.md`` of a built dataset folder described by ``manifest`` (``card``: the body of a build of
    the releases, default ``DATASET_CARD.md``)."""
    manifest = json.loads(dumps_json(manifest))  # one key order, whatever order the manifest was made or read in
    if "releases" in manifest:
        header = yaml.safe_dump(front_matter(manifest["configs"]), sort_keys=False, allow_unicode=True)
        body = card if card is not None else card_text()
        return f"---\n{header}---\n\n{synthetic_notice(manifest)}{body.rstrip()}\n\n{build_section(manifest)}"
    return _suite_readme(manifest)


SYNTHETIC_NOTICE = (
    "> **Synthetic data.** This build was made from the miniature synthetic releases (pictures drawn by "
    "`imagenet_dg.world`), not from ImageNet: its numbers say nothing about real images. It is for tests and "
    "demonstrations only and is never to be published as ImageNet-DG.\n\n"
)


SUITE_SYNTHETIC_NOTICE = (
    "**Synthetic data.** The images are generated pictures in the suite's folder layout, made for tests and "
    "demonstrations; no result on them is a result on the real suite.\n\n"
)


def synthetic_notice(manifest: Mapping) -> str:
    """The warning that opens the card of a build of synthetic data (``"synthetic": true``), else nothing."""
    if not manifest.get("synthetic"):
        return ""
    return SYNTHETIC_NOTICE if "releases" in manifest else SUITE_SYNTHETIC_NOTICE


_PROTOCOL_TEXT = {
    FEWSHOT: (
        "the few-shot protocol: every domain is split per class into an expert pool (40%), a guide pool (40%) "
        "and a test part (20%) under a fixed partition seed; the sources' k-shot samples of both pools are the "
        "training (and, for the guide sample, model-selection) data, the target's test part is scored"
    ),
    FULL: (
        "DomainBed's protocol: every domain is split 80% / 20% with DomainBed's own seeding (trial seed and "
        "environment index); the sources' 80% train, their 20% select models, the target's 80% is scored"
    ),
}


def _source_text(source: Mapping) -> str:
    if source.get("kind") == "hub":
        return (f"the Hugging Face Hub dataset `{source['repo_id']}` at revision `{source['revision']}`, its "
                "images written out into the suite's folder layout")
    return f"a local copy in the folder layout `{source.get('folder', '?')}/<domain>/<class>/<image>`"


def _build_order(manifest: Mapping) -> tuple[list[str], dict[str, dict]]:
    """The manifest's domains and configurations in the order the build makes them: domains in the suite's
    order, configurations by target in that order, then shots and seed ascending."""
    rank = {d: i for i, d in enumerate(suite_of_manifest(manifest).domain_ids)}
    domains = sorted(manifest["domains"], key=lambda d: (rank.get(d, len(rank)), d))

    def key(name: str) -> tuple:
        config = manifest["configs"][name]
        return rank.get(config["target"], len(rank)), config.get("shots") or 0, config["seed"], name

    return domains, {name: manifest["configs"][name] for name in sorted(manifest["configs"], key=key)}


def _suite_readme(manifest: Mapping) -> str:
    """The ``README.md`` of a build of a suite read from its folders."""
    domains, configs = _build_order(manifest)
    splits = PROTOCOL_SPLITS[manifest["protocol"]]
    matter = front_matter(configs)
    matter["pretty_name"] = f"{manifest['name']} ({manifest['protocol']} protocol)"
    matter["tags"] = ["domain-generalization", manifest["suite"], manifest["protocol"], "clip"]
    header = yaml.safe_dump(matter, sort_keys=False, allow_unicode=True)
    domain_rows = [[d, manifest["domains"][d]["folder"], f"{manifest['domains'][d]['images']:,}"] for d in domains]
    config_rows = [[name, config["target"], ", ".join(config["sources"]), config.get("shots") or "-",
                    config["seed"], *(f"{config['splits'][s]['rows']:,}" for s in splits)]
                   for name, config in configs.items()]
    split_names = list(splits) if configs else []
    body = [
        f"# {manifest['name']}",
        "",
        synthetic_notice(manifest) + f"Leave-one-domain-out splits of {manifest['name']} "
        f"({len(manifest['class_ids'])} classes) under {_PROTOCOL_TEXT[manifest['protocol']]}.",
        "",
        "The parquet files list images by path relative to their domain folder; the images themselves are not "
        f"included. They were read from {_source_text(manifest['source'])}.",
        "",
        "## This build",
        "",
        f"Suite `{manifest['suite']}`, protocol `{manifest['protocol']}` version {manifest['protocol_version']}, "
        f"built by {manifest['generator']}, manifest format {manifest['format']}. "
        f"Content hash `{manifest['content_hash']}`.",
        "",
        markdown_table(["domain", "folder", "images"], domain_rows),
        "",
        markdown_table(["config", "target", "sources", "shots", "seed", *split_names], config_rows),
        "",
    ]
    return f"---\n{header}---\n\n" + "\n".join(body)
