"""Regression's evaluate stage: RMSE, MAE and R2 in the target's own units, the prediction and
worst-prediction tables, the error per target bin, the REC curve, predicted-vs-actual and
residual plots and the images with the largest errors."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from visionpipe.core.image import evaluate as image_evaluate  # noqa: E402
from visionpipe.core.io import save_figure, write_csv  # noqa: E402
from visionpipe.core.params import Params  # noqa: E402
from visionpipe.core.plots import plot_image_grid  # noqa: E402
from visionpipe.core.sources.table import REGRESSION_COLUMNS  # noqa: E402
from visionpipe.tasks.regression.model import TASK, RegressionTask, target_values  # noqa: E402
from visionpipe.tasks.regression.model.targets import regression_metrics  # noqa: E402

log = logging.getLogger("visionpipe.evaluate")


def evaluate(params: Params, args: argparse.Namespace) -> None:
    image_evaluate.evaluate(TASK(), write_results, params, args)


#: quantile bins of the true target in tables/by_target_bin.csv; a target with at most
#: DISCRETE_VALUES distinct values (grades, counts) gets one row per value instead
ERROR_BINS = 5
DISCRETE_VALUES = 10
#: what ``dvc metrics show`` compares (the transform and the rest stay in details.json)
HEADLINE = ("rmse", "mae", "r2", "bias", "median_abs_error", "max_abs_error", "target_std")


def write_results(
    task: RegressionTask,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    manifest: pd.DataFrame,
    images: torch.Tensor,
    labels: list[str],
    params: Any,
    results_dir: Path,
    figures_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The test split's tables and figures; returns the headline metrics and the details."""
    name = labels[0]
    frame = prediction_table(manifest, task.values(outputs))
    true, pred = frame["true"].to_numpy(), frame["predicted"].to_numpy()
    metrics: dict[str, Any] = {"target": name, **regression_metrics(true, pred)}
    errors = frame["abs_error"].to_numpy()
    metrics.update(
        bias=float(frame["residual"].mean()),
        median_abs_error=float(np.median(errors)),
        max_abs_error=float(errors.max()),
        target_std=float(true.std()),
        transform=task.transform.to_dict(),
    )
    worst = frame.sort_values("abs_error", ascending=False, kind="stable")
    write_csv(results_dir / "predictions.csv", frame)
    write_csv(results_dir / "curves.csv", rec_curve(errors))
    write_csv(results_dir / "tables" / "worst.csv", worst)
    write_csv(results_dir / "tables" / "by_target_bin.csv", errors_by_bin(frame))
    log.info(
        "test RMSE %.4g, MAE %.4g, R2 %s (%s, %d images)",
        metrics["rmse"],
        metrics["mae"],
        "n/a" if metrics["r2"] is None else f"{metrics['r2']:.4f}",
        name,
        len(frame),
    )
    plot_predicted_vs_actual(frame, name, metrics, figures_dir / "predicted_vs_actual.png")
    plot_residuals(frame, name, figures_dir / "residuals.png")
    shown = worst.head(params.evaluate.draw_images)
    plot_image_grid(
        images[torch.tensor(shown.index.tolist(), dtype=torch.long)],
        [f"{t:.3g} \u2192 {p:.3g}" for t, p in zip(shown["true"], shown["predicted"], strict=True)],
        figures_dir / "worst_predictions.png",
        f"Largest errors: true \u2192 predicted {name} ({len(shown)} of {len(frame)})",
        empty_text="no predictions drawn (evaluate.draw_images: 0)",
    )
    headline = {k: metrics[k] for k in HEADLINE if k in metrics}
    return headline, metrics


def prediction_table(manifest: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    """One row per test image in split order (index = position): the ``true`` target, the
    prediction, residual (predicted - true) and absolute error, then group and metadata."""
    true = target_values(manifest)
    frame = pd.DataFrame(
        {
            "path": manifest["path"].to_numpy(),
            "true": true,
            "predicted": np.round(predicted, 6),
            "residual": np.round(predicted - true, 6),
            "abs_error": np.round(np.abs(predicted - true), 6),
        }
    )
    extra = [c for c in manifest.columns if c == "group" or c not in REGRESSION_COLUMNS]
    for column in extra:
        frame[column] = manifest[column].to_numpy()
    return frame


def rec_curve(abs_errors: np.ndarray) -> pd.DataFrame:
    """Regression error characteristic: the share of samples within each error tolerance.

    The regression counterpart of a ROC curve (Bi and Bennett, 2003), in the ``curve, class,
    point, x, y`` layout of curves.csv: a step at every distinct absolute error, from (0, share
    of exact predictions) to (max error, 1).
    """
    errors = np.sort(np.asarray(abs_errors, dtype=np.float64))
    tolerance = np.unique(errors)
    share = np.searchsorted(errors, tolerance, side="right") / max(len(errors), 1)
    if not len(tolerance) or tolerance[0] > 0:
        tolerance, share = np.r_[0.0, tolerance], np.r_[0.0, share]
    return pd.DataFrame(
        {
            "curve": "rec",
            "class": "all",
            "point": np.arange(len(tolerance)),
            "x": np.round(tolerance, 6),
            "y": np.round(share, 6),
        }
    )


def errors_by_bin(frame: pd.DataFrame, bins: int = ERROR_BINS) -> pd.DataFrame:
    """Error per quantile bin of the true target (per value for a target with few distinct
    values, where quantile edges would collapse): where the model is off, and which way."""
    if frame["true"].nunique() <= DISCRETE_VALUES:
        binned = frame["true"].map(lambda v: f"{v:.6g}")
    else:
        binned = pd.qcut(frame["true"], bins, duplicates="drop")
    rows = []
    for interval, part in frame.groupby(binned, observed=True):
        rows.append(
            {
                "bin": str(interval),
                "count": int(len(part)),
                "true_mean": float(part["true"].mean()),
                "predicted_mean": float(part["predicted"].mean()),
                "bias": float(part["residual"].mean()),
                "mae": float(part["abs_error"].mean()),
                "rmse": float(np.sqrt((part["residual"] ** 2).mean())),
            }
        )
    columns = ["bin", "count", "true_mean", "predicted_mean", "bias", "mae", "rmse"]
    return pd.DataFrame(rows, columns=columns)


def plot_predicted_vs_actual(
    frame: pd.DataFrame, name: str, metrics: dict[str, Any], path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(frame["true"], frame["predicted"], s=10, alpha=0.5)
    lo = float(min(frame["true"].min(), frame["predicted"].min()))
    hi = float(max(frame["true"].max(), frame["predicted"].max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="predicted = actual")
    r2 = "n/a" if metrics["r2"] is None else f"{metrics['r2']:.3f}"
    ax.set_title(f"Test: RMSE {metrics['rmse']:.3g}, MAE {metrics['mae']:.3g}, R\u00b2 {r2}")
    ax.set_xlabel(f"actual {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)


def plot_residuals(frame: pd.DataFrame, name: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(frame["true"], frame["residual"], s=10, alpha=0.5)
    ax.axhline(0, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel(f"actual {name}")
    ax.set_ylabel("residual (predicted - actual)")
    ax.set_title("Test residuals against the target")
    fig.tight_layout()
    save_figure(path, fig)
