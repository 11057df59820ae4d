"""Detection metrics: COCO mAP and PR curves, greedy matching, state metrics and figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from visionpipe.core.draw import draw_boxes, save_prediction_images, state_colors
from visionpipe.core.errors import UserError
from visionpipe.tasks.detection.evaluate import confusion_figure, pr_figure
from visionpipe.tasks.detection.model.metrics import (
    BACKGROUND,
    CURVE_COLUMNS,
    MATCH_COLUMNS,
    MISSED,
    coco_map,
    evaluate_coco,
    match_detections,
    pr_curves,
    state_metrics,
)

torch.set_num_threads(1)

STATES = ["intact", "damaged", "absent", "occluded"]


def _ann(ann_id: int, image_id: int, cat: int, bbox: list[float], state: str) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [float(v) for v in bbox],
        "area": float(bbox[2] * bbox[3]),
        "iscrowd": 0,
        "attributes": {"state": state},
    }


@pytest.fixture
def gt() -> dict:
    """Two images, parts cell (id 1) and busbar (id 2), and a part ``frame`` (id 3) never seen.
    Annotation ids start at 0: pycocotools would count a match to id 0 as a miss."""
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 100},
        ],
        "categories": [
            {"id": 1, "name": "cell"},
            {"id": 2, "name": "busbar"},
            {"id": 3, "name": "frame"},
        ],
        "annotations": [
            _ann(0, 1, 1, [10, 10, 30, 30], "intact"),
            _ann(1, 1, 2, [50, 50, 40, 20], "damaged"),
            _ann(2, 2, 1, [5, 5, 50, 50], "absent"),
        ],
        "states": STATES,
    }


def _perfect(gt: dict, score: float = 0.9) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": score,
            "state": a["attributes"]["state"],
            "state_score": 0.8,
        }
        for a in gt["annotations"]
    ]


def test_perfect_detections_score_one(gt: dict) -> None:
    detections = _perfect(gt)
    metrics = coco_map(gt, detections)
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["map_75"] == pytest.approx(1.0)
    assert metrics["per_part"]["cell"] == {"ap": pytest.approx(1.0), "ap_50": pytest.approx(1.0)}
    assert list(metrics["per_part"]) == ["cell", "busbar", "frame"]
    # pycocotools writes into the dicts it gets: the caller's must stay as they were
    assert "ignore" not in gt["annotations"][0] and "segmentation" not in detections[0]

    matches = match_detections(gt, detections)
    stats = state_metrics(matches, STATES)
    assert stats["state_accuracy"] == 1.0 and stats["part_accuracy"] == 1.0
    assert stats["matched"] == 3 and stats["missed"] == 0 and stats["unmatched_detections"] == 0
    assert stats["detection_precision"] == stats["detection_recall"] == stats["detection_f1"] == 1
    assert stats["confusion"]["intact"] == {"intact": 1, "damaged": 0, "absent": 0, "occluded": 0}
    assert stats["per_state_recall"]["occluded"] is None  # no occluded box
    assert list(matches.columns) == MATCH_COLUMNS
    assert (matches["true"] == matches["predicted"]).all()
    assert sorted(matches["ann_id"]) == [0, 1, 2]


def test_shifted_boxes_lower_map(gt: dict) -> None:
    detections = _perfect(gt)
    for det in detections:
        det["bbox"][0] += 0.2 * det["bbox"][2]  # IoU 0.67: a hit at 0.5, a miss at 0.75
    metrics = coco_map(gt, detections)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["map_75"] == pytest.approx(0.0)
    assert 0.0 < metrics["map"] < 1.0
    assert metrics["per_part"]["cell"]["ap"] < 1.0


def test_part_without_ground_truth_is_none(gt: dict) -> None:
    metrics = coco_map(gt, _perfect(gt))
    assert metrics["per_part"]["frame"] == {"ap": None, "ap_50": None}
    assert not any(isinstance(v, float) and math.isnan(v) for v in metrics.values())
    assert metrics["map_small"] is not None and metrics["map_large"] is None  # no box > 96²


def test_zero_detections(gt: dict) -> None:
    result = evaluate_coco(gt, [])
    assert result.metrics["map"] == 0.0 and result.metrics["map_50"] == 0.0
    assert result.metrics["per_part"]["cell"] == {"ap": 0.0, "ap_50": 0.0}
    assert result.metrics["per_part"]["frame"] == {"ap": None, "ap_50": None}
    assert (result.curves["y"] == 0).all()
    matches = match_detections(gt, [])
    assert (matches["predicted"] == MISSED).all() and len(matches) == 3
    stats = state_metrics(matches, STATES)
    assert stats["matched"] == 0 and stats["detection_recall"] == 0.0
    assert stats["state_accuracy"] is None and stats["detection_precision"] is None
    assert stats["detection_f1"] is None


def test_no_ground_truth_at_all_is_none(gt: dict) -> None:
    empty = {**gt, "annotations": []}
    metrics = coco_map(empty, [])
    assert metrics["map"] is None and metrics["per_part"]["cell"]["ap"] is None
    assert pr_curves(empty, []).empty


def test_pr_curves_columns_and_ranges(gt: dict) -> None:
    detections = _perfect(gt)
    detections.append({**detections[0], "bbox": [70, 0, 10, 10], "score": 0.95})  # a false one
    curves = pr_curves(gt, detections)
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["curve"]) == {"precision_recall"}
    assert set(curves["class"]) == {"cell", "busbar"}  # frame has no boxes: no curve
    assert curves["x"].between(0, 1).all() and curves["y"].between(0, 1).all()
    cell = curves[curves["class"] == "cell"]
    assert len(cell) == 101 and list(cell["point"]) == list(range(101))
    assert cell["y"].min() < 1.0  # the false detection outranks the true ones
    assert cell["y"].is_monotonic_decreasing


def test_unknown_image_is_rejected(gt: dict) -> None:
    det = {**_perfect(gt)[0], "image_id": 99}
    with pytest.raises(ValueError, match="99"):
        evaluate_coco(gt, [det])
    with pytest.raises(ValueError, match="99"):
        match_detections(gt, [det])


def test_swapped_state_shows_in_confusion(gt: dict) -> None:
    detections = _perfect(gt)
    detections[0]["state"] = "damaged"  # the intact cell called damaged
    detections[2]["state"] = STATES.index("absent")  # a state given as its index
    matches = match_detections(gt, detections)
    stats = state_metrics(matches, STATES)
    assert stats["confusion"]["intact"]["damaged"] == 1
    assert stats["confusion"]["intact"]["intact"] == 0
    assert stats["state_accuracy"] == pytest.approx(2 / 3, abs=1e-5)
    assert stats["per_state_recall"] == {
        "intact": 0.0,
        "damaged": 1.0,
        "absent": 1.0,
        "occluded": None,
    }
    row = matches[matches["ann_id"] == 0].iloc[0]
    assert (row["true"], row["predicted"]) == ("intact", "damaged")
    assert matches.loc[matches["ann_id"] == 2, "state_pred"].item() == "absent"


def test_missed_and_unmatched_rows(gt: dict) -> None:
    detections = _perfect(gt)
    detections[1]["category_id"] = 1  # busbar box called a cell: matched, part wrong
    detections[2]["score"] = 0.3  # below the score threshold: the absent cell is missed
    detections.append(  # a duplicate of the first box: its box is taken, so it is background
        {**detections[0], "bbox": [11, 10, 30, 30], "score": 0.7, "state": "occluded"}
    )
    detections.append(  # on empty ground: background too
        {**detections[0], "bbox": [0, 80, 10, 10], "score": 0.6}
    )
    matches = match_detections(gt, detections, iou_threshold=0.5, score_threshold=0.5)
    assert len(matches) == 5  # 4 detections kept (2 matched) and 1 missed box
    missed = matches[matches["det_index"] == -1]
    assert len(missed) == 1
    assert missed.iloc[0][["ann_id", "true", "predicted"]].tolist() == [2, "absent", MISSED]
    assert missed.iloc[0][["x1", "y1", "x2", "y2"]].tolist() == [5, 5, 55, 55]  # the GT box
    assert missed.iloc[0]["path"] == "b.png" and math.isnan(missed.iloc[0]["score"])
    background = matches[matches["ann_id"] == -1]
    assert sorted(background["det_index"]) == [3, 4]
    assert (background["true"] == BACKGROUND).all()
    assert background.set_index("det_index").loc[3, "predicted"] == "occluded"
    assert background.set_index("det_index").loc[3, "iou"] > 0.9  # it lost to a better score
    assert background.set_index("det_index").loc[4, "iou"] == 0.0
    busbar = matches[matches["ann_id"] == 1].iloc[0]
    assert (busbar["part_true"], busbar["part_pred"]) == ("busbar", "cell")

    stats = state_metrics(matches, STATES)
    assert stats["matched"] == 2 and stats["part_accuracy"] == 0.5
    assert stats["detection_precision"] == 0.5  # 2 of 4 kept detections
    assert stats["detection_recall"] == pytest.approx(2 / 3, abs=1e-5)
    assert stats["missed"] == 1 and stats["unmatched_detections"] == 2
    assert stats["per_state_detection_recall"]["absent"] == 0.0
    # the confusion is over matched pairs only: background and misses are not in it
    assert sum(sum(row.values()) for row in stats["confusion"].values()) == 2


def test_greedy_match_prefers_highest_iou(gt: dict) -> None:
    one = {**gt, "annotations": [_ann(5, 1, 1, [0, 0, 20, 20], "intact"),
                                 _ann(6, 1, 1, [4, 0, 20, 20], "damaged")]}  # fmt: skip
    det = {"image_id": 1, "category_id": 1, "bbox": [4, 0, 20, 20], "score": 0.9}
    matches = match_detections(one, [{**det, "state": "damaged", "state_score": 0.9}])
    matched = matches[matches["det_index"] == 0].iloc[0]
    assert matched["ann_id"] == 6 and matched["iou"] == 1.0


def test_missing_state_is_a_user_error(gt: dict) -> None:
    del gt["annotations"][0]["attributes"]
    with pytest.raises(UserError, match="annotation 0"):
        match_detections(gt, [])


def test_figures_are_written(gt: dict, tmp_path) -> None:
    detections = _perfect(gt)
    detections[0]["state"] = "damaged"
    result = evaluate_coco(gt, detections)
    matches = match_detections(gt, detections + [{**detections[0], "bbox": [0, 90, 5, 5]}])
    confusion_figure(matches, STATES, tmp_path / "confusion.png")
    pr_figure(result.curves, tmp_path / "pr.png", parts=["cell", "busbar", "frame"])
    pr_figure(evaluate_coco({**gt, "annotations": []}, []).curves, tmp_path / "empty.png")
    for name in ("confusion.png", "pr.png", "empty.png"):
        with Image.open(tmp_path / name) as img:
            assert img.width > 100
    assert not list(tmp_path.glob(".*.tmp"))


def test_draw_boxes_keeps_the_image_size() -> None:
    image = np.zeros((60, 90, 3), dtype=np.uint8)
    drawn = draw_boxes(
        image, [[5, 2, 40, 30], [50, 40, 89, 59]], ["cell intact", ""], ["red", (0, 255, 0)]
    )
    assert drawn.size == (90, 60)
    pixels = np.asarray(drawn)
    assert (pixels[30, 20] == [255, 0, 0]).all()  # the first box's bottom edge
    assert (pixels[59, 70] == [0, 255, 0]).all()
    dashed = np.asarray(draw_boxes(image, [[5, 5, 85, 55]], [""], ["red"], dashed=True))
    assert 0 < (dashed[55, 5:86, 0] == 255).sum() < 81  # gaps in the dashed edge
    with pytest.raises(ValueError):
        draw_boxes(image, [[5, 2, 40, 30]], [], ["red"])  # a caption per box


def test_state_colors_are_stable() -> None:
    colors = state_colors(["wet", "intact", "dry", "damaged"])
    assert colors["intact"] == state_colors(["intact"])["intact"]
    assert colors["damaged"] != colors["intact"]
    assert len(set(colors.values())) == 4
    assert colors == state_colors(["wet", "intact", "dry", "damaged"])


def test_save_prediction_images(tmp_path) -> None:
    images = [np.full((40, 50, 3), 80, dtype=np.uint8) for _ in range(3)]
    pred = {
        "boxes": torch.tensor([[2.0, 2, 20, 20], [25, 25, 45, 35]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.2]),
        "states": torch.tensor([0, 1]),
        "state_scores": torch.tensor([0.7, 0.6]),
    }
    gt = {"boxes": torch.tensor([[2.0, 2, 20, 20]]), "labels": torch.tensor([1]),
          "states": torch.tensor([0])}  # fmt: skip
    paths = save_prediction_images(
        images, [pred] * 3, [gt] * 3, ["cell", "busbar"], STATES, tmp_path, 2, score_threshold=0.5
    )
    assert [p.name for p in paths] == ["detections_01.png", "detections_02.png"]
    with Image.open(paths[0]) as img:
        assert img.height > 40 and img.width > 2 * 50  # ground truth beside predictions
    assert not (tmp_path / "detections_03.png").exists()
    # a plain detector's: no states anywhere, boxes coloured and captioned by part
    plain = {k: pred[k] for k in ("boxes", "labels", "scores")}
    gt_plain = {k: gt[k] for k in ("boxes", "labels")}
    (path,) = save_prediction_images(
        images[:1], [plain], [gt_plain], ["cell", "busbar"], [], tmp_path / "plain", 1
    )
    assert path.is_file()
