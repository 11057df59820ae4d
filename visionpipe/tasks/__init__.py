"""Task registry: stages ask the task, they never branch on its name."""

from __future__ import annotations

from visionpipe.errors import UserError
from visionpipe.tasks.base import Task
from visionpipe.tasks.classification import ClassificationTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"base.task: {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["Task", "get_task", "TASKS"]
