"""Image classification: class index from the class folders, cross-entropy, sklearn metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from visionpipe.errors import UserError
from visionpipe.evaluation import plot_confusion
from visionpipe.io import write_csv
from visionpipe.tasks.base import Task

log = logging.getLogger(__name__)


class ClassificationTask(Task):
    name = "classification"
    monitor_modes = {"accuracy": "max", "f1_macro": "max", "loss": "min"}

    def labels(self, manifest: pd.DataFrame) -> list[str]:
        return sorted(manifest["label"].astype(str).unique())

    def targets(self, manifest: pd.DataFrame, labels: list[str]) -> torch.Tensor:
        index = {name: i for i, name in enumerate(labels)}
        unknown = sorted(set(manifest["label"]) - set(index))
        if unknown:
            raise UserError(f"class {unknown[0]!r} is not in the model's class index {labels}")
        return torch.tensor([index[v] for v in manifest["label"]], dtype=torch.long)

    def loss(self, params: Any) -> torch.nn.Module:
        return torch.nn.CrossEntropyLoss(label_smoothing=params.train.label_smoothing)

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
        labels: list[str],
        params: Any,
        results_dir: Path,
        figures_dir: Path,
    ) -> dict[str, Any]:
        probs = torch.softmax(outputs, 1).numpy()
        pred = probs.argmax(1)
        true = targets.numpy()
        ids = list(range(len(labels)))
        prec, rec, f1, support = precision_recall_fscore_support(
            true, pred, labels=ids, zero_division=0
        )
        metrics: dict[str, Any] = {
            "num_samples": int(len(true)),
            "accuracy": float(accuracy_score(true, pred)),
            "precision_macro": float(prec.mean()),
            "recall_macro": float(rec.mean()),
            "f1_macro": float(f1.mean()),
            "per_class": {
                name: {
                    "precision": float(prec[i]),
                    "recall": float(rec[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(labels)
            },
        }
        positive = params.evaluate.binary_positive
        if positive:
            metrics["binary"] = binary_metrics(true, probs, labels, positive)

        frame = pd.DataFrame(
            {
                "path": manifest["path"].to_numpy(),
                "true": [labels[i] for i in true],
                "predicted": [labels[i] for i in pred],
                "confidence": np.round(probs.max(1), 6),
            }
        )
        write_csv(results_dir / "predictions.csv", frame)
        self._log_summary(metrics)
        matrix = confusion_matrix(true, pred, labels=ids)
        plot_confusion(matrix, labels, figures_dir / "confusion_matrix.png")
        return metrics

    def prediction_records(self, outputs: torch.Tensor, labels: list[str]) -> list[dict]:
        probs = torch.softmax(outputs.float(), 1)
        conf, idx = probs.max(1)
        return [
            {"class": labels[i], "confidence": round(float(c), 6)}
            for i, c in zip(idx.tolist(), conf.tolist(), strict=True)
        ]

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
