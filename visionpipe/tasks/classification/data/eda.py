"""Exploratory figures and a JSON summary of the split manifests (classification)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from visionpipe.core.eda import image_sizes  # noqa: E402
from visionpipe.core.images import load_images  # noqa: E402
from visionpipe.core.io import save_figure  # noqa: E402
from visionpipe.core.manifests import SPLITS  # noqa: E402


def class_distribution(manifest: pd.DataFrame, classes: list[str], path: Path) -> pd.DataFrame:
    counts = (
        manifest.groupby(["label", "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=classes, columns=list(SPLITS), fill_value=0)
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(classes)), 4))
    counts.plot.bar(ax=ax, stacked=True, color=["#4C72B0", "#DD8452", "#55A868"])
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    save_figure(path, fig)
    return counts


def _class_sample(
    root: Path, manifest: pd.DataFrame, label: str, n: int, seed: int, size: int
) -> torch.Tensor:
    """Up to ``n`` images of one class, drawn with ``seed``, decoded at ``size``."""
    rows = manifest[manifest["label"] == label]
    rows = rows.sample(min(n, len(rows)), random_state=seed)
    return load_images(root, rows["path"].tolist(), size, desc=f"{label} ({size}px)")


def sample_grid(
    root: Path,
    manifest: pd.DataFrame,
    classes: list[str],
    per_class: int,
    seed: int,
    path: Path,
) -> None:
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(1.4 * per_class, 1.5 * len(classes)),
        squeeze=False,
    )
    for r, label in enumerate(classes):
        images = _class_sample(root, manifest, label, per_class, seed, 96)
        for c in range(per_class):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c].permute(1, 2, 0).numpy())
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    fig.suptitle("Samples per class")
    fig.tight_layout()
    save_figure(path, fig)


def pixel_intensity(
    root: Path,
    manifest: pd.DataFrame,
    classes: list[str],
    per_class: int,
    seed: int,
    path: Path,
) -> dict[str, Any]:
    """Histogram of gray levels per class, from up to ``per_class`` images each."""
    fig, ax = plt.subplots(figsize=(6, 4))
    stats = {}
    for label in classes:
        gray = _class_sample(root, manifest, label, per_class, seed, 64).float()
        gray = gray.mean(1).numpy()
        hist, edges = np.histogram(gray, bins=64, range=(0, 255), density=True)
        ax.plot((edges[:-1] + edges[1:]) / 2, hist, label=label)
        per_image = gray.reshape(len(gray), -1).mean(1)
        stats[label] = {
            "mean": float(gray.mean()),
            "std": float(gray.std()),
            "image_mean_min": float(per_image.min()),
            "image_mean_max": float(per_image.max()),
            "images": int(len(gray)),
        }
    ax.set_xlabel("pixel intensity (0-255)")
    ax.set_ylabel("density")
    ax.set_title("Pixel intensity per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    return stats


def classification_eda(
    root: Path,
    frame: pd.DataFrame,
    samples_per_class: int,
    intensity_per_class: int,
    seed: int,
    figures: Path,
) -> dict[str, Any]:
    """Class distribution, samples, image sizes and pixel intensities of all splits."""
    classes = sorted(frame["label"].astype(str).unique())
    counts = class_distribution(frame, classes, figures / "class_distribution.png")
    sample_grid(root, frame, classes, samples_per_class, seed, figures / "samples.png")
    sizes = image_sizes(frame, figures / "image_sizes.png")
    intensity = pixel_intensity(
        root, frame, classes, intensity_per_class, seed, figures / "pixel_intensity.png"
    )
    per_class = counts.sum(axis=1)
    return {
        "task": "classification",
        "num_images": int(len(frame)),
        "num_classes": len(classes),
        "images_per_split": {k: int(v) for k, v in counts.sum(axis=0).items()},
        "images_per_class": {k: int(v) for k, v in per_class.items()},
        "per_class_and_split": {
            c: {k: int(v) for k, v in row.items()} for c, row in counts.iterrows()
        },
        "imbalance_ratio": float(per_class.max() / per_class.min()),
        "image_size": sizes,
        "pixel_intensity": intensity,
    }
