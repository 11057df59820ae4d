"""Detection metrics: COCO mAP and PR curves (pycocotools), and per-box part/state matching.

COCO mAP answers "are the boxes right"; it ignores the state head. The state is judged on the
detections that match a ground-truth box (greedy, IoU >= threshold, score >= threshold), which
also gives the rows of the state confusion plot: a detection with no box is "background", a box
with no detection is "missed".
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from visionpipe.core.coco import BACKGROUND, MISSED, part_names
from visionpipe.core.errors import UserError
from visionpipe.core.io import significant

log = logging.getLogger(__name__)

PR_CURVE = "precision_recall"
CURVE_COLUMNS = ["curve", "class", "point", "x", "y"]
MATCH_COLUMNS = [
    "image_id",
    "path",
    "ann_id",
    "det_index",
    "part_true",
    "part_pred",
    "state_true",
    "state_pred",
    "score",
    "state_score",
    "iou",
    "x1",
    "y1",
    "x2",
    "y2",
    "true",
    "predicted",
]
#: a plain detector's rows (no states): ``true`` and ``predicted`` are then the parts
STATE_COLUMNS = ("state_true", "state_pred", "state_score")
PLAIN_MATCH_COLUMNS = [c for c in MATCH_COLUMNS if c not in STATE_COLUMNS]
# COCOeval.stats, in its order
_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


@dataclass(frozen=True)
class CocoEvaluation:
    """One COCOeval run: ``metrics`` as :func:`coco_map` returns them, ``curves`` as
    :func:`pr_curves`."""

    metrics: dict[str, Any]
    curves: pd.DataFrame


def _value(values: np.ndarray) -> float | None:
    """Mean of the defined entries (COCOeval marks undefined ones -1), None when there are none."""
    defined = values[values > -1]
    return significant(float(defined.mean())) if defined.size else None


def _run_cocoeval(gt: dict, detections: list[dict]) -> COCOeval:
    """COCOeval (bbox) evaluated and accumulated, its chatter logged instead of printed.

    pycocotools writes into the dicts it is given (``ignore`` on ground truth, ``area``, ``id``
    and ``segmentation`` on results) and counts a match to annotation id 0 as no match, so it gets
    copies with annotation ids 1..N. An empty result list (which ``loadRes`` cannot take) becomes
    a result set without annotations: COCOeval then scores every part with boxes 0.
    """
    known = {int(img["id"]) for img in gt["images"]}
    unknown = sorted({int(d["image_id"]) for d in detections} - known)
    if unknown:
        raise ValueError(f"detections for image ids not in the ground truth: {unknown[:5]}")
    dataset = {
        "images": [dict(img) for img in gt["images"]],
        "categories": [dict(c) for c in gt["categories"]],
        "annotations": [{**a, "id": i + 1} for i, a in enumerate(gt["annotations"])],
    }
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if detections:
            results = [
                {
                    "image_id": int(d["image_id"]),
                    "category_id": int(d["category_id"]),
                    "bbox": [float(v) for v in d["bbox"]],
                    "score": float(d["score"]),
                }
                for d in detections
            ]
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {**dataset, "annotations": []}
            coco_dt.createIndex()
        evaluation = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    log.debug("pycocotools:\n%s", chatter.getvalue())
    return evaluation


def evaluate_coco(gt: dict, detections: list[dict]) -> CocoEvaluation:
    """COCO bbox metrics and per-part precision-recall curves from a single COCOeval run.

    ``detections`` are COCO results ({image_id, category_id, bbox [x, y, w, h], score}; other
    keys are ignored). Undefined values (no ground truth at all, or none of a part) are None.
    """
    evaluation = _run_cocoeval(gt, detections)
    params = evaluation.params
    precision = evaluation.eval["precision"]  # [iou, recall, category, area, max dets]
    t50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    area_all = list(params.areaRngLbl).index("all")
    max_dets = int(np.argmax(params.maxDets))
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}

    metrics: dict[str, Any] = {
        key: (None if value < 0 else significant(float(value)))
        for key, value in zip(_STATS, evaluation.stats, strict=True)
    }
    per_part: dict[str, dict[str, float | None]] = {}
    curves = []
    for k, cat_id in enumerate(params.catIds):
        name = names[int(cat_id)]
        p = precision[:, :, k, area_all, max_dets]
        per_part[name] = {"ap": _value(p), "ap_50": _value(p[t50])}
        keep = p[t50] > -1
        if keep.any():
            curves.append(
                pd.DataFrame(
                    {
                        "curve": PR_CURVE,
                        "class": name,
                        "point": np.arange(int(keep.sum())),
                        "x": np.round(params.recThrs[keep], 6),
                        "y": np.round(p[t50][keep], 6),
                    }
                )
            )
    metrics["per_part"] = {name: per_part[name] for name in part_names(gt)}
    metrics["num_detections"] = len(detections)
    metrics["num_ground_truth"] = len(gt["annotations"])
    frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
    return CocoEvaluation(metrics=metrics, curves=frame)


def coco_map(gt: dict, detections: list[dict]) -> dict[str, Any]:
    """map (AP@[.5:.95]), map_50, map_75, the other COCO stats and ``per_part`` {ap, ap_50}.

    Use :func:`evaluate_coco` to get these and the PR curves from one COCOeval run.
    """
    return evaluate_coco(gt, detections).metrics


def pr_curves(gt: dict, detections: list[dict]) -> pd.DataFrame:
    """Per-part precision at COCO's 101 recall thresholds (IoU 0.5, all areas, 100 dets):
    columns curve, class, point, x (recall), y (precision); parts without boxes have no rows."""
    return evaluate_coco(gt, detections).curves


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _name(value: Any, names: list[str]) -> str:
    """A state given as its index into ``names`` or as its name."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return names[int(value)]
    return str(value)


def _gt_state(ann: dict, states: list[str]) -> str:
    state = (ann.get("attributes") or {}).get("state")
    if state is None:
        raise UserError(f"annotation {ann.get('id')}: no attributes.state")
    return _name(state, states)


def _row(
    image: dict,
    ann: dict | None,
    det: dict | None,
    det_index: int,
    iou: float,
    parts: dict[int, str],
    states: list[str],
) -> dict[str, Any]:
    part_true = parts[int(ann["category_id"])] if ann else None
    part_pred = parts.get(int(det["category_id"]), str(det["category_id"])) if det else None
    box = _xyxy(det["bbox"] if det else ann["bbox"])
    state_true = _gt_state(ann, states) if ann and states else None
    state_pred = _name(det["state"], states) if det and states else None
    row = {
        "image_id": int(image["id"]),
        "path": str(image["file_name"]),
        "ann_id": int(ann["id"]) if ann else -1,
        "det_index": det_index,
        "part_true": part_true,
        "part_pred": part_pred,
        "state_true": state_true,
        "state_pred": state_pred,
        "score": float(det["score"]) if det else np.nan,
        "state_score": float(det["state_score"]) if det and states else np.nan,
        "iou": round(iou, 6),
        "x1": box[0],
        "y1": box[1],
        "x2": box[2],
        "y2": box[3],
        "true": state_true if ann else BACKGROUND,
        "predicted": state_pred if det else MISSED,
    }
    if not states:  # a plain detector: no state columns, the confusion is between parts
        row = {k: v for k, v in row.items() if k not in STATE_COLUMNS}
        row.update(true=part_true if ann else BACKGROUND, predicted=part_pred if det else MISSED)
    return row


def match_detections(
    gt: dict,
    detections: list[dict],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> pd.DataFrame:
    """Detections (score >= ``score_threshold``) matched to ground-truth boxes, per image.

    Greedy by descending score: each detection takes the unmatched box of highest IoU >=
    ``iou_threshold`` whatever its part (``part_true``/``part_pred`` show whether they agree).
    One row per detection kept and one per missed box; ``det_index`` is the position in
    ``detections`` (-1 for a miss), ``ann_id`` the annotation id (-1 for a detection with no
    box). ``iou`` is the matched IoU, or for an unmatched row its best IoU with the other side
    (0 when there is none). Detections carry ``state`` (name or index into ``gt["states"]``) and
    ``state_score``; ``true``/``predicted`` feed the state confusion plot. Without states (a
    plain detector) the rows have no state columns and ``true``/``predicted`` are the parts.
    """
    states = [str(s) for s in gt.get("states", [])]
    parts = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    images = {int(img["id"]): img for img in gt["images"]}
    unknown = sorted({int(d["image_id"]) for d in detections} - images.keys())
    if unknown:
        raise ValueError(f"detections for image ids not in the ground truth: {unknown[:5]}")
    anns_by_image: dict[int, list[int]] = {i: [] for i in images}
    for index, ann in enumerate(gt["annotations"]):
        anns_by_image.setdefault(int(ann["image_id"]), []).append(index)
    dets_by_image: dict[int, list[int]] = {i: [] for i in images}
    for index, det in enumerate(detections):
        if float(det["score"]) >= score_threshold:
            dets_by_image[int(det["image_id"])].append(index)

    rows: list[dict[str, Any]] = []
    for image_id, image in images.items():
        ann_idx = anns_by_image.get(image_id, [])
        det_idx = sorted(dets_by_image[image_id], key=lambda i: -float(detections[i]["score"]))
        anns = [gt["annotations"][i] for i in ann_idx]
        dets = [detections[i] for i in det_idx]
        iou = box_iou(
            torch.tensor([_xyxy(d["bbox"]) for d in dets], dtype=torch.float64).reshape(-1, 4),
            torch.tensor([_xyxy(a["bbox"]) for a in anns], dtype=torch.float64).reshape(-1, 4),
        ).numpy()
        taken = np.zeros(len(anns), dtype=bool)
        for d, det in enumerate(dets):
            candidates = np.where(taken | (iou[d] < iou_threshold), -1.0, iou[d])
            best = int(candidates.argmax()) if len(anns) else -1
            if best >= 0 and candidates[best] >= 0:
                taken[best] = True
                ann, value = anns[best], float(iou[d, best])
            else:
                ann, value = None, float(iou[d].max()) if len(anns) else 0.0
            rows.append(_row(image, ann, det, det_idx[d], value, parts, states))
        for a, ann in enumerate(anns):
            if not taken[a]:
                value = float(iou[:, a].max()) if len(dets) else 0.0
                rows.append(_row(image, ann, None, -1, value, parts, states))
    return pd.DataFrame(rows, columns=MATCH_COLUMNS if states else PLAIN_MATCH_COLUMNS)


def _share(num: int, den: int) -> float | None:
    return significant(num / den) if den else None


def state_metrics(matches: pd.DataFrame, states: list[str]) -> dict[str, Any]:
    """State and part accuracy on matched pairs, detection precision/recall/F1 at the
    thresholds :func:`match_detections` used, per-state recall and the state confusion (a
    plain detector, ``states`` empty, has no state figures: state_accuracy is None)."""
    matched = matches[(matches["ann_id"] >= 0) & (matches["det_index"] >= 0)]
    n_det = int((matches["det_index"] >= 0).sum())
    n_gt = int((matches["ann_id"] >= 0).sum())
    n = len(matched)
    state_ok = matched["state_true"] == matched["state_pred"] if states else None
    precision, recall = _share(n, n_det), _share(n, n_gt)
    f1 = None
    if precision is not None and recall is not None:
        f1 = significant(2 * n / (n_det + n_gt))  # = 2PR / (P + R), 0 when nothing matched
    gt_rows = matches[matches["ann_id"] >= 0]
    per_state_recall: dict[str, float | None] = {}
    per_state_detection: dict[str, float | None] = {}
    for state in states:
        of_state = matched["state_true"] == state
        per_state_recall[state] = _share(int((of_state & state_ok).sum()), int(of_state.sum()))
        per_state_detection[state] = _share(
            int(of_state.sum()), int((gt_rows["state_true"] == state).sum())
        )
    pairs = matched.groupby(["state_true", "state_pred"]).size() if states else None
    confusion = {t: {p: int(pairs.get((t, p), 0)) for p in states} for t in states}
    return {
        "state_accuracy": _share(int(state_ok.sum()), n) if states else None,
        "part_accuracy": _share(int((matched["part_true"] == matched["part_pred"]).sum()), n),
        "matched": n,
        "detections": n_det,
        "ground_truth": n_gt,
        "unmatched_detections": n_det - n,
        "missed": n_gt - n,
        "detection_precision": precision,
        "detection_recall": recall,
        "detection_f1": f1,
        "per_state_recall": per_state_recall,
        "per_state_detection_recall": per_state_detection,
        "confusion": confusion,
    }
