"""The Task interface: what the stages ask of a task family, split by the stages that ask it.

A task lives in ``visionpipe/tasks/<name>/`` as four parts, each imported only by the stages
that use it, so dvc.yaml can declare each stage's code exactly (an edit to evaluation code
reruns evaluate, not train):

- ``data``: a :class:`TaskData` (prepare, split and eda: sources, split rule, figures),
- ``model``: a :class:`TaskModel` (what train, evaluate and export share: model, targets, loss,
  per-epoch metrics),
- ``train``, ``evaluate``, ``export``: one module each, with a function of that name taking
  ``(params, args)``.

Stages never branch on ``base.task``: they ask the registry (visionpipe.tasks) for the part.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.core.errors import UserError
from visionpipe.core.io import write_csv
from visionpipe.core.manifests import SPLITS
from visionpipe.core.sources.folder import ScanResult


class TaskData(ABC):
    """The data stages of one task: what prepare, split and eda do with ``params.data``."""

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


class TaskModel(ABC):
    """What train, evaluate and export share for one task: its name and validation metrics."""

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
