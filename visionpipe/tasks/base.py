"""The Task interface: everything a stage needs that differs between task families."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd
import torch


class Task(ABC):
    """One task family (classification, regression, detection): targets, loss and metrics."""

    name: str
    #: direction of each per-epoch validation metric, for best-checkpoint selection
    monitor_modes: dict[str, str]

    @abstractmethod
    def labels(self, manifest: pd.DataFrame) -> list[str]:
        """Output names (class index) derived from the training manifest."""

    @abstractmethod
    def targets(self, manifest: pd.DataFrame, labels: list[str]) -> torch.Tensor:
        """Manifest rows -> target tensor."""

    @abstractmethod
    def loss(self, params: Any, class_weights: torch.Tensor | None = None) -> torch.nn.Module:
        """The training criterion (``class_weights`` for tasks with classes)."""

    @abstractmethod
    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation metrics logged every epoch (keys without the ``val_`` prefix)."""

    @abstractmethod
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
        """Write the test-split artifacts; return the metrics dictionary.

        ``outputs``, ``targets``, ``manifest`` rows and ``images`` (uint8 ``N x 3 x H x W``, as
        the model saw them) are aligned by position, so figures can show the samples themselves
        (e.g. the worst mistakes). Tables go to ``results_dir``, images to ``figures_dir``.
        """

    @abstractmethod
    def prediction_records(self, outputs: torch.Tensor, labels: list[str]) -> list[dict]:
        """Per-sample prediction as plain values (with ``confidence`` where the task has one)."""

    @abstractmethod
    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        """How far an exported model's outputs are from the PyTorch model's."""
