"""A model's raw outputs -> plain prediction records, as the exported model.json describes them.

One decoder per kind of model the export stage writes (``task`` in model.json), so a consumer
needs only the files and this module, not the task's training code. Every decoder takes the
outputs, the model.json and the factor the input was resized by (which only boxes need, to be
given in the original image's pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from visionpipe.core.errors import UserError
from visionpipe.core.runtimes import as_array


def temperature(meta: dict[str, Any]) -> float:
    """The temperature a classifier's logits are divided by (model.json's ``output``, or a
    checkpoint's meta); 1 for a model exported before calibration existed."""
    found = meta.get("temperature", meta.get("output", {}).get("temperature", 1.0))
    if not isinstance(found, int | float) or isinstance(found, bool) or not found > 0:
        raise UserError(f"temperature {found!r} in the model's metadata: expected a number > 0")
    return float(found)


#: the low-confidence threshold of a model whose metadata resolves none (an older export, a .pt)
DEFAULT_THRESHOLD = 0.5


def model_threshold(meta: dict[str, Any]) -> float | None:
    """The low-confidence threshold the export stage resolved into model.json (``threshold``:
    its ``value``, the target and what it was resolved from), or None when it has none."""
    found = meta.get("threshold")
    if found is None:
        return None
    value = found.get("value") if isinstance(found, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise UserError(f"threshold {found!r} in the model's metadata: expected a value >= 0")
    return float(value)


def classification(outputs: Any, meta: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    """The most probable class and its calibrated probability, softmax(logits / temperature),
    per image (outputs: logits)."""
    labels = meta["labels"]
    logits = as_array(outputs).astype(np.float64) / temperature(meta)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return [
        {"class": labels[int(i)], "confidence": round(float(p[i]), 6)}
        for p, i in zip(probs, probs.argmax(1), strict=True)
    ]


def target_transform(meta: dict[str, Any]) -> dict[str, Any]:
    """The regression target transform from a checkpoint's meta or an export's model.json."""
    found = meta.get("target_transform") or meta.get("output", {}).get("target_transform")
    if not found or any(k not in found for k in ("log1p", "mean", "std")):
        raise UserError("a regression model without a target_transform in its metadata")
    return found


def regression(outputs: Any, meta: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    """The value in the target's own units: the inverse of the transform fitted on train."""
    t = target_transform(meta)
    values = as_array(outputs).astype(np.float64).reshape(-1) * float(t["std"]) + float(t["mean"])
    if t["log1p"]:
        values = np.expm1(values)
    target = meta["labels"][0]
    return [{"value": round(float(v), 6), "target": target} for v in values]


def detection(
    outputs: dict[str, Any], meta: dict[str, Any], scale: float = 1.0
) -> list[dict[str, Any]]:
    """One frame: the parts and states kept (score >= the export's score threshold), and as
    its confidence the lowest box or state probability among them (1 when nothing is found);
    ``objects`` lists each kept detection (part, box x1 y1 x2 y2 in the original image's
    pixels, i.e. the input's divided by ``scale``, score, state and its probability). A plain
    detector (no ``states`` output) counts parts alone and is judged by box scores."""
    labels, states = meta["labels"], meta["states"]
    scores = as_array(outputs["scores"]).astype(np.float64)
    keep = scores >= float(meta.get("score_threshold", 0.5))
    boxes = as_array(outputs["boxes"]).astype(np.float64).reshape(-1, 4)[keep] / scale
    objects = [
        {"part": labels[int(label) - 1], "box": [round(float(v), 2) for v in box]}
        for label, box in zip(as_array(outputs["labels"])[keep].tolist(), boxes, strict=True)
    ]
    for obj, score in zip(objects, scores[keep], strict=True):
        obj["score"] = obj["confidence"] = round(float(score), 6)
    if "states" in outputs:
        kept_states = as_array(outputs["states"])[keep].tolist()
        state_scores = as_array(outputs["state_scores"]).astype(np.float64)[keep]
        for obj, state, p in zip(objects, kept_states, state_scores, strict=True):
            obj["state"], obj["state_score"] = states[int(state)], round(float(p), 6)
            obj["confidence"] = min(obj["score"], obj["state_score"])
    counts: dict[str, int] = {}
    for obj in objects:
        name = f"{obj['part']}/{obj['state']}" if "state" in obj else obj["part"]
        counts[name] = counts.get(name, 0) + 1
    return [
        {
            "class": " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "none",
            "confidence": min((o["confidence"] for o in objects), default=1.0),
            "detections": len(objects),
            "objects": objects,
        }
    ]


DECODERS: dict[str, Callable[[Any, dict[str, Any], float], list[dict[str, Any]]]] = {
    "classification": classification,
    "regression": regression,
    "detection": detection,
}
