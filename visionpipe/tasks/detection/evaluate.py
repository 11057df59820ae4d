"""Detection's evaluate stage: COCO mAP, per-part AP and PR curves, state accuracy and the state
confusion on matched boxes, the predictions, drawn test images and latency per image. A plain
detector (trained with ``data.states: []``) has no state figures: its confusion is between
parts."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from visionpipe.core.calibration import calibration_report, softmax
from visionpipe.core.coco import part_names, read_split_coco
from visionpipe.core.draw import save_prediction_images
from visionpipe.core.errors import UserError
from visionpipe.core.io import write_csv, write_json
from visionpipe.core.params import Params
from visionpipe.core.plots import plot_confusion, plot_curves, plot_reliability
from visionpipe.core.runtime import choose_device, set_threads
from visionpipe.core.timing import WARMUP, latency
from visionpipe.tasks.detection.model import load_detector, test_set
from visionpipe.tasks.detection.model.dataset import to_coco_results
from visionpipe.tasks.detection.model.hooks import predict
from visionpipe.tasks.detection.model.metrics import (
    BACKGROUND,
    CURVE_COLUMNS,
    MISSED,
    evaluate_coco,
    match_detections,
    state_metrics,
)
from visionpipe.tasks.detection.model.state_calibration import box_state_logits

log = logging.getLogger("visionpipe.evaluate")


def confusion_figure(
    matches: pd.DataFrame, states: list[str], path: Path, title: str = "State confusion"
) -> None:
    """Counts of true vs predicted state (a plain detector's: part), with a ``background``
    label for both kinds of error: its row holds detections of no box, its column the boxes
    no detection found."""
    labels = [*states, BACKGROUND]
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    predicted = matches["predicted"].replace(MISSED, BACKGROUND)
    for true, pred in zip(matches["true"], predicted, strict=True):
        if true in index and pred in index:
            matrix[index[true], index[pred]] += 1
    plot_confusion(
        matrix,
        labels,
        Path(path),
        title=f"{title}\nrow background: false detection; column background: missed box",
    )


def pr_figure(
    curves: pd.DataFrame,
    path: Path,
    parts: Sequence[str] | None = None,
    title: str = "Precision-recall per part (IoU 0.5)",
) -> None:
    """The curves of :func:`pr_curves`, AP@0.5 (the mean of each curve) in the legend; parts in
    ``parts`` without a curve (no boxes in the split) are named in the title."""
    points = curves.rename(columns={"x": "recall", "y": "precision"})
    names = list(parts) if parts is not None else list(dict.fromkeys(points["class"]))
    scores = {}
    for name in names:
        ys = points.loc[points["class"] == name, "precision"]
        scores[name] = float(ys.mean()) if len(ys) else None
    plot_curves(points, "recall", "precision", scores, "AP50", Path(path), title)


def state_calibration(
    model: torch.nn.Module, test: Any, params: Params, device: torch.device
) -> tuple[dict[str, Any], pd.DataFrame]:
    """ECE of the state head on the test split's annotated boxes before and after the
    temperature the train stage fitted on val's, and the reliability bins of both."""
    logits, true = box_state_logits(model, test, params.train.batch_size, device)
    temperature = float(model.roi_heads.state_temperature)
    raw, calibrated = softmax(logits), softmax(logits, temperature)
    report, rows = calibration_report(raw, calibrated, true.numpy(), temperature)
    return {**report, "boxes": len(true)}, rows


def reliability_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """The reliability bins in curves.csv's ``curve, class, point, x, y`` layout (the second
    panel of .dvc/plots/detection_curves.json)."""
    frame = rows.rename(columns={"confidence": "x", "accuracy": "y"}).assign(curve="reliability")
    return frame[CURVE_COLUMNS]


def evaluate(params: Params, args: argparse.Namespace) -> None:
    """COCO mAP, per-part AP and PR curves, state accuracy and confusion on matched boxes, the
    predictions, drawn test images and latency per image at batch 1."""
    cfg = params.detection
    model, meta = load_detector(args.model)
    gt = read_split_coco(args.splits, "test")
    if meta["states"] != gt.get("states", meta["states"]) or part_names(gt) != meta["labels"]:
        raise UserError(
            f"{args.model}: trained for parts {meta['labels']} and states {meta['states']}, "
            f"but the test split has {part_names(gt)} and {gt.get('states')}; retrain"
        )
    test = test_set(params, meta, gt)
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    model.to(device)
    start = time.perf_counter()
    outputs = predict(model, test, 1, device, desc="test")
    seconds = time.perf_counter() - start
    records = to_coco_results(outputs, test.image_ids, test.scales, gt, meta["states"])
    coco = evaluate_coco(gt, records)
    matches = match_detections(gt, records, cfg.iou_threshold, cfg.score_threshold)
    states = state_metrics(matches, meta["states"])

    results, figures = Path(args.results), Path(args.figures)
    write_csv(results / "predictions.csv", matches)
    calibration = None
    curves = coco.curves
    if meta["states"]:
        calibration, reliability_rows = state_calibration(model, test, params, device)
        write_csv(results / "tables" / "state_reliability.csv", reliability_rows)
        title = f"State reliability on test boxes (temperature {calibration['temperature']:.3g})"
        plot_reliability(reliability_rows, calibration, figures / "state_reliability.png", title)
        curves = pd.concat([curves, reliability_curves(reliability_rows)], ignore_index=True)
    write_csv(results / "curves.csv", curves)
    write_json(results / "tables" / "detections.json", records)
    per_part = pd.DataFrame(
        [{"part": part, **values} for part, values in coco.metrics["per_part"].items()]
    )
    write_csv(results / "tables" / "per_part_ap.csv", per_part)
    pr_figure(coco.curves, figures / "precision_recall.png", parts=meta["labels"])
    if meta["states"]:
        confusion_figure(matches, meta["states"], figures / "state_confusion.png")
    else:
        confusion = figures / "part_confusion.png"
        confusion_figure(matches, meta["labels"], confusion, title="Part confusion")
    drawn = min(params.evaluate.draw_images, len(test))
    save_prediction_images(
        [img.permute(1, 2, 0).numpy() for img in test.images[:drawn]],
        outputs[:drawn],
        test.targets[:drawn],
        meta["labels"],
        meta["states"],
        figures,
        drawn,
        score_threshold=cfg.score_threshold,
    )

    x = test.images[0].to(device).float()

    @torch.no_grad()
    def run_one(_: torch.Tensor) -> Any:
        return model([x])

    ms_per_image = 1000 * seconds / max(len(test), 1)
    # what a person compares between runs: `dvc metrics show`; the rest is in details.json
    metrics = {
        **{k: coco.metrics[k] for k in ("map", "map_50", "map_75")},
        **({"state_accuracy": states["state_accuracy"]} if meta["states"] else {}),
        **({"state_ece": calibration["ece_after"]} if calibration else {}),
        "part_accuracy": states["part_accuracy"],
        "detection_precision": states["detection_precision"],
        "detection_recall": states["detection_recall"],
        "ms_per_image": ms_per_image,
    }
    state_details = {
        "per_state_recall": states["per_state_recall"],
        "state_confusion": states["confusion"],
        "state_calibration": {**(calibration or {}), "fit": meta.get("state_calibration")},
    }
    details = {
        "per_part": coco.metrics["per_part"],
        **(state_details if meta["states"] else {}),
        "counts": {
            "test_images": len(test),
            "ground_truth_boxes": states["ground_truth"],
            "detections_kept": states["detections"],
            "matched": states["matched"],
            "unmatched_detections": states["unmatched_detections"],
            "missed": states["missed"],
        },
        "thresholds": {"score": cfg.score_threshold, "iou": cfg.iou_threshold},
        "coco": {k: v for k, v in coco.metrics.items() if k not in ("per_part",)},
        "inference": {
            "ms_per_image": ms_per_image,
            "batch_size": 1,
            "device": str(device),
            "threads": threads,
            "latency": {"batch_1": latency(run_one, x[None], WARMUP, params.evaluate.latency_runs)},
        },
    }
    write_json(results / "tables" / "details.json", details)
    write_json(results / "metrics.json", metrics)
    log.info(
        "test: mAP %.4f, mAP@.5 %.4f, state accuracy %s",
        metrics["map"] or 0.0,
        metrics["map_50"] or 0.0,
        metrics.get("state_accuracy", "- (no states)"),
    )
