"""Drift on the conveyor: do the frames still look like the data the model was trained on?

A model is only as good as the match between its input and its training data; a camera moved,
a lamp dimmed or another product on the belt shows up first as images whose statistics shift,
and as confidences that fall. The monitor compares a rolling window of recent frames with a
reference (images from the training split, run once through the same decoder and model):

- image statistics: the per-channel mean and standard deviation of each model input; the
  window's mean of each, in units of the reference's spread between images, is the
  ``image_distance`` (the largest over the six; 1 is a shift of one typical image-to-image
  difference, far more than a window of like frames moves by chance);
- confidence: the window's share of low-confidence frames against the reference's share.

A frame is flagged when the window is full enough (``min_frames``) and either moves beyond its
tolerance. The numbers are simple on purpose: they need no labels, cost a few array means per
frame, and say which of the two moved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: per-channel mean and standard deviation of an input, in this order
FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b")


def image_features(image: np.ndarray) -> np.ndarray:
    """The six statistics of one model input (``1 x 3 x H x W`` or ``3 x H x W``, 0..255)."""
    x = np.asarray(image, dtype=np.float64).reshape(3, -1)
    return np.concatenate([x.mean(axis=1), x.std(axis=1)])


@dataclass(frozen=True)
class Reference:
    """What the frames are compared with: the features' mean and spread over the reference
    images, and their share of low-confidence predictions."""

    mean: np.ndarray
    spread: np.ndarray
    low_share: float
    images: int

    @classmethod
    def from_frames(cls, features: Iterable[np.ndarray], low: Iterable[bool]) -> Reference:
        table = np.asarray(list(features), dtype=np.float64).reshape(-1, len(FEATURES))
        flags = np.asarray(list(low), dtype=bool)
        if len(table) < 2:
            raise ValueError("drift reference: at least two images are needed")
        # a constant feature (a grayscale set's channels agree) must not divide by zero
        spread = np.maximum(table.std(axis=0), 1.0)
        return cls(table.mean(axis=0), spread, float(flags.mean()), len(table))

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "low_confidence_share": round(self.low_share, 4),
            "features": {
                name: {"mean": round(float(m), 3), "spread": round(float(s), 3)}
                for name, m, s in zip(FEATURES, self.mean, self.spread, strict=True)
            },
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def spread_sample(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (a manifest sorted by class must not give
    a reference of one class); all of them when there are fewer."""
    if count <= 0 or len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


@dataclass
class DriftMonitor:
    """Rolling comparison of the last ``window`` frames with a :class:`Reference`."""

    reference: Reference
    window: int = 50
    image_tolerance: float = 1.0
    low_share_tolerance: float = 0.25
    min_frames: int = 10
    _features: deque = field(init=False)
    _low: deque = field(init=False)
    flagged: int = field(default=0, init=False)
    first_flagged: int | None = field(default=None, init=False)
    worst_distance: float | None = field(default=None, init=False)
    worst_low_share: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._features = deque(maxlen=self.window)
        self._low = deque(maxlen=self.window)

    def update(self, index: int, image: np.ndarray, low_confidence: bool) -> dict[str, Any]:
        """Add one frame; its columns for the log: the window's image distance and
        low-confidence share (empty until ``min_frames``), and whether it is flagged."""
        self._features.append(image_features(image))
        self._low.append(bool(low_confidence))
        if len(self._features) < min(self.min_frames, self.window):
            return {"image_distance": None, "low_share": None, "drift": False}
        window_mean = np.mean(self._features, axis=0)
        distance = float(np.max(np.abs(window_mean - self.reference.mean) / self.reference.spread))
        low_share = float(np.mean(self._low))
        drift = (
            distance > self.image_tolerance
            or low_share - self.reference.low_share > self.low_share_tolerance
        )
        self.worst_distance = max(self.worst_distance or 0.0, distance)
        self.worst_low_share = max(self.worst_low_share or 0.0, low_share)
        if drift:
            self.flagged += 1
            if self.first_flagged is None:
                self.first_flagged = index
        return {
            "image_distance": round(distance, 4),
            "low_share": round(low_share, 4),
            "drift": drift,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "flagged_frames": self.flagged,
            "first_flagged_frame": self.first_flagged,
            # None: the window never held enough frames to compare
            "max_image_distance": _rounded(self.worst_distance),
            "max_low_confidence_share": _rounded(self.worst_low_share),
            "window": self.window,
            "image_tolerance": self.image_tolerance,
            "low_share_tolerance": self.low_share_tolerance,
            "reference": self.reference.as_dict(),
        }
