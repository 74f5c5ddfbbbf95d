"""Result records: reading the ``results.jsonl`` of every finished run under a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from imagenet_dg.errors import ImageNetDGError

RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"


def method_label(record: dict) -> str:
    """Row label of a record: the method, with CMAttn's routing when it is not the default batch routing."""
    routing = record.get("routing")
    return record["method"] if routing in (None, "batch") else f"{record['method']} ({routing} routing)"


def collect(runs_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per finished run under ``runs_dir`` (unfinished runs, without a ``done`` marker, are skipped)."""
    rows = []
    for results in sorted(Path(runs_dir).rglob(RESULTS_FILE)):
        if not (results.parent / DONE_FILE).is_file():
            continue
        for number, line in enumerate(results.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ImageNetDGError(f"{results}:{number}: not a JSON record ({error})") from None
            rows.append(
                {
                    "label": method_label(record),
                    "method": record["method"],
                    "benchmark": record.get("benchmark", "imagenet-dg"),
                    "task": record["task"],
                    "target": record["target"],
                    "shots": record["shots"],
                    "split_seed": record["split_seed"],
                    "seed": record["seed"],
                    "accuracy": float(record["accuracy"]),
                    "backbone": record["backbone"]["arch"],
                    "pretrained": record["backbone"].get("pretrained") or "random weights",
                    "preset": record.get("preset"),
                    "run": results.parent.name,
                }
            )
    columns = ["label", "method", "benchmark", "task", "target", "shots", "split_seed", "seed", "accuracy",
               "backbone", "pretrained", "preset", "run"]
    return pd.DataFrame(rows, columns=columns)
