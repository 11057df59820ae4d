"""Tasks with one output vector per image (classification, regression): the model side their
shared train, evaluate and export stages (visionpipe.core.image) ask of them: labels, targets,
loss, per-epoch metrics, what the output means and how far an export may drift.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from visionpipe.core.task import TaskModel

#: (uint8 images B x 3 x H x W, targets, generator) -> (float images, training targets)
BatchMixer = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]
]


class ImageTask(TaskModel):
    """A task whose model maps an image to one output vector."""

    # --- model and targets -----------------------------------------------------------------

    @abstractmethod
    def labels(self, manifest: pd.DataFrame, params: Any) -> list[str]:
        """Output names (class index, or the target's name) derived from the training manifest."""

    def fit_targets(self, train_manifest: pd.DataFrame, params: Any) -> dict[str, Any]:
        """Fit what the targets need on the train split only (e.g. a target transform).

        Returns entries for the checkpoint's metadata; :meth:`load_meta` restores them.
        """
        return {}

    def load_meta(self, meta: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`fit_targets` fitted, from a checkpoint's or export's metadata."""

    def head_hidden(self, params: Any) -> int:
        """Width of a hidden layer in the new head (0: one linear layer)."""
        return 0

    def validate(self, params: Any, labels: list[str]) -> None:  # noqa: B027 - optional hook
        """Fail early (one line) when a param does not fit the model's labels."""

    @abstractmethod
    def targets(self, manifest: pd.DataFrame, labels: list[str]) -> torch.Tensor:
        """Manifest rows -> target tensor, in the space the model is trained in."""

    @abstractmethod
    def criterion(
        self, params: Any, labels: list[str], train_targets: torch.Tensor
    ) -> torch.nn.Module:
        """The training loss (class weights, smoothing or a regression loss, from params)."""

    def batch_mixer(self, params: Any, labels: list[str]) -> BatchMixer | None:
        """What blends each training batch and its targets (classification: MixUp, CutMix);
        None: batches train as augmented."""
        return None

    def sample_weights(self, params: Any, train_targets: torch.Tensor) -> torch.Tensor | None:
        """One draw weight per training image (classification: ``classification.sampling``);
        None: every epoch goes through each image once."""
        return None

    @abstractmethod
    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation metrics logged every epoch (keys without the ``val_`` prefix)."""

    def per_label_metrics(
        self, outputs: torch.Tensor, targets: torch.Tensor, labels: list[str]
    ) -> dict[str, float]:
        """One figure per label (classification: each class's F1), where a task has them:
        export compares them between fp32 and INT8, so a class that quantization hurts is
        named."""
        return {}

    def calibrate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Fit what turns the trained model's validation ``outputs`` into calibrated
        confidences (classification: a temperature); entries for the checkpoint's metadata,
        restored by :meth:`load_meta`."""
        return {}

    # --- evaluation and deployment ---------------------------------------------------------

    def needs_val_outputs(self, params: Any) -> bool:
        """Whether evaluate should run the model on the validation split first (for
        :meth:`fit_on_val`)."""
        return False

    def fit_on_val(  # noqa: B027 - optional hook
        self, outputs: torch.Tensor, targets: torch.Tensor, labels: list[str], params: Any
    ) -> None:
        """Choose what evaluate's decisions need from the validation split's ``outputs``
        (classification: the binary threshold), never from test."""

    @abstractmethod
    def output_description(self) -> dict[str, Any]:
        """What the model's raw output means (``meaning`` and what maps it to a prediction),
        for the exported model's JSON."""

    #: whether a prediction carries a confidence (what a threshold target is resolved on)
    reports_confidence = False

    def confidences(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per image, the confidence a deployed model reports and whether its prediction is
        right (what a low-confidence threshold target is resolved on); only asked of a task
        whose ``reports_confidence`` is true."""
        raise NotImplementedError(f"{self.name} predictions carry no confidence")

    @abstractmethod
    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        """How far an exported model's outputs are from the PyTorch model's."""
