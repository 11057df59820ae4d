"""The Task interface: everything a stage needs that differs between task families.

Stages never branch on ``base.task``: prepare asks the task for its source, split for its split,
eda for its figures, train for its targets, head and criterion, evaluate for its artifacts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from visionpipe.errors import UserError
from visionpipe.sources.folder import ScanResult


class Task(ABC):
    """One task family (classification, regression, detection): data, targets, loss, metrics."""

    name: str
    #: direction of each per-epoch validation metric, for best-checkpoint selection
    monitor_modes: dict[str, str]
    #: what ``train.monitor: auto`` means for this task
    default_monitor: str

    def monitor(self, params: Any) -> str:
        """``train.monitor`` resolved (``auto``: the task's default) and checked for this task."""
        key = params.train.monitor
        if key == "auto":
            return self.default_monitor
        if key.removeprefix("val_") not in self.monitor_modes:
            allowed = ", ".join(["auto", *(f"val_{m}" for m in self.monitor_modes)])
            raise UserError(
                f"train.monitor: {key!r} is not a {self.name} metric; use one of {allowed}"
            )
        return key

    # --- data: prepare, split, eda -------------------------------------------------------

    @abstractmethod
    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        """The manifest of usable samples from ``params.data``, and the data report."""

    @abstractmethod
    def split(self, manifest: pd.DataFrame, params: Any) -> pd.DataFrame:
        """``manifest`` with a ``split`` column (train/val/test): a pure function of its inputs."""

    @abstractmethod
    def eda(
        self,
        frame: pd.DataFrame,
        params: Any,
        figures: Path,
        data_report: dict | None,
    ) -> dict[str, Any]:
        """Write the exploratory figures of all splits (``frame`` has a ``split`` column) and
        return the summary."""

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

    @abstractmethod
    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation metrics logged every epoch (keys without the ``val_`` prefix)."""

    # --- evaluation and deployment ---------------------------------------------------------

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
        (e.g. the worst mistakes). Every task writes ``predictions.csv`` (with ``true`` and
        ``predicted`` columns) and ``curves.csv`` (``curve, class, point, x, y``) in
        ``results_dir``, the files dvc.yaml plots with ``${base.task}_*`` templates; other tables
        go to ``results_dir / "tables"``, images to ``figures_dir``.
        """

    @abstractmethod
    def prediction_records(self, outputs: torch.Tensor, labels: list[str]) -> list[dict]:
        """Per-sample prediction as plain values (with ``confidence`` where the task has one)."""

    @abstractmethod
    def output_description(self) -> dict[str, Any]:
        """What the model's raw output means (``meaning`` and what maps it to a prediction),
        for the exported model's JSON."""

    @abstractmethod
    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        """How far an exported model's outputs are from the PyTorch model's."""
