"""Task registry: stages ask for a task's part by name; the part is imported only then.

A stage loads nothing of the other tasks, nor of its own task's other stages: prepare, split and
eda import ``visionpipe.tasks.<task>.data``, train/evaluate/export their own module (see
:data:`STAGE_MODULES`), which is what dvc.yaml declares through ``${base.task}``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from visionpipe.core import resume
from visionpipe.core.errors import UserError
from visionpipe.core.task import TaskData, TaskModel

REPO = Path(__file__).resolve().parents[2]

TASKS = ("classification", "regression", "detection")
#: the module of ``visionpipe.tasks.<task>`` each stage imports (simulate runs visionpipe.deploy)
STAGE_MODULES = {
    "prepare": "data",
    "split": "data",
    "eda": "data",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
    "suspects": "suspects",
}


#: the task's own code each stage imports besides visionpipe/core (the stage's dvc.yaml deps)
STAGE_PARTS = {
    "prepare": ("data",),
    "split": ("data",),
    "eda": ("data",),
    "train": ("model", "train.py"),
    "evaluate": ("model", "evaluate.py"),
    "export": ("model", "export.py"),
    "suspects": ("suspects.py",),
}


def code_deps(name: str, stage: str) -> list[str]:
    """The code paths dvc.yaml declares for ``stage`` of task ``name``, relative to the repo
    (tests/test_dvc_yaml.py checks them against the imports of every task)."""
    own = [f"visionpipe/tasks/{name}/{part}" for part in STAGE_PARTS[stage]]
    shared = [
        "visionpipe/core",
        "visionpipe/tasks/__init__.py",
        f"visionpipe/tasks/{name}/__init__.py",
    ]
    return [f"stages/{stage}.py", *shared, *own]


def code_fingerprint(name: str, stage: str) -> str:
    """A hash of exactly the code the stage's dvc.yaml deps name: a resumed training state is
    thrown away when that code changes, and kept when only other code does."""
    return resume.code_fingerprint(*(REPO / path for path in code_deps(name, stage)))


def _part(name: str, part: str) -> ModuleType:
    if name not in TASKS:
        raise UserError(f"base.task: {name!r} is not one of {', '.join(TASKS)}")
    return importlib.import_module(f"visionpipe.tasks.{name}.{part}")


def task_data(name: str) -> TaskData:
    """The data stages of task ``name`` (prepare, split, eda)."""
    return _part(name, "data").DATA()


def get_task(name: str) -> TaskModel:
    """A fresh model-side task object (regression keeps its fitted target transform on it)."""
    return _part(name, "model").TASK()


def stage_function(name: str, stage: str) -> Callable[[Any, argparse.Namespace], None]:
    """Task ``name``'s ``train``, ``evaluate``, ``export`` or ``suspects`` stage:
    ``fn(params, args)``."""
    return getattr(_part(name, STAGE_MODULES[stage]), stage)


__all__ = [
    "STAGE_MODULES",
    "TASKS",
    "TaskData",
    "TaskModel",
    "code_deps",
    "code_fingerprint",
    "get_task",
    "stage_function",
    "task_data",
]
