"""Exploratory figures and a JSON summary of the split manifests (regression).

A regression dataset has a numeric target per image (e.g. plant fresh weight), often a group
(the plant photographed many times) and metadata columns (e.g. age in days). Before training it
pays to see how the target is distributed per split, whether metadata already explains it
(a strong baseline the model has to beat) and what the images look like at each target level.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from visionpipe.core.eda import SPLIT_COLORS, image_sizes, missing_summary, target_stats  # noqa: E402
from visionpipe.core.errors import DataError, UserError  # noqa: E402
from visionpipe.core.images import load_images  # noqa: E402
from visionpipe.core.io import save_figure, significant  # noqa: E402
from visionpipe.core.manifests import SPLITS  # noqa: E402

log = logging.getLogger(__name__)

CHANNELS = (("R", "#d62728"), ("G", "#2ca02c"), ("B", "#1f77b4"))
MAX_CATEGORIES = 20  # box plots beyond this many categories are unreadable
SAMPLE_SIZE = 96  # px of the sample grid's thumbnails
INTENSITY_SIZE = 64  # px the intensity histograms decode at (enough for a distribution)


def _cells(series: pd.Series) -> pd.Series:
    """Cells as stripped strings, missing ones as "" (CSVs are read with keep_default_na=False,
    but a frame built in memory may hold NaN or None)."""
    return series.map(
        lambda v: "" if v is None or (np.ndim(v) == 0 and pd.isna(v)) else str(v)
    ).str.strip()


def numeric_values(series: pd.Series) -> pd.Series | None:
    """The column as floats (NaN where empty or not a number) when at least half of its
    non-empty cells are numbers, else None: a mostly-text column is a category, and a few typos
    in a numeric one must not turn it into one."""
    cells = _cells(series)
    present = cells != ""
    if not present.any():
        return None
    values = pd.to_numeric(cells.where(present), errors="coerce").astype(float)
    values = values.where(np.isfinite(values))
    if 2 * int(values.notna().sum()) < int(present.sum()):
        return None
    return values


def _target(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame["target"], errors="coerce").astype(float)


def target_histogram(frame: pd.DataFrame, target_name: str, path: Path) -> None:
    """One step histogram per split on shared bins, so split shift is visible at a glance."""
    target = _target(frame)
    finite = target[np.isfinite(target)]
    edges = np.histogram_bin_edges(finite.to_numpy(), bins=min(40, max(5, len(finite) // 5)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in SPLITS:
        values = finite[frame.loc[finite.index, "split"] == split]
        if len(values):
            ax.hist(
                values,
                bins=edges,
                histtype="step",
                linewidth=1.6,
                color=SPLIT_COLORS[split],
                label=f"{split} ({len(values)})",
            )
    ax.set_xlabel(target_name)
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Distribution of {target_name} per split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` rows drawn with ``seed``, sorted by target (ties by path) so that a sample grid
    reads from low to high target."""
    rows = frame.sample(min(n, len(frame)), random_state=seed)
    rows = rows.assign(_target=_target(rows))
    return rows.sort_values(["_target", "path"], kind="stable").drop(columns="_target")


def _caption(value: float) -> str:
    """3 significant digits, without switching to 1.23e+03 for weights in the thousands."""
    rounded = significant(value, 3)
    return "n/a" if rounded is None else f"{rounded:g}"


def sample_grid(
    root: Path, frame: pd.DataFrame, target_name: str, n: int, seed: int, path: Path
) -> list[str]:
    """Images captioned with their target (and group): returns the paths shown, in grid order."""
    rows = sample_rows(frame, n, seed)
    images = load_images(
        root, rows["path"].tolist(), SAMPLE_SIZE, desc=f"samples ({SAMPLE_SIZE}px)"
    )
    cols = max(1, min(len(rows), 8))
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(1.6 * cols, 1.9 * nrows), squeeze=False)
    groups = _cells(rows["group"]) if "group" in rows else pd.Series("", index=rows.index)
    targets = _target(rows)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(rows):
            continue
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        caption = _caption(float(targets.iloc[i]))
        group = groups.iloc[i]
        if group:
            caption += f"\n{group if len(group) <= 16 else group[:15] + '…'}"
        ax.set_title(caption, fontsize=7)
    fig.suptitle(f"Samples sorted by {target_name}")
    fig.tight_layout()
    save_figure(path, fig)
    return rows["path"].tolist()


def correlation(
    frame: pd.DataFrame, target_name: str, numeric: dict[str, pd.Series], path: Path
) -> dict[str, float | None]:
    """Pearson correlation of the target and the numeric metadata (pairwise complete rows):
    a column that already predicts the target is a baseline, or a leak, worth knowing about."""
    names = [target_name, *numeric]
    data = pd.DataFrame({i: values for i, values in enumerate([_target(frame), *numeric.values()])})
    matrix = data.corr(method="pearson").to_numpy()
    k = len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * k), max(3.5, 0.8 + 0.8 * k)))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="coolwarm", vmin=-1, vmax=1)
    for r in range(k):
        for c in range(k):
            value = matrix[r, c]
            text = "n/a" if not np.isfinite(value) else f"{value:.2f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(k), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    title = "Pearson correlation"
    if not numeric:
        title += "\n(no numeric metadata columns)"
    ax.set_title(title)
    fig.tight_layout()
    save_figure(path, fig)
    return {name: significant(float(matrix[i + 1, 0])) for i, name in enumerate(numeric)}


def _note_figure(text: str, path: Path) -> None:
    """A figure that only says why there is nothing to plot: the set of files stays fixed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    save_figure(path, fig)


def check_target_vs(target_vs: str, metadata_columns: list[str]) -> None:
    """``eda.target_vs`` must name a metadata column (or be "")."""
    if target_vs and target_vs not in metadata_columns:
        columns = (
            f"metadata columns: {', '.join(metadata_columns)}"
            if metadata_columns
            else "no metadata columns (data.metadata_columns is empty)"
        )
        raise UserError(f"eda.target_vs: {target_vs!r} is not a metadata column; {columns}")


def target_vs_metadata(frame: pd.DataFrame, target_name: str, column: str, path: Path) -> str:
    """The target against one metadata column: a scatter when it is numeric, a box plot per
    category when it is text. Returns the kind drawn ("none", "scatter", "box")."""
    if not column:
        _note_figure(
            "No metadata column chosen\n(set eda.target_vs to plot the target against one)", path
        )
        return "none"
    target = _target(frame)
    numeric = numeric_values(frame[column])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if numeric is not None:
        for split in SPLITS:
            keep = (frame["split"] == split) & numeric.notna() & np.isfinite(target)
            if keep.any():
                ax.scatter(
                    numeric[keep],
                    target[keep],
                    s=12,
                    alpha=0.6,
                    color=SPLIT_COLORS[split],
                    label=split,
                )
        if ax.collections:
            ax.legend(fontsize=8)
        kind = "scatter"
        ax.set_title(f"{target_name} vs {column}")
    else:
        cells = _cells(frame[column])
        keep = (cells != "") & np.isfinite(target)
        counts = cells[keep].value_counts()
        top = sorted(counts.index[:MAX_CATEGORIES], key=str)
        if top:
            ax.boxplot([target[keep & (cells == c)].to_numpy() for c in top])
            ax.set_xticks(range(1, len(top) + 1), top, rotation=30, ha="right", fontsize=8)
        title = f"{target_name} per {column}"
        if len(counts) > MAX_CATEGORIES:
            title += f" ({MAX_CATEGORIES} most frequent of {len(counts)} categories)"
        ax.set_title(title)
        kind = "box"
    ax.set_xlabel(column)
    ax.set_ylabel(target_name)
    fig.tight_layout()
    save_figure(path, fig)
    return kind


def pixel_intensity(
    root: Path, frame: pd.DataFrame, n: int, seed: int, path: Path
) -> dict[str, Any]:
    """Per-channel intensity histograms of up to ``n`` images: exposure or colour casts that a
    model could pick up instead of the plant."""
    rows = frame.sample(min(n, len(frame)), random_state=seed)
    images = load_images(
        root, rows["path"].tolist(), INTENSITY_SIZE, desc=f"intensity ({INTENSITY_SIZE}px)"
    )
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).numpy().astype(np.float32)
    fig, ax = plt.subplots(figsize=(6, 4))
    stats: dict[str, Any] = {}
    for (name, color), channel in zip(CHANNELS, pixels, strict=True):
        hist, edges = np.histogram(channel, bins=64, range=(0, 255), density=True)
        ax.plot((edges[:-1] + edges[1:]) / 2, hist, color=color, label=name)
        stats[name] = {
            "mean": significant(float(channel.mean())),
            "std": significant(float(channel.std())),
        }
    stats["images"] = int(len(rows))
    ax.set_xlabel("pixel intensity (0-255)")
    ax.set_ylabel("density")
    ax.set_title(f"Pixel intensity per channel ({len(rows)} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    return stats


def group_summary(frame: pd.DataFrame) -> dict[str, Any] | None:
    """Groups and how they spread over splits; None when the dataset has no group column."""
    if "group" not in frame:
        return None
    groups = _cells(frame["group"])
    has = groups != ""
    if not has.any():
        return None
    per_group = groups[has].value_counts()
    splits_per_group = frame.loc[has, "split"].groupby(groups[has]).nunique()
    return {
        "num_groups": int(len(per_group)),
        "images_per_group": {
            "max": int(per_group.max()),
            "mean": significant(float(per_group.mean())),
        },
        "groups_per_split": {
            split: int(groups[has & (frame["split"] == split)].nunique()) for split in SPLITS
        },
        # should be 0: a group in two splits leaks its images into evaluation
        "groups_in_several_splits": int((splits_per_group > 1).sum()),
    }


def regression_eda(
    root: Path,
    frame: pd.DataFrame,
    target_name: str,
    metadata_columns: list[str],
    target_vs: str,
    samples: int,
    intensity_samples: int,
    seed: int,
    figures: Path,
    data_report: dict | None = None,
) -> dict[str, Any]:
    """Write the regression EDA figures of all splits into ``figures`` and return the summary
    (plain JSON types, no NaN)."""
    check_target_vs(target_vs, metadata_columns)
    absent = [c for c in metadata_columns if c not in frame.columns]
    if absent:
        raise DataError(
            f"eda: metadata column(s) {', '.join(absent)} not in the split manifests "
            "(rerun the prepare and split stages)"
        )
    if frame.empty:
        raise DataError("eda: the split manifests hold no images")
    root, figures = Path(root), Path(figures)
    figures.mkdir(parents=True, exist_ok=True)

    target = _target(frame)
    numeric = {c: v for c in metadata_columns if (v := numeric_values(frame[c])) is not None}

    target_histogram(frame, target_name, figures / "target_histogram.png")
    sample_grid(root, frame, target_name, samples, seed, figures / "samples.png")
    correlations = correlation(frame, target_name, numeric, figures / "correlation.png")
    target_vs_metadata(frame, target_name, target_vs, figures / "target_vs_metadata.png")
    intensity = pixel_intensity(
        root, frame, intensity_samples, seed, figures / "pixel_intensity.png"
    )
    sizes = image_sizes(frame, figures / "image_sizes.png")
    log.info("eda: %d images, figures in %s", len(frame), figures)

    return {
        "task": "regression",
        "target": target_name,
        "num_images": int(len(frame)),
        "images_per_split": {split: int((frame["split"] == split).sum()) for split in SPLITS},
        "target_stats": {
            "all": target_stats(target),
            **{split: target_stats(target[frame["split"] == split]) for split in SPLITS},
        },
        "missing": missing_summary(data_report),
        "groups": group_summary(frame),
        "correlation_with_target": correlations,
        "metadata_columns": [str(c) for c in metadata_columns],
        "image_size": sizes,
        "pixel_intensity": intensity,
    }
