"""Calibrated confidence: temperature scaling and the expected calibration error.

A network's softmax over-trusts itself: among the test images it gives 0.9, fewer than 90% are
right. Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017)
divides the logits by one number T fitted on the validation split (never on test), minimising
the negative log-likelihood; the argmax, and so accuracy, is unchanged. The expected calibration
error (ECE) is the gap between confidence and accuracy, averaged over equal-width confidence
bins weighted by how many predictions fall in each.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar

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
