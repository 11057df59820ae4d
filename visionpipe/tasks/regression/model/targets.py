"""Regression targets: the transform the model is trained in, metrics and losses.

A regression model trains better on targets of unit scale (and, for skewed quantities such as
biomass, on their logarithm), but everything reported must be in the target's own units. The
transform is fitted on the training targets only (statistics from validation or test targets
would leak them into training) and is saved with the model so predictions can be mapped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch import nn

from visionpipe.core.errors import DataError

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(values: ArrayLike) -> np.ndarray:
    """A flat float64 copy: statistics and metrics in double precision whatever came in."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _check_log1p_domain(smallest: float) -> None:
    if not smallest > -1:
        raise DataError(
            f"target transform: the smallest target is {smallest:g}; log1p needs values > -1"
        )


@dataclass(frozen=True)
class TargetTransform:
    """``z = (log1p?(y) - mean) / std``: target units -> the space the model is trained in."""

    log1p: bool
    mean: float
    std: float

    def __post_init__(self) -> None:
        # a transform read back from a checkpoint must be invertible, not just a fitted one
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(
                f"target transform: mean {self.mean} and std {self.std} must be finite, std > 0"
            )

    @classmethod
    def fit(cls, values: ArrayLike, log1p: bool, standardize: bool) -> TargetTransform:
        """Fit on the TRAIN targets only, so no validation/test statistics leak into training.

        ``std`` is the population standard deviation, so the transformed training targets
        have mean 0 and std 1 exactly. A constant target keeps ``std = 1`` (no division by 0).
        """
        y = _as_numpy(values)
        if y.size == 0:
            raise DataError("target transform: no training targets to fit on")
        if not np.isfinite(y).all():
            raise DataError(
                f"target transform: {int((~np.isfinite(y)).sum())} training targets are "
                "missing or not finite"
            )
        if log1p:
            _check_log1p_domain(float(y.min()))
            y = np.log1p(y)
        if not standardize:
            return cls(log1p=log1p, mean=0.0, std=1.0)
        mean = float(y.mean())
        std = float(y.std())
        # rounding leaves a constant target with a std of a few ulps, not exactly 0
        if std <= 8 * np.finfo(np.float64).eps * max(1.0, abs(mean)):
            std = 1.0
        return cls(log1p=log1p, mean=mean, std=std)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Target units -> model space (float; the dtype of a float input is kept)."""
        y = y if y.is_floating_point() else y.to(torch.get_default_dtype())
        if self.log1p:
            if y.numel():
                _check_log1p_domain(float(y.min()))
            y = torch.log1p(y)
        return (y - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> target units: the exact inverse of :meth:`forward`."""
        z = z if z.is_floating_point() else z.to(torch.get_default_dtype())
        y = z * self.std + self.mean
        return torch.expm1(y) if self.log1p else y

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, for checkpoint meta and the exported model's JSON."""
        return {"log1p": bool(self.log1p), "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetTransform:
        """The inverse of :meth:`to_dict`; a missing key is a ValueError naming it."""
        missing = [k for k in ("log1p", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"target transform: missing {', '.join(missing)} in {d!r}")
        return cls(log1p=bool(d["log1p"]), mean=float(d["mean"]), std=float(d["std"]))


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float | int | None]:
    """mse, rmse, mae, r2 and num_samples, in target units (apply ``inverse`` first).

    r2 is None where it is undefined (fewer than 2 samples, or a constant ``y_true``) rather
    than sklearn's substitute 0.0/1.0 or a crash, so a report never shows a made-up score.
    """
    t, p = _as_numpy(y_true), _as_numpy(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"regression metrics: {t.size} targets but {p.size} predictions")
    if t.size == 0:
        raise ValueError("regression metrics: no samples")
    mse = float(mean_squared_error(t, p))
    r2 = None if t.size < 2 or np.all(t == t[0]) else float(r2_score(t, p))
    return {
        "num_samples": int(t.size),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(t, p)),
        "r2": r2,
    }


class FlatRegressionLoss(nn.Module):
    """A loss on (N,) or (N, 1) predictions vs (N,) targets, compared element by element.

    ``MSELoss()(pred_N1, target_N)`` broadcasts to an N x N matrix and quietly trains on the
    wrong objective (torch only warns); flattening here makes that impossible.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    @staticmethod
    def _flat(x: torch.Tensor, what: str) -> torch.Tensor:
        if x.dim() == 1:
            return x
        if x.dim() == 2 and x.shape[1] == 1:
            return x[:, 0]
        raise ValueError(
            f"regression loss: {what} of shape {tuple(x.shape)}; expected (N,) or (N, 1)"
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = self._flat(pred, "predictions"), self._flat(target, "targets")
        if p.shape != t.shape:
            raise ValueError(f"regression loss: {p.shape[0]} predictions but {t.shape[0]} targets")
        return self.loss(p, t.to(p.dtype))


def regression_loss(name: str, huber_delta: float = 1.0) -> nn.Module:
    """The training criterion by name ("mse", "huber", "l1"), shape-safe (FlatRegressionLoss)."""
    if name == "mse":
        loss: nn.Module = nn.MSELoss()
    elif name == "huber":
        if not huber_delta > 0:
            raise ValueError(f"regression loss: huber delta must be > 0, not {huber_delta}")
        loss = nn.HuberLoss(delta=huber_delta)
    elif name == "l1":
        loss = nn.L1Loss()
    else:
        raise ValueError(f"regression loss: {name!r} is not one of mse, huber, l1")
    return FlatRegressionLoss(loss)
