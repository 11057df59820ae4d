"""The Task interface: everything a stage needs that differs between task families.

Stages never branch on ``base.task``: prepare asks the task for its source, split for its split,
eda for its figures, and train, evaluate, export and simulate hand their work to the task's
stage methods. Tasks with one output per image (classification, regression) share those through
:class:`visionpipe.tasks.image.ImageTask`; detection has its own.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.errors import UserError
from visionpipe.io import write_csv
from visionpipe.manifests import SPLITS
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

    def write_prepared(self, result: ScanResult, out: Path) -> None:
        """Write what prepare found: ``out/manifest.csv`` (detection adds its COCO file)."""
        write_csv(out / "manifest.csv", result.samples)

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
        splits: Path,
    ) -> dict[str, Any]:
        """Write the exploratory figures of all splits (``frame`` has a ``split`` column; the
        split stage's files are in ``splits``) and return the summary."""

    def write_splits(self, frame: pd.DataFrame, prepared: Path, out: Path) -> None:
        """Write ``out/{train,val,test}.csv`` from the split frame (detection adds its COCO
        files, made from what prepare wrote to ``prepared``)."""
        for name in SPLITS:
            write_csv(out / f"{name}.csv", frame[frame["split"] == name].drop(columns="split"))

    # --- the model stages: each task family runs them its own way -----------------------------

    @abstractmethod
    def train_stage(self, params: Any, args: argparse.Namespace) -> None:
        """Train on the train split (val for model selection); write the checkpoint, class
        index, dvclive folder and resumable state named in ``args``."""

    @abstractmethod
    def evaluate_stage(self, params: Any, args: argparse.Namespace) -> None:
        """Score the checkpoint on the test split: metrics, predictions, curves, figures."""

    @abstractmethod
    def export_stage(self, params: Any, args: argparse.Namespace) -> None:
        """Export the checkpoint for deployment, with parity and latency."""

    @abstractmethod
    def simulate_stage(self, params: Any, args: argparse.Namespace) -> None:
        """The conveyor loop over test frames with the exported model."""
