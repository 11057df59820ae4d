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
from visionpipe.core.image.task import BatchMixer, ImageTask
from visionpipe.core.thresholds import accuracy_threshold
from visionpipe.tasks.classification.model.class_weights import class_weights
from visionpipe.tasks.classification.model.mixing import batch_mixer
from visionpipe.tasks.classification.model.sampling import sample_weights

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

    def batch_mixer(self, params: Any, labels: list[str]) -> BatchMixer | None:
        cfg = params.classification
        return batch_mixer(cfg.mixup_alpha, cfg.cutmix_alpha, len(labels))

    def sample_weights(self, params: Any, train_targets: torch.Tensor) -> torch.Tensor | None:
        return sample_weights(params.classification.sampling, train_targets)

    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        pred = outputs.argmax(1).numpy()
        true = targets.numpy()
        return {
            "accuracy": float(accuracy_score(true, pred)),
            "f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
        }

    def per_label_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor, labels: list[str]
    ) -> dict[str, float]:
        scores = f1_score(
            targets.numpy(),
            outputs.argmax(1).numpy(),
            labels=list(range(len(labels))),
            average=None,
            zero_division=0,
        )
        return {f"f1_{name}": float(v) for name, v in zip(labels, scores, strict=True)}

    def calibrate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Temperature scaling fitted on the validation split, applied only where it helps
        (visionpipe.core.calibration.calibrate; the elpv default is already calibrated)."""
        return calibrate(outputs, targets)

    def load_meta(self, meta: dict[str, Any]) -> None:
        self.temperature = float(meta.get("temperature", 1.0))

    #: the binary threshold evaluate applies (``evaluate.binary_threshold``)
    binary_threshold: float = 0.5
    #: where it came from: ``fixed``, or ``val`` with that split's binary accuracy at it
    binary_threshold_from: dict[str, Any] | str = "fixed"

    def needs_val_outputs(self, params: Any) -> bool:
        cfg = params.evaluate
        return bool(cfg.binary_positive) and cfg.binary_threshold == "val"

    def fit_on_val(
        self, outputs: torch.Tensor, targets: torch.Tensor, labels: list[str], params: Any
    ) -> None:
        """The binary threshold with the best validation accuracy (calibrated probabilities
        of the positive classes summed, as evaluate scores test)."""
        probs = softmax(outputs, self.temperature)
        scores, positive = binary_scores(
            probs, targets.numpy(), labels, params.evaluate.binary_positive
        )
        self.binary_threshold = accuracy_threshold(scores, positive)
        self.binary_threshold_from = {
            "split": "val",
            "count": int(len(scores)),
            "val_accuracy": float(((scores >= self.binary_threshold) == positive).mean()),
            "val_accuracy_at_half": float(((scores >= 0.5) == positive).mean()),
        }
        log.info(
            "binary threshold %.4f chosen on val (val binary accuracy %.4f, at 0.5: %.4f)",
            self.binary_threshold,
            self.binary_threshold_from["val_accuracy"],
            self.binary_threshold_from["val_accuracy_at_half"],
        )

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


def binary_scores(
    probs: np.ndarray, true: np.ndarray, labels: list[str], positive: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The classes collapsed into negative/positive (``evaluate.binary_positive``): each
    sample's summed probability of the positive classes, and whether its class is one."""
    check_classes("evaluate.binary_positive", positive, labels)
    pos_ids = [labels.index(p) for p in positive]
    return probs[:, pos_ids].sum(1), np.isin(true, pos_ids)


TASK = ClassificationTask
