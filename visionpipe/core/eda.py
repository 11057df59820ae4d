"""EDA pieces every task's figures use: split colours, image sizes, target statistics, the
prepare stage's counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from visionpipe.core.io import save_figure, significant  # noqa: E402

SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
_STAT_KEYS = ("count", "mean", "std", "min", "median", "max")


def image_sizes(manifest: pd.DataFrame, path: Path) -> dict[str, Any]:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(manifest["width"], manifest["height"], s=8, alpha=0.4)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes")
    fig.tight_layout()
    save_figure(path, fig)
    sizes = manifest.groupby(["width", "height"]).size().sort_values(ascending=False)
    return {
        "width": {
            "min": int(manifest["width"].min()),
            "max": int(manifest["width"].max()),
            "mean": float(manifest["width"].mean()),
        },
        "height": {
            "min": int(manifest["height"].min()),
            "max": int(manifest["height"].max()),
            "mean": float(manifest["height"].mean()),
        },
        "distinct_sizes": int(len(sizes)),
        "most_common_size": [int(v) for v in sizes.index[0]],
        "modes": {k: int(v) for k, v in manifest["mode"].value_counts().items()},
    }


def target_stats(values: pd.Series) -> dict[str, Any]:
    """count, mean, std, min, median, max of the finite values; None statistics when there are
    none (an empty split must not put NaN into the JSON)."""
    values = values[np.isfinite(values)]
    if values.empty:
        return {k: (0 if k == "count" else None) for k in _STAT_KEYS}
    return {
        "count": int(len(values)),
        "mean": significant(float(values.mean())),
        "std": significant(float(values.std())) if len(values) > 1 else None,
        "min": significant(float(values.min())),
        "median": significant(float(values.median())),
        "max": significant(float(values.max())),
    }


def missing_summary(data_report: dict | None) -> dict[str, Any]:
    """The prepare stage's row counts (num_*/percent_*): how much of the table was usable."""
    if not data_report:
        return {}
    missing: dict[str, Any] = {}
    for key, value in data_report.items():
        if not key.startswith(("num_", "percent_")) or isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, np.integer)):
            missing[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            missing[key] = float(value) if math.isfinite(value) else None
    return missing
