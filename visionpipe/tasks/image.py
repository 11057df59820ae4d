"""Tasks with one output vector per image (classification, regression): one shared training
loop, evaluation, export and conveyor loop (visionpipe/image_stages.py), specialised by targets,
loss, metrics and artifacts.
"""

from __future__ import annotations

import argparse
from abc import abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from visionpipe import image_stages
from visionpipe.tasks.base import Task


class ImageTask(Task):
    """A task whose model maps an image to one output vector."""

    def train_stage(self, params: Any, args: argparse.Namespace) -> None:
        image_stages.train(self, params, args)

    def evaluate_stage(self, params: Any, args: argparse.Namespace) -> None:
        image_stages.evaluate(self, params, args)

    def export_stage(self, params: Any, args: argparse.Namespace) -> None:
        image_stages.export(self, params, args)

    def simulate_stage(self, params: Any, args: argparse.Namespace) -> None:
        image_stages.simulate(self, params, args)

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
