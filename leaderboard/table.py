"""The leaderboard table: mean accuracy (and spread over seeds) per method and target, as Markdown."""

from __future__ import annotations

import pandas as pd


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and number of runs of each (backbone, shots, label, target)."""
    keys = ["backbone", "pretrained", "preset", "shots", "label", "target"]
    grouped = records.groupby(keys, dropna=False)["accuracy"]
    return grouped.agg(mean="mean", std="std", runs="count").reset_index()


def render_markdown(records: pd.DataFrame) -> str:
    """One Markdown table per (backbone, weights, preset, shots): rows are methods, columns targets and average.

    A cell reads ``mean ± std (n)`` over the runs of different seeds; the average column is the mean of the
    target means.
    """
    if records.empty:
        return "No finished runs."
    summary = aggregate(records)
    parts = []
    for (backbone, pretrained, preset, shots), group in summary.groupby(
        ["backbone", "pretrained", "preset", "shots"], dropna=False, sort=True
    ):
        targets = sorted(group["target"].unique())
        header = ["method", *targets, "average"]
        lines = [f"### {backbone} ({pretrained}), preset {preset}, {shots} shots", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label, rows in group.groupby("label", sort=True):
            cells, means = [], []
            by_target = rows.set_index("target")
            for target in targets:
                if target not in by_target.index:
                    cells.append("-")
                    continue
                row = by_target.loc[target]
                means.append(row["mean"])
                spread = "" if pd.isna(row["std"]) else f" ± {row['std']:.1f}"
                cells.append(f"{row['mean']:.1f}{spread} ({int(row['runs'])})")
            average = f"{sum(means) / len(means):.1f}" if len(means) == len(targets) else "-"
            lines.append("| " + " | ".join([label, *cells, average]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
