"""Classification's evaluate stage: sklearn's report, binary (e.g. functional vs defective)
metrics, one-vs-rest ROC and PR curves, the all / wrong / confidently-wrong prediction tables,
confusion matrices, the most confident mistakes, and how well the confidences are calibrated
(ECE and the reliability diagram, before and after the temperature fitted on val). Every
probability here is the calibrated one, softmax(logits / temperature), as predict gives it."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from visionpipe.core.calibration import calibration_report, softmax
from visionpipe.core.image import evaluate as image_evaluate
from visionpipe.core.image.task import ImageTask
from visionpipe.core.io import write_csv
from visionpipe.core.params import Params
from visionpipe.core.plots import (
    one_vs_rest_curves,
    plot_confusion,
    plot_curves,
    plot_image_grid,
    plot_reliability,
)
from visionpipe.tasks.classification.model import TASK, binary_scores

log = logging.getLogger("visionpipe.evaluate")


def evaluate(params: Params, args: argparse.Namespace) -> None:
    image_evaluate.evaluate(TASK(), write_results, params, args)


def write_results(
    task: ImageTask,
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
    cfg = params.evaluate
    temperature = getattr(task, "temperature", 1.0)
    probs = softmax(outputs, temperature)
    pred = probs.argmax(1)
    true = targets.numpy()
    calibration, reliability_rows = calibration_report(softmax(outputs), probs, true, temperature)
    report = classification_report(
        true,
        pred,
        labels=list(range(len(labels))),
        target_names=labels,
        output_dict=True,
        zero_division=0,
    )
    metrics = report_metrics(report, labels, float(accuracy_score(true, pred)))
    if cfg.binary_positive:
        chosen = cfg.binary_threshold == "val"
        threshold = task.binary_threshold if chosen else cfg.binary_threshold
        metrics["binary"] = binary_metrics(true, probs, labels, cfg.binary_positive, threshold)
        metrics["binary"]["threshold_from"] = task.binary_threshold_from if chosen else "fixed"

    frame = prediction_table(manifest, true, probs, labels)
    # most confident mistakes first: the ones a threshold on confidence would not catch
    wrong = frame[frame["correct"] == 0].sort_values("confidence", ascending=False, kind="stable")
    confident = wrong[wrong["confidence"] >= cfg.confident_threshold]
    roc, pr, auc, ap = one_vs_rest_curves(true, probs, labels)
    metrics.update(
        num_wrong=int(len(wrong)),
        num_confident_wrong=int(len(confident)),
        confident_threshold=float(cfg.confident_threshold),
        roc_auc=auc,
        roc_auc_macro=mean_or_none(auc.values()),
        average_precision=ap,
        average_precision_macro=mean_or_none(ap.values()),
        ece=calibration["ece_after"],
        calibration=calibration,
    )
    write_csv(results_dir / "predictions.csv", frame)
    write_csv(results_dir / "curves.csv", long_curves(roc, pr, reliability_rows))
    tables = {
        "wrong.csv": wrong,
        "confident_wrong.csv": confident,
        "classification_report.csv": report_table(report, labels),
        "reliability.csv": reliability_rows,
    }
    for name, table in tables.items():
        write_csv(results_dir / "tables" / name, table)
    _log_summary(metrics)

    matrix = confusion_matrix(true, pred, labels=list(range(len(labels))))
    plot_confusion(matrix, labels, figures_dir / "confusion_matrix.png")
    plot_confusion(
        matrix,
        labels,
        figures_dir / "confusion_matrix_normalized.png",
        title="Confusion matrix (row-normalized)",
        normalized=True,
    )
    plot_curves(
        roc,
        "fpr",
        "tpr",
        auc,
        "AUC",
        figures_dir / "roc.png",
        "ROC, one vs rest",
        chance_diagonal=True,
    )
    plot_curves(
        pr,
        "recall",
        "precision",
        ap,
        "AP",
        figures_dir / "pr.png",
        "Precision-recall",
        steps=True,
    )
    plot_mistakes(wrong.head(cfg.draw_images), len(wrong), images, figures_dir / "mistakes.png")
    plot_reliability(
        reliability_rows,
        calibration,
        figures_dir / "reliability.png",
        f"Reliability on test (temperature {temperature:.3g}, fitted on val)",
    )
    return headline(metrics), metrics


def _log_summary(metrics: dict[str, Any]) -> None:
    binary = metrics.get("binary", {}).get("accuracy")
    log.info(
        "test accuracy %.4f, macro F1 %.4f%s",
        metrics["accuracy"],
        metrics["f1_macro"],
        "" if binary is None else f", binary accuracy {binary:.4f}",
    )


#: what ``dvc metrics show`` compares (per class and per-class curves stay in the tables)
HEADLINE = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc_macro",
    "average_precision_macro",
    "num_wrong",
    "num_confident_wrong",
    "ece",
)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a person compares between runs; binary accuracy, precision, recall and F1
    when ``evaluate.binary_positive`` names the positive classes."""
    out = {k: metrics[k] for k in HEADLINE}
    if "binary" in metrics:
        binary = metrics["binary"]
        hidden = {"positive_classes", "threshold_from"}
        if binary["threshold_from"] == "fixed":  # threshold 0.5: both say nothing new
            hidden |= {"threshold", "accuracy_at_half"}
        out["binary"] = {k: v for k, v in binary.items() if k not in hidden}
    return out


def binary_metrics(
    true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    positive: list[str],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Collapse the classes into negative/positive (e.g. functional vs defective).

    A sample is predicted positive when the probabilities of the positive classes add up to at
    least ``threshold`` (0.5, or the value chosen on val): the model's own estimate that the
    sample is positive, which an argmax over the individual classes would ignore when the mass
    is spread over several positive classes.
    """
    scores, t = binary_scores(probs, true, labels, positive)
    p = scores >= threshold
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, average="binary", zero_division=0)
    return {
        "positive_classes": list(positive),
        "threshold": float(threshold),
        "accuracy": float((t == p).mean()),
        "accuracy_at_half": float((t == (scores >= 0.5)).mean()),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
    }


def report_metrics(report: dict[str, Any], labels: list[str], accuracy: float) -> dict[str, Any]:
    """Headline and per-class metrics, all read from sklearn's classification report."""
    macro = report["macro avg"]
    return {
        "num_samples": int(report["weighted avg"]["support"]),
        "accuracy": accuracy,
        "precision_macro": float(macro["precision"]),
        "recall_macro": float(macro["recall"]),
        "f1_macro": float(macro["f1-score"]),
        "per_class": {
            name: {
                "precision": float(report[name]["precision"]),
                "recall": float(report[name]["recall"]),
                "f1": float(report[name]["f1-score"]),
                "support": int(report[name]["support"]),
            }
            for name in labels
        },
    }


def prediction_table(
    manifest: pd.DataFrame, true: np.ndarray, probs: np.ndarray, labels: list[str]
) -> pd.DataFrame:
    """One row per test sample, in test-split order (the index is the sample's position).

    ``true`` and ``predicted`` feed the DVC confusion plots; the ``p_<class>`` columns let a
    reader re-threshold or inspect near-misses without rerunning the model.
    """
    pred = probs.argmax(1)
    frame = pd.DataFrame(
        {
            "path": manifest["path"].to_numpy(),
            "true": [labels[i] for i in true],
            "predicted": [labels[i] for i in pred],
            "confidence": np.round(probs.max(1), 6),
            "correct": (pred == true).astype(int),
        }
    )
    for i, name in enumerate(labels):
        frame[f"p_{name}"] = np.round(probs[:, i], 6)
    return frame


def long_curves(
    roc: pd.DataFrame, pr: pd.DataFrame, reliability_rows: pd.DataFrame | None = None
) -> pd.DataFrame:
    """ROC, PR and reliability points in the shared ``curve, class, point, x, y`` layout of
    curves.csv (plotted by .dvc/plots/classification_curves.json), thresholds kept."""
    curves = [("roc", roc, "fpr", "tpr"), ("pr", pr, "recall", "precision")]
    if reliability_rows is not None:
        curves.append(("reliability", reliability_rows, "confidence", "accuracy"))
    parts = [
        frame.rename(columns={xc: "x", yc: "y"}).assign(curve=name)
        for name, frame, xc, yc in curves
    ]
    columns = ["curve", "class", "point", "x", "y", "threshold"]
    return pd.concat(parts, ignore_index=True)[columns]


def report_table(report: dict[str, Any], labels: list[str]) -> pd.DataFrame:
    """sklearn's classification report: the classes, then macro and weighted averages."""
    return pd.DataFrame(
        [
            {
                "class": name,
                "precision": round(report[name]["precision"], 6),
                "recall": round(report[name]["recall"], 6),
                "f1": round(report[name]["f1-score"], 6),
                "support": int(report[name]["support"]),
            }
            for name in [*labels, "macro avg", "weighted avg"]
        ]
    )


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean over the classes that have a score; None when none has."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def plot_mistakes(shown: pd.DataFrame, total: int, images: torch.Tensor, path: Path) -> None:
    """The images of ``shown`` (rows of the prediction table, indexed by sample position)."""
    captions = [
        f"{t} \u2192 {p} {c:.2f}"
        for t, p, c in zip(shown["true"], shown["predicted"], shown["confidence"], strict=True)
    ]
    plot_image_grid(
        images[torch.tensor(shown.index.tolist(), dtype=torch.long)],
        captions,
        path,
        f"Most confident mistakes ({len(shown)} of {total})",
        empty_text="no mistakes" if total == 0 else "no mistakes drawn (evaluate.draw_images: 0)",
    )
