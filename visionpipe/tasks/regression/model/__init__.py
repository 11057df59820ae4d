"""Regression's model side: a numeric target per image through a transform fitted on the train
split (log1p and standardization, :mod:`visionpipe.tasks.regression.model.targets`), the loss
and the per-epoch RMSE, MAE and R2 in the target's own units (train, evaluate and export use it).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from visionpipe.core.errors import UserError
from visionpipe.core.image.task import ImageTask
from visionpipe.tasks.regression.model.targets import (
    TargetTransform,
    regression_loss,
    regression_metrics,
)

log = logging.getLogger(__name__)


class RegressionTask(ImageTask):
    name = "regression"
    monitor_modes = {"loss": "min", "rmse": "min", "mae": "min", "r2": "max"}
    default_monitor = "val_rmse"

    def __init__(self) -> None:
        self.transform: TargetTransform | None = None

    def labels(self, manifest: pd.DataFrame, params: Any) -> list[str]:
        return [params.data.target_column]

    def fit_targets(self, train_manifest: pd.DataFrame, params: Any) -> dict[str, Any]:
        r = params.regression
        self.transform = TargetTransform.fit(target_values(train_manifest), r.log1p, r.standardize)
        log.info("target transform (fitted on train): %s", self.transform.to_dict())
        return {"target_transform": self.transform.to_dict()}

    def load_meta(self, meta: dict[str, Any]) -> None:
        """From a checkpoint's meta, or from an exported model's model.json (under output)."""
        found = meta.get("target_transform") or meta.get("output", {}).get("target_transform")
        if not found:
            raise UserError("a regression model without a target_transform in its metadata")
        self.transform = TargetTransform.from_dict(found)

    def head_hidden(self, params: Any) -> int:
        return params.regression.head_hidden

    def _fitted(self) -> TargetTransform:
        if self.transform is None:  # a programming error, not a user's
            raise RuntimeError("regression task: fit_targets or load_meta first")
        return self.transform

    def targets(self, manifest: pd.DataFrame, labels: list[str]) -> torch.Tensor:
        return self._fitted().forward(torch.tensor(target_values(manifest), dtype=torch.float32))

    def criterion(
        self, params: Any, labels: list[str], train_targets: torch.Tensor
    ) -> torch.nn.Module:
        return regression_loss(params.regression.loss, params.regression.huber_delta)

    def values(self, outputs: torch.Tensor) -> np.ndarray:
        """Model outputs (N, 1) -> predictions in target units (float64)."""
        return self._fitted().inverse(outputs.double().reshape(-1)).numpy()

    def epoch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        true = self._fitted().inverse(targets.double().reshape(-1)).numpy()
        m = regression_metrics(true, self.values(outputs))
        return {k: float(m[k]) for k in ("rmse", "mae", "r2") if m[k] is not None}

    def output_description(self) -> dict[str, Any]:
        t = self._fitted()
        value = f"output * {t.std!r} + {t.mean!r}"
        return {
            "meaning": "the target in training space, one value per image: "
            + (f"value = expm1({value})" if t.log1p else f"value = {value}"),
            "target_transform": t.to_dict(),
        }

    def parity(self, reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        return {
            "max_abs_diff": float((reference.float() - other.float()).abs().max()),
            "max_abs_diff_target_units": float(
                np.abs(self.values(reference) - self.values(other)).max()
            ),
        }


def target_values(manifest: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(manifest["target"]).to_numpy(dtype=np.float64)


TASK = RegressionTask
