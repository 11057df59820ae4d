"""The figures shared by the tasks: confusion matrices, curves, image grids."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from visionpipe.core.io import save_figure  # noqa: E402


def plot_confusion(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: Path,
    title: str = "Confusion matrix",
    normalized: bool = False,
) -> None:
    """Counts with the row-normalized share in each cell (rows: true, columns: predicted).

    ``normalized`` writes the share alone (each row sums to 100%): on imbalanced test splits it
    is the per-class recall and where each class's misses go, which raw counts hide.
    """
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = 1.2 + 0.9 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                _cell_text(matrix[i, j], share[i, j], rows[i, 0], normalized),
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    save_figure(path, fig)


def _cell_text(count: int, share: float, row_total: int, normalized: bool) -> str:
    if not normalized:
        return f"{count}\n{share:.0%}"
    return f"{share:.0%}" if row_total else "\u2013"  # a class absent from the split: no share


def one_vs_rest_curves(
    true: np.ndarray, scores: np.ndarray, labels: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float | None], dict[str, float | None]]:
    """ROC and precision-recall curves of each class against the rest, in long format.

    Returns the ROC points (class, point, fpr, tpr, threshold), the PR points (class, point,
    recall, precision, threshold), and the area under each ROC curve and the average precision
    per class. ``point`` keeps each curve's order for the plot (fpr repeats on vertical steps).
    A class without positives (or without negatives) in ``true`` has no curve: its scores are
    None rather than the warnings and NaN that sklearn gives.
    """
    roc_parts, pr_parts = [], []
    auc: dict[str, float | None] = {}
    ap: dict[str, float | None] = {}
    for i, name in enumerate(labels):
        positive = true == i
        if positive.all() or not positive.any():
            auc[name] = ap[name] = None
            continue
        fpr, tpr, roc_thr = roc_curve(positive, scores[:, i])
        precision, recall, pr_thr = precision_recall_curve(positive, scores[:, i])
        auc[name] = float(roc_auc_score(positive, scores[:, i]))
        ap[name] = float(average_precision_score(positive, scores[:, i]))
        roc_parts.append(_curve_frame(name, {"fpr": fpr, "tpr": tpr}, roc_thr))
        # the last PR point (recall 0, precision 1) has no threshold
        pr_parts.append(_curve_frame(name, {"recall": recall, "precision": precision}, pr_thr))
    roc = _concat(roc_parts, ["class", "point", "fpr", "tpr", "threshold"])
    pr = _concat(pr_parts, ["class", "point", "recall", "precision", "threshold"])
    return roc, pr, auc, ap


def _curve_frame(name: str, xy: dict[str, np.ndarray], thresholds: np.ndarray) -> pd.DataFrame:
    n = len(next(iter(xy.values())))
    thr = np.full(n, np.nan)
    thr[: len(thresholds)] = thresholds
    return pd.DataFrame(
        {
            "class": name,
            "point": np.arange(n),
            **{k: np.round(v, 6) for k, v in xy.items()},
            "threshold": np.round(thr, 6),
        }
    )


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def plot_curves(
    points: pd.DataFrame,
    x: str,
    y: str,
    scores: dict[str, float | None],
    score_name: str,
    path: Path,
    title: str,
    chance_diagonal: bool | str = False,
    steps: bool = False,
) -> None:
    """One line per class of a long-format curve table, with each class's score in the legend.

    Classes without a curve (no positives in the split) are listed in the title, so that a
    missing line reads as missing data rather than as a plotting bug. ``steps`` draws a
    precision-recall curve as sklearn does (precision held until the next threshold);
    ``chance_diagonal`` draws y = x, labelled "chance" or by the string given.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if chance_diagonal:
        label = chance_diagonal if isinstance(chance_diagonal, str) else "chance"
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label=label)
    for name, score in scores.items():
        if score is None:
            continue
        curve = points[points["class"] == name].sort_values("point")
        ax.plot(
            curve[x],
            curve[y],
            lw=1.5,
            drawstyle="steps-post" if steps else "default",
            label=f"{name} ({score_name} {score:.3f})",
        )
    missing = [name for name, score in scores.items() if score is None]
    if missing:
        title += f"\nno test positives: {', '.join(missing)}"
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right" if chance_diagonal else "lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(path, fig)


def plot_image_grid(
    images: torch.Tensor,
    captions: Sequence[str],
    path: Path,
    title: str,
    empty_text: str = "nothing to show",
) -> None:
    """uint8 ``N x 3 x H x W`` images in a near-square grid with a caption under each.

    With no images it still writes a figure saying ``empty_text``: the file is a declared DVC
    plot, and an empty result is an answer worth showing.
    """
    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(4.5, 1.8), layout="constrained")
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", fontsize=12)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        save_figure(path, fig)
        return
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.3 * cols, 2.6 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())
        ax.set_title(textwrap.fill(caption, 26), fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(path, fig)


def plot_reliability(rows: pd.DataFrame, report: dict, path: Path, title: str) -> None:
    """The reliability diagram of :func:`visionpipe.core.calibration.calibration_report`:
    accuracy against mean confidence per bin, before and after the temperature, ECE in the
    legend."""
    plot_curves(
        rows.rename(columns={"confidence": "mean confidence"}),
        "mean confidence",
        "accuracy",
        {"uncalibrated": report["ece_before"], "calibrated": report["ece_after"]},
        "ECE",
        path,
        title,
        chance_diagonal="perfect calibration",
    )
