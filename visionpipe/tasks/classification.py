"""Image classification: class folders or a labels table, stratified split, cross-entropy with
optional class weights, sklearn metrics, confusion matrices and one-vs-rest curves."""

from __future__ import annotations

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
    f1_score,
    precision_recall_fscore_support,
)

from visionpipe import eda
from visionpipe.class_weights import class_weights
from visionpipe.errors import DataError, UserError
from visionpipe.evaluation import (
    one_vs_rest_curves,
    plot_confusion,
    plot_curves,
    plot_image_grid,
)
from visionpipe.io import write_csv
from visionpipe.sources.folder import ScanResult, data_report, scan_folder
from visionpipe.sources.table import scan_table, table_report
from visionpipe.split import split_manifest
from visionpipe.tasks.image import ImageTask

log = logging.getLogger(__name__)


class ClassificationTask(ImageTask):
    name = "classification"
    monitor_modes = {"accuracy": "max", "f1_macro": "max", "loss": "min"}
    default_monitor = "val_f1_macro"

    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        """Labels from ``data.table`` when it is set, else from the class folders."""
        d = params.data
        if d.table:
            result = scan_table(d.path, d.table, d.sheet, d.image_column, d.label_column, d.classes)
            return result, table_report(result)
        result = scan_folder(d.path)
        extra = [c for c in result.classes if d.classes and c not in d.classes]
        if extra:
            raise DataError(
                f"{Path(d.path) / extra[0]}: class folder not in data.classes "
                f"({', '.join(d.classes)})"
            )
        return result, data_report(result)

    def split(self, manifest: pd.DataFrame, params: Any) -> pd.DataFrame:
        s = params.split
        return split_manifest(manifest, s.train, s.val, s.test, params.base.seed)

    def eda(
        self,
        frame: pd.DataFrame,
        params: Any,
        figures: Path,
        data_report: dict | None,
        splits: Path,
    ) -> dict[str, Any]:
        return eda.classification_eda(
            Path(params.data.path),
            frame,
            params.eda.samples,
            params.eda.intensity_samples,
            params.base.seed,
            figures,
        )

    def labels(self, manifest: pd.DataFrame, params: Any) -> list[str]:
        return sorted(manifest["label"].astype(str).unique())

    def validate(self, params: Any, labels: list[str]) -> None:
        check_classes("evaluate.binary_positive", params.evaluate.binary_positive, labels)

    def targets(self, manifest: pd.DataFrame, labels: list[str]) -> torch.Tensor:
        index = {name: i for i, name in enumerate(labels)}
        unknown = sorted(set(manifest["label"]) - set(index))
        if unknown:
            raise UserError(f"class {unknown[0]!r} is not in the model's class index {labels}")
        return torch.tensor([index[v] for v in manifest["label"]], dtype=torch.long)

    def criterion(
        self, params: Any, labels: list[str], train_targets: torch.Tensor
    ) -> torch.nn.Module:
        weights = class_weights(params.train.class_weights, labels, train_targets)
        if weights is not None:
            log.info("class weights: %s", dict(zip(labels, weights.tolist(), strict=True)))
        return torch.nn.CrossEntropyLoss(
            weight=weights, label_smoothing=params.train.label_smoothing
        )

    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        pred = outputs.argmax(1).numpy()
        true = targets.numpy()
        return {
            "accuracy": float(accuracy_score(true, pred)),
            "f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
        }

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
        cfg = params.evaluate
        probs = torch.softmax(outputs.float(), 1).numpy()
        pred = probs.argmax(1)
        true = targets.numpy()
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
            metrics["binary"] = binary_metrics(true, probs, labels, cfg.binary_positive)

        frame = prediction_table(manifest, true, probs, labels)
        # most confident mistakes first: the ones a threshold on confidence would not catch
        wrong = frame[frame["correct"] == 0].sort_values(
            "confidence", ascending=False, kind="stable"
        )
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
        )
        write_csv(results_dir / "predictions.csv", frame)
        write_csv(results_dir / "curves.csv", long_curves(roc, pr))
        tables = {
            "wrong.csv": wrong,
            "confident_wrong.csv": confident,
            "classification_report.csv": report_table(report, labels),
        }
        for name, table in tables.items():
            write_csv(results_dir / "tables" / name, table)
        self._log_summary(metrics)

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
        plot_mistakes(
            wrong.head(cfg.mistakes_grid), len(wrong), images, figures_dir / "mistakes.png"
        )
        return metrics

    def prediction_records(self, outputs: torch.Tensor, labels: list[str]) -> list[dict]:
        probs = torch.softmax(outputs.float(), 1)
        conf, idx = probs.max(1)
        return [
            {"class": labels[i], "confidence": round(float(c), 6)}
            for i, c in zip(idx.tolist(), conf.tolist(), strict=True)
        ]

    def output_description(self) -> dict[str, Any]:
        return {"meaning": "logits, one per label (softmax gives the class probabilities)"}

    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        return {
            "max_abs_diff": float((reference - other).abs().max()),
            "class_agreement": float((reference.argmax(1) == other.argmax(1)).float().mean()),
        }

    @staticmethod
    def _log_summary(metrics: dict[str, Any]) -> None:
        binary = metrics.get("binary", {}).get("accuracy")
        log.info(
            "test accuracy %.4f, macro F1 %.4f%s",
            metrics["accuracy"],
            metrics["f1_macro"],
            "" if binary is None else f", binary accuracy {binary:.4f}",
        )


def check_classes(key: str, names: list[str], labels: list[str]) -> None:
    """Fail early when a param names a class the model does not have."""
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise UserError(f"{key}: {unknown[0]!r} is not a class; classes: {', '.join(labels)}")


def binary_metrics(
    true: np.ndarray, probs: np.ndarray, labels: list[str], positive: list[str]
) -> dict[str, Any]:
    """Collapse the classes into negative/positive (e.g. functional vs defective).

    A sample is predicted positive when the probabilities of the positive classes add up to at
    least 0.5: the model's own estimate that the sample is positive, which an argmax over the
    individual classes would ignore when the mass is spread over several positive classes.
    """
    check_classes("evaluate.binary_positive", positive, labels)
    pos_ids = [labels.index(p) for p in positive]
    t = np.isin(true, pos_ids)
    p = probs[:, pos_ids].sum(1) >= 0.5
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, average="binary", zero_division=0)
    return {
        "positive_classes": list(positive),
        "accuracy": float((t == p).mean()),
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


def long_curves(roc: pd.DataFrame, pr: pd.DataFrame) -> pd.DataFrame:
    """ROC and PR points in the shared ``curve, class, point, x, y`` layout of curves.csv
    (plotted by .dvc/plots/classification_curves.json), thresholds kept."""
    parts = [
        frame.rename(columns={xc: "x", yc: "y"}).assign(curve=name)
        for name, frame, xc, yc in (("roc", roc, "fpr", "tpr"), ("pr", pr, "recall", "precision"))
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
        empty_text="no mistakes" if total == 0 else "no mistakes drawn (evaluate.mistakes_grid: 0)",
    )
