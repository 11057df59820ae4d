"""Task registry: stages ask the task, they never branch on its name."""

from __future__ import annotations

from visionpipe.errors import UserError
from visionpipe.tasks.base import Task
from visionpipe.tasks.classification import ClassificationTask
from visionpipe.tasks.detection import DetectionTask
from visionpipe.tasks.regression import RegressionTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "regression": RegressionTask,
    "detection": DetectionTask,
}


def get_task(name: str) -> Task:
    """A fresh task object (regression keeps its fitted target transform on it)."""
    if name not in TASKS:
        raise UserError(f"base.task: {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["Task", "get_task", "TASKS"]
