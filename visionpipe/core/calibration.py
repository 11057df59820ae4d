"""Calibrated confidence: temperature scaling and the expected calibration error.

A network's softmax over-trusts itself: among the test images it gives 0.9, fewer than 90% are
right. Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017)
divides the logits by one number T fitted on the validation split (never on test), minimising
the negative log-likelihood; the argmax, and so accuracy, is unchanged. The expected calibration
error (ECE) is the gap between confidence and accuracy, averaged over equal-width confidence
bins weighted by how many predictions fall in each.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar

log = logging.getLogger(__name__)

#: the range T is searched in (log-spaced): wide enough for any trained network
TEMPERATURE_RANGE = (0.05, 20.0)
BINS = 15  # Guo et al.'s choice


def softmax(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits / temperature`` (float64, rows sum to 1)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def fit_temperature(logits: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> float:
    """The T minimising the negative log-likelihood of ``targets`` under softmax(logits / T)
    (1.0 for an empty set): a bounded 1-D search over log T."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    found = minimize_scalar(
        lambda log_t: _nll(z, y, math.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return round(math.exp(float(found.x)), 4)


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per equal-width bin of top-class confidence: its bounds, how many predictions fall in
    it, their mean confidence and their accuracy (empty bins are left out)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(targets)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i + 1]]; a confidence of exactly 0 joins the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "bin": b,
                    "lower": round(float(edges[b]), 6),
                    "upper": round(float(edges[b + 1]), 6),
                    "count": int(inside.sum()),
                    "confidence": round(float(confidence[inside].mean()), 6),
                    "accuracy": round(float(correct[inside].mean()), 6),
                }
            )
    columns = ["bin", "lower", "upper", "count", "confidence", "accuracy"]
    return pd.DataFrame(rows, columns=columns)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (share of predictions) x |accuracy - mean confidence|."""
    table = reliability(probs, targets, bins)
    if table.empty:
        return 0.0
    share = table["count"] / table["count"].sum()
    return round(float((share * (table["accuracy"] - table["confidence"]).abs()).sum()), 6)


def calibrate(
    logits: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, unit: str = "images"
) -> dict[str, Any]:
    """Temperature scaling fitted on the validation ``logits`` (NLL), applied only when val
    has mistakes to learn from, the search did not end at a bound (a val split classified
    perfectly drives T to 0) and it does not raise the validation ECE: otherwise temperature 1.
    Returns the checkpoint metadata entries: ``temperature`` and ``calibration`` (what was
    fitted, whether it was applied and why not, the val ECE both ways; ``unit``: what was
    counted, images or boxes)."""
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    true = np.asarray(targets, dtype=np.int64)
    if not len(true):
        return {
            "temperature": 1.0,
            "calibration": {"applied": False, "not_applied_because": f"no val {unit}"},
        }
    fitted = fit_temperature(logits, true)
    before = expected_calibration_error(softmax(logits), true)
    after = expected_calibration_error(softmax(logits, fitted), true)
    lo, hi = TEMPERATURE_RANGE
    if bool((logits.argmax(1).numpy() == true).all()):
        reason = "no mistakes on val to calibrate against"
    elif not lo * 1.01 < fitted < hi / 1.01:
        reason = f"the search ended at its bound {fitted:g}"
    elif after > before:
        reason = "it raises the ECE"
    else:
        reason = ""
    applied = not reason
    log.info(
        "temperature %.4g fitted on val: ECE %.4f -> %.4f, %s",
        fitted,
        before,
        after,
        "applied" if applied else f"not applied ({reason}): temperature 1",
    )
    return {
        "temperature": fitted if applied else 1.0,
        "calibration": {
            "method": "temperature scaling (NLL on the validation split), applied when it "
            "does not raise the validation ECE",
            "fitted_temperature": fitted,
            "applied": applied,
            **({"not_applied_because": reason} if reason else {}),
            f"val_{unit}": len(true),
            "val_ece_before": before,
            "val_ece_with_fitted": after,
        },
    }


def calibration_report(
    raw: np.ndarray, calibrated: np.ndarray, true: np.ndarray, temperature: float
) -> tuple[dict[str, Any], pd.DataFrame]:
    """ECE on test before and after the temperature, and the reliability bins of both (rows
    ``class`` uncalibrated / calibrated, ``point`` the bin, x confidence, y accuracy)."""
    parts = []
    for name, probs in (("uncalibrated", raw), ("calibrated", calibrated)):
        table = reliability(probs, true).rename(columns={"bin": "point"})
        parts.append(table.assign(**{"class": name}))
    rows = pd.concat(parts, ignore_index=True)
    report = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw, true),
        "ece_after": expected_calibration_error(calibrated, true),
        "bins": BINS,
        "fitted_on": "val",
    }
    return report, rows[["class", "point", "lower", "upper", "count", "confidence", "accuracy"]]
