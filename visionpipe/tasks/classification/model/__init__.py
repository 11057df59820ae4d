"""Classification's model side: the class index, cross-entropy with optional class weights and
label smoothing, the per-epoch accuracy and macro F1, and the temperature fitted on val that
calibrates its confidences (train, evaluate and export use it)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from visionpipe.core.calibration import calibrate, softmax
from visionpipe.core.errors import UserError
from visionpipe.core.image.task import ImageTask
from visionpipe.tasks.classification.model.class_weights import class_weights

log = logging.getLogger(__name__)


class ClassificationTask(ImageTask):
    name = "classification"
    monitor_modes = {"accuracy": "max", "f1_macro": "max", "loss": "min"}
    default_monitor = "val_f1_macro"
    reports_confidence = True
    #: logits are divided by this before the softmax (1: uncalibrated, as before training)
    temperature: float = 1.0

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
        weights = class_weights(params.classification.class_weights, labels, train_targets)
        if weights is not None:
            log.info("class weights: %s", dict(zip(labels, weights.tolist(), strict=True)))
        return torch.nn.CrossEntropyLoss(
            weight=weights, label_smoothing=params.classification.label_smoothing
        )

    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        pred = outputs.argmax(1).numpy()
        true = targets.numpy()
        return {
            "accuracy": float(accuracy_score(true, pred)),
            "f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
        }

    def calibrate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Temperature scaling fitted on the validation split, applied only where it helps
        (visionpipe.core.calibration.calibrate; the elpv default is already calibrated)."""
        return calibrate(outputs, targets)

    def load_meta(self, meta: dict[str, Any]) -> None:
        self.temperature = float(meta.get("temperature", 1.0))

    def output_description(self) -> dict[str, Any]:
        return {
            "meaning": "logits, one per label; softmax(logits / temperature) gives the class "
            "probabilities, calibrated on the validation split",
            "temperature": self.temperature,
        }

    def confidences(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated top-class probability, as predict reports it, and argmax == label."""
        probs = softmax(outputs, self.temperature)
        return probs.max(1), probs.argmax(1) == targets.numpy()

    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        return {
            "max_abs_diff": float((reference - other).abs().max()),
            "class_agreement": float((reference.argmax(1) == other.argmax(1)).float().mean()),
        }


def check_classes(key: str, names: list[str], labels: list[str]) -> None:
    """Fail early when a param names a class the model does not have."""
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise UserError(f"{key}: {unknown[0]!r} is not a class; classes: {', '.join(labels)}")


TASK = ClassificationTask
