"""Detection's model side: Faster R-CNN with a state head or without one (detector), the images
and targets of a split (dataset), COCO mAP and state matching (metrics) and the engine hooks
(hooks), shared by train, evaluate and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visionpipe.core.checkpoint import read_checkpoint
from visionpipe.core.errors import UserError
from visionpipe.core.task import TaskModel
from visionpipe.tasks.detection.model.dataset import DetectionSet, load_split
from visionpipe.tasks.detection.model.detector import detector_from_checkpoint


class DetectionTask(TaskModel):
    name = "detection"
    monitor_modes = {"map": "max", "map_50": "max", "state_accuracy": "max", "loss": "min"}
    default_monitor = "val_map"

    def monitor(self, params: Any) -> str:
        """As for every task, and val_state_accuracy only where there is a state head."""
        key = super().monitor(params)
        if key == "val_state_accuracy" and not params.data.states:
            raise UserError(
                "train.monitor: val_state_accuracy needs states; data.states is [] (a plain "
                "detector), use val_map, val_map_50 or val_loss"
            )
        return key


def load_detector(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The detector saved by the train stage (eval mode) and its metadata."""
    state_dict, meta = read_checkpoint(path)
    if meta.get("task") != "detection":
        raise UserError(f"{path}: a {meta.get('task')} model, but base.task is detection")
    return detector_from_checkpoint(state_dict, meta).eval(), meta


def split_set(params: Any, meta: dict, gt: dict, name: str = "test") -> DetectionSet:
    """One split (``gt``: its COCO) decoded at the size the model was trained at."""
    return load_split(
        Path(params.data.path),
        gt,
        meta["states"],
        meta["min_size"],
        meta["max_size"],
        desc=f"decoding {name}",
        check=params.data.cache_check,
    )


def test_set(params: Any, meta: dict, gt: dict) -> DetectionSet:
    """The test split decoded at the size the model was trained at."""
    return split_set(params, meta, gt, "test")


TASK = DetectionTask
