"""Image regression: a numeric target per image (plant biomass, defect probability) from a table.

The model is trained on the target through a transform fitted on the train split (log1p and
standardization, :mod:`visionpipe.targets`); everything reported is mapped back to the target's
own units first. Groups (e.g. one plant photographed on many days) never span two splits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from visionpipe.eda_regression import regression_eda  # noqa: E402
from visionpipe.errors import UserError  # noqa: E402
from visionpipe.evaluation import plot_image_grid  # noqa: E402
from visionpipe.io import save_figure, write_csv  # noqa: E402
from visionpipe.sources.folder import ScanResult  # noqa: E402
from visionpipe.sources.table import (  # noqa: E402
    REGRESSION_COLUMNS,
    regression_report,
    scan_regression_table,
)
from visionpipe.split import split_regression  # noqa: E402
from visionpipe.targets import TargetTransform, regression_loss, regression_metrics  # noqa: E402
from visionpipe.tasks.image import ImageTask  # noqa: E402

log = logging.getLogger(__name__)

#: quantile bins of the true target in tables/by_target_bin.csv; a target with at most
#: DISCRETE_VALUES distinct values (grades, counts) gets one row per value instead
ERROR_BINS = 5
DISCRETE_VALUES = 10


class RegressionTask(ImageTask):
    name = "regression"
    monitor_modes = {"loss": "min", "rmse": "min", "mae": "min", "r2": "max"}
    default_monitor = "val_rmse"

    def __init__(self) -> None:
        self.transform: TargetTransform | None = None

    # --- data ------------------------------------------------------------------------------

    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        d = params.data
        if not d.table:
            raise UserError(
                "data.table: regression reads its targets from a table (.csv, .xlsx) inside "
                f"data.path ({d.path}); set data.table and data.target_column"
            )
        result = scan_regression_table(
            d.path,
            d.table,
            d.sheet,
            d.image_column,
            d.target_column,
            d.group_column,
            d.metadata_columns,
        )
        return result, regression_report(result)

    def split(self, manifest: pd.DataFrame, params: Any) -> pd.DataFrame:
        s = params.split
        return split_regression(
            manifest,
            s.train,
            s.val,
            s.test,
            params.base.seed,
            "group",
            s.stratify_bins,
            group_name=params.data.group_column,
        )

    def eda(
        self,
        frame: pd.DataFrame,
        params: Any,
        figures: Path,
        data_report: dict | None,
        splits: Path,
    ) -> dict[str, Any]:
        return regression_eda(
            Path(params.data.path),
            frame,
            params.data.target_column,
            list(params.data.metadata_columns),
            params.eda.target_vs,
            params.eda.samples,
            params.eda.intensity_samples,
            params.base.seed,
            figures,
            data_report,
        )

    # --- model and targets -------------------------------------------------------------------

    def labels(self, manifest: pd.DataFrame, params: Any) -> list[str]:
        return [params.data.target_column]

    def fit_targets(self, train_manifest: pd.DataFrame, params: Any) -> dict[str, Any]:
        r = params.regression
        self.transform = TargetTransform.fit(_values(train_manifest), r.log1p, r.standardize)
        log.info("target transform (fitted on train): %s", self.transform.to_dict())
        return {"target_transform": self.transform.to_dict()}

    def load_meta(self, meta: dict[str, Any]) -> None:
        """From a checkpoint's meta, or from an exported model's model.json (under output)."""
        found = meta.get("target_transform") or meta.get("output", {}).get("target_transform")
        if not found:
            raise UserError("a regression model without a target_transform in its metadata")
        self.transform = TargetTransform.from_dict(found)

    def head_hidden(self, params: Any) -> int:
        return params.regression.head_hidden

    def _fitted(self) -> TargetTransform:
        if self.transform is None:  # a programming error, not a user's
            raise RuntimeError("regression task: fit_targets or load_meta first")
        return self.transform

    def targets(self, manifest: pd.DataFrame, labels: list[str]) -> torch.Tensor:
        return self._fitted().forward(torch.tensor(_values(manifest), dtype=torch.float32))

    def criterion(
        self, params: Any, labels: list[str], train_targets: torch.Tensor
    ) -> torch.nn.Module:
        if params.train.class_weights != "none":
            raise UserError("train.class_weights: regression has no classes; set it to none")
        return regression_loss(params.regression.loss, params.regression.huber_delta)

    def values(self, outputs: torch.Tensor) -> np.ndarray:
        """Model outputs (N, 1) -> predictions in target units (float64)."""
        return self._fitted().inverse(outputs.double().reshape(-1)).numpy()

    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        true = self._fitted().inverse(targets.double().reshape(-1)).numpy()
        m = regression_metrics(true, self.values(outputs))
        return {k: float(m[k]) for k in ("rmse", "mae", "r2") if m[k] is not None}

    # --- evaluation and deployment -----------------------------------------------------------

    def evaluate(
        self,
        outputs: torch.Tensor,
        targets: torch.Tensor,
        manifest: pd.DataFrame,
        images: torch.Tensor,
        labels: list[str],
        params: Any,
        results_dir: Path,
        figures_dir: Path,
    ) -> dict[str, Any]:
        name = labels[0]
        frame = prediction_table(manifest, self.values(outputs))
        true, pred = frame["true"].to_numpy(), frame["predicted"].to_numpy()
        metrics: dict[str, Any] = {"target": name, **regression_metrics(true, pred)}
        errors = frame["abs_error"].to_numpy()
        metrics.update(
            bias=float(frame["residual"].mean()),
            median_abs_error=float(np.median(errors)),
            max_abs_error=float(errors.max()),
            target_std=float(true.std()),
            transform=self._fitted().to_dict(),
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
        shown = worst.head(params.evaluate.mistakes_grid)
        plot_image_grid(
            images[torch.tensor(shown.index.tolist(), dtype=torch.long)],
            [
                f"{t:.3g} \u2192 {p:.3g}"
                for t, p in zip(shown["true"], shown["predicted"], strict=True)
            ],
            figures_dir / "worst_predictions.png",
            f"Largest errors: true \u2192 predicted {name} ({len(shown)} of {len(frame)})",
            empty_text="no predictions drawn (evaluate.mistakes_grid: 0)",
        )
        return metrics

    def prediction_records(self, outputs: torch.Tensor, labels: list[str]) -> list[dict]:
        return [{"value": round(float(v), 6), "target": labels[0]} for v in self.values(outputs)]

    def output_description(self) -> dict[str, Any]:
        t = self._fitted()
        value = f"output * {t.std!r} + {t.mean!r}"
        return {
            "meaning": "the target in training space, one value per image: "
            + (f"value = expm1({value})" if t.log1p else f"value = {value}"),
            "target_transform": t.to_dict(),
        }

    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        return {
            "max_abs_diff": float((reference.float() - other.float()).abs().max()),
            "max_abs_diff_target_units": float(
                np.abs(self.values(reference) - self.values(other)).max()
            ),
        }


def _values(manifest: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(manifest["target"]).to_numpy(dtype=np.float64)


def prediction_table(manifest: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    """One row per test image in split order (index = position): the ``true`` target, the
    prediction, residual (predicted - true) and absolute error, then group and metadata."""
    true = _values(manifest)
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
