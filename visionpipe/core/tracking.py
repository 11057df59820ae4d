"""Per-epoch values to dvclive: names and the logging callback, shared by every task's training."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from dvclive import Live


class ResultLive(Live):
    """dvclive that writes its metrics file (the train stage's DVC metric) only once the run
    has a result (:func:`headline_summary`): a killed or interrupted run leaves no metrics
    file, never a partial epoch's values that ``dvc metrics show`` would list as a result.
    The per-epoch plots are still written as each epoch ends; DVC Studio, which is sent
    the metrics file with them, hears of the run when it ends."""

    complete = False

    def make_summary(self) -> None:
        if self.complete:
            super().make_summary()

    def post_data_to_studio(self) -> None:
        if self.complete:  # dvclive reads the metrics file to post
            super().post_data_to_studio()


def train_live(directory: str, is_main: bool) -> contextlib.AbstractContextManager:
    """The training stages' dvclive (metrics and plots under ``directory``, no dvc.yaml, no
    experiment of its own), or a null context in a DDP process other than rank 0."""
    if not is_main:
        return contextlib.nullcontext()
    return ResultLive(directory, dvcyaml=False, save_dvc_exp=False, report=None)


def live_name(key: str) -> str:
    """dvclive name of a per-epoch value: train_loss -> train/loss, val_rmse -> val/rmse,
    val_loss_state -> val/loss_state, frozen_layers -> train/frozen_layers, lr -> lr."""
    prefix, _, rest = key.partition("_")
    if prefix in ("train", "val") and rest:
        return f"{prefix}/{rest}"
    return key if key == "lr" else f"train/{key}"


def epoch_logger(live: Any) -> Callable[[int, dict[str, float]], None]:
    """The training loops' per-epoch callback: every value to dvclive under :func:`live_name`,
    then the next step. ``live`` None (a DDP process other than rank 0) logs nothing."""

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if live is None:
            return
        for key, value in metrics.items():
            live.log_metric(live_name(key), value)
        live.next_step()

    return log_epoch


def headline_summary(
    live: Any, result: Any, monitor: str, extra: dict[str, Any] | None = None
) -> None:
    """Leave in dvclive's metrics file (the train stage's DVC metric) only what a person
    compares between runs: the best epoch (1-based), its monitored value, the epochs run and
    ``extra`` (e.g. the image size ``auto`` chose). Every per-epoch value stays in the plots,
    the rest in the checkpoint's metadata."""
    live.summary.clear()
    live.summary["best"] = {"epoch": result.best_epoch + 1, monitor: result.best_value}
    live.summary["epochs_run"] = len(result.history)
    live.summary.update(extra or {})
    live.complete = True  # written when the context ends (Live.end)
