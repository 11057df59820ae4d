"""The low-confidence threshold: a fixed confidence, or a target resolved on the validation split.

A raw number (``simulate.threshold: 0.55``) says nothing about what it does to a given model; a
target does: ``{flag_share: 0.1}`` flags the least confident tenth of the validation
predictions, ``{precision: 0.95}`` flags as few as it can while the predictions it accepts are
right at least 95% of the time on validation. The export stage resolves it on the validation
split (never on test) with the model's calibrated confidences (a classifier's from its fp32
ONNX file; a detector's from the PyTorch model, which the parity check ties to its exported
files) and writes the value and what it was resolved from into model.json, which predict and
simulate read.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: what a target may ask for: the share of predictions flagged, or the precision of the rest
TARGETS = ("flag_share", "precision")

#: a checked ``simulate.threshold``: a confidence, or one target and its number
Spec = float | dict[str, float]


def is_target(spec: Spec) -> bool:
    return isinstance(spec, dict)


def _accepted(confidence: np.ndarray, correct: np.ndarray, value: float) -> dict[str, Any]:
    """What ``value`` does on the given predictions: the share flagged (confidence below it)
    and the precision of those it accepts."""
    accepted = confidence >= value
    return {
        "flagged_share": round(float(1.0 - accepted.mean()), 6) if len(confidence) else None,
        "accepted_precision": round(float(correct[accepted].mean()), 6) if accepted.any() else None,
    }


def _flag_share_value(confidence: np.ndarray, share: float) -> float:
    """The confidence below which ``share`` of the predictions lie (ties flag fewer)."""
    ordered = np.sort(confidence)
    flagged = int(math.floor(share * len(ordered) + 1e-9))  # 0.29 * 100 is 28.999...
    return float(ordered[min(flagged, len(ordered) - 1)])


def _precision_value(confidence: np.ndarray, correct: np.ndarray, precision: float) -> float | None:
    """The lowest confidence that keeps the accepted predictions' precision at least
    ``precision`` (None when no threshold does). Cut only between distinct confidences, so
    the precision holds for ``confidence >= value`` with ties."""
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order].astype(np.float64)
    precision_at = np.cumsum(hits) / np.arange(1, len(conf) + 1)
    boundary = np.append(conf[1:] < conf[:-1], True)  # the last of each run of equal values
    ok = np.flatnonzero(boundary & (precision_at >= precision - 1e-12))
    return float(conf[ok[-1]]) if len(ok) else None


def resolve_threshold(
    spec: Spec, confidence: np.ndarray, correct: np.ndarray, unit: str
) -> dict[str, Any]:
    """The threshold for model.json: its ``value``, the ``target`` (or ``fixed``) and what it
    does on the validation predictions it was resolved from (``unit``: images or detections).
    A precision no threshold reaches flags everything (``reached: false``, with a warning)."""
    # as predict and simulate compare them: rounded to 6 digits in their records
    confidence = np.round(np.asarray(confidence, dtype=np.float64).reshape(-1), 6)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if len(confidence) != len(correct):
        raise ValueError("one correct flag per confidence expected")
    reached = True
    if not is_target(spec) or not len(confidence):
        value = float(spec) if not is_target(spec) else 0.5
        reached = not is_target(spec)
    elif "flag_share" in spec:
        value = _flag_share_value(confidence, spec["flag_share"])
    else:
        found = _precision_value(confidence, correct, spec["precision"])
        reached = found is not None
        # unreached: above any confidence (at most 1), so every prediction is flagged
        value = found if found is not None else float(np.nextafter(1.0, 2.0))
    if not reached:
        log.warning(
            "threshold target %s is not reached on %d validation %s: %s",
            spec,
            len(confidence),
            unit,
            "every prediction is flagged" if len(confidence) else "none to resolve it on; 0.5",
        )
    return {
        "value": value,
        "target": spec if is_target(spec) else "fixed",
        "reached": reached,
        "resolved_on": {
            "split": "val",
            "unit": unit,
            "count": int(len(confidence)),
            "correct_share": round(float(correct.mean()), 6) if len(correct) else None,
            **_accepted(confidence, correct, value),
        },
    }


def accuracy_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The cut on ``scores`` (positive when ``score >= cut``) that makes the most of these
    samples right: the binary decision threshold chosen on the validation split. Cuts lie
    halfway between neighbouring distinct scores; among equally good cuts the one nearest
    0.5 (the uncalibrated default) wins, so a flat stretch does not push it to an extreme.
    Samples of one class only (or none) give 0.5: they say nothing about where to cut."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if len(scores) != len(positive):
        raise ValueError("one positive flag per score expected")
    if not len(scores) or positive.all() or not positive.any():
        return 0.5  # one class only: every cut on its side is "best"; keep the default
    distinct = np.unique(scores)
    cuts = np.concatenate(
        ([distinct[0]], (distinct[1:] + distinct[:-1]) / 2, [np.nextafter(distinct[-1], 2.0)])
    )
    # samples at or above each cut: sorted scores make this a search, not a loop
    order = np.argsort(scores, kind="stable")
    ordered, pos_sorted = scores[order], positive[order]
    below = np.searchsorted(ordered, cuts, side="left")  # predicted negative: the first `below`
    negatives_right = np.concatenate(([0], np.cumsum(~pos_sorted)))[below]
    positives_right = positive.sum() - np.concatenate(([0], np.cumsum(pos_sorted)))[below]
    right = negatives_right + positives_right
    best = np.flatnonzero(right == right.max())
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])
