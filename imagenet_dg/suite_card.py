"""The dataset card (``README.md``) of a built standard suite, as the Hugging Face Hub reads it.

The front matter is ImageNet-DG's (one configuration per task, each split naming its shard files one by one),
with the suite's own name and tags; the body says what the suite is, where its images come from, which
protocol split it and what this build holds.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from imagenet_dg.card import front_matter

_PROTOCOL_TEXT = {
    "fewshot": (
        "the few-shot protocol: every domain is split per class into an expert pool (40%), a guide pool (40%) "
        "and a test part (20%) under a fixed partition seed; the sources' k-shot samples of both pools are the "
        "training (and, for the guide sample, model-selection) data, the target's test part is scored"
    ),
    "full": (
        "DomainBed's protocol: every domain is split 80% / 20% with DomainBed's own seeding (trial seed and "
        "environment index); the sources' 80% train, their 20% select models, the target's 80% is scored"
    ),
}


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _source_text(source: Mapping) -> str:
    if source.get("kind") == "hub":
        return (f"the Hugging Face Hub dataset `{source['repo_id']}` at revision `{source['revision']}`, its "
                "images written out into the suite's folder layout")
    return f"a local copy in the folder layout `{source.get('folder', '?')}/<domain>/<class>/<image>`"


def suite_readme(manifest: Mapping) -> str:
    """The full ``README.md`` of a suite build described by ``manifest``."""
    matter = front_matter(manifest["configs"])
    matter["pretty_name"] = f"{manifest['name']} ({manifest['protocol']} protocol)"
    matter["tags"] = ["domain-generalization", manifest["suite"], manifest["protocol"], "clip"]
    header = yaml.safe_dump(matter, sort_keys=False, allow_unicode=True)
    synthetic = (
        "**Synthetic data.** The images are generated pictures in the suite's folder layout, made for tests and "
        "demonstrations; no result on them is a result on the real suite.\n\n"
        if manifest.get("synthetic") else ""
    )
    domain_rows = [[d, r["folder"], f"{r['images']:,}"] for d, r in manifest["domains"].items()]
    config_rows = []
    for name, config in manifest["configs"].items():
        splits = config["splits"]
        config_rows.append([name, config["target"], ", ".join(config["sources"]), config.get("shots") or "-",
                            config["seed"], *(f"{splits[s]['rows']:,}" for s in splits)])
    split_names = list(next(iter(manifest["configs"].values()))["splits"]) if manifest["configs"] else []
    body = [
        f"# {manifest['name']}",
        "",
        synthetic + f"Leave-one-domain-out splits of {manifest['name']} ({len(manifest['class_ids'])} classes) "
        f"under {_PROTOCOL_TEXT[manifest['protocol']]}.",
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
        _table(["domain", "folder", "images"], domain_rows),
        "",
        _table(["config", "target", "sources", "shots", "seed", *split_names], config_rows),
        "",
    ]
    return f"---\n{header}---\n\n" + "\n".join(body)
