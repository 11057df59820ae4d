"""Detection EDA: every figure is written and the summary counts what the annotations hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionpipe.core.errors import DataError, UserError
from visionpipe.tasks.detection.data.eda import (
    FIGURES,
    STATE_FIGURES,
    detection_eda,
    quantiles,
    report_counts,
    samples_figure,
)

STATES = ["intact", "damaged", "absent", "occluded"]


def _image(root: Path, name: str, seed: int, size: tuple[int, int] = (64, 48)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / name)


def _coco(root: Path, split: str, boxes: list[list[tuple]]) -> dict:
    """One image per entry of ``boxes``: (category id, [x, y, w, h], state) per box."""
    images, anns = [], []
    for i, image_boxes in enumerate(boxes):
        name = f"{split}_{i}.png"
        _image(root, name, seed=i)
        images.append({"id": i + 1, "file_name": name, "width": 64, "height": 48})
        for cat, bbox, state in image_boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat,
                    "bbox": [float(v) for v in bbox],
                    "area": float(bbox[2] * bbox[3]),
                    "iscrowd": 0,
                    "attributes": {"state": state},
                }
            )
    return {
        "images": images,
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "busbar"}],
        "annotations": anns,
        "states": STATES,
    }


@pytest.fixture
def splits(tmp_path: Path) -> dict[str, dict]:
    root = tmp_path / "data"
    root.mkdir()
    return {
        "train": _coco(
            root,
            "train",
            [
                [(1, [2, 2, 20, 10], "intact"), (1, [30, 2, 20, 20], "damaged")],
                [(2, [5, 30, 40, 8], "intact")],
                [],  # an image without boxes
            ],
        ),
        "val": _coco(root, "val", [[(1, [1, 1, 10, 10], "intact")]]),
        "test": _coco(
            root, "test", [[(1, [1, 1, 10, 40], "absent"), (2, [20, 1, 30, 5], "intact")]]
        ),
    }


def test_eda_without_states_draws_no_state_figures(splits: dict, tmp_path: Path) -> None:
    """A plain detector's splits (states [], boxes without a state): part figures only."""
    plain = {}
    for name, coco in splits.items():
        anns = [{**a, "attributes": {}} for a in coco["annotations"]]
        plain[name] = {**coco, "annotations": anns, "states": []}
    figures = tmp_path / "figures"
    summary = detection_eda(plain, tmp_path / "data", figures, 4, 0)
    assert sorted(p.name for p in figures.iterdir()) == sorted(set(FIGURES) - set(STATE_FIGURES))
    assert summary["states"] == [] and "part_state" not in summary
    assert summary["part_frequency"]["all"] == {"cell": 4, "busbar": 2}


def test_eda_writes_every_figure_and_counts(splits: dict, tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    report = {
        "num_images": 6,
        "num_dropped_boxes": 2,
        "percent_dropped_boxes": 25.0,
        "clipped_boxes": 3,
        "dropped_by_reason": {"zero_area": 1, "unknown_category": 1},
        "images": {"listed": 6, "kept": 5, "missing": 1},
        "annotations": {"listed": 8, "kept": 6, "clipped": 1, "outside_image": 2},
        "dropped": [{"path": "x.png"}],
        "dropped_not_listed": 0,
        "parts": {"cell": 4, "busbar": 2},
        "note": "ignored",
    }
    summary = detection_eda(splits, tmp_path / "data", figures, 4, 0, report)
    for name in FIGURES:
        with Image.open(figures / name) as img:
            assert img.width > 100, name
    assert not list(figures.glob(".*.tmp"))

    json.dumps(summary, allow_nan=False)  # plain JSON, no NaN
    assert summary["num_images"] == 5 and summary["num_boxes"] == 6
    assert summary["images_per_split"] == {"train": 3, "val": 1, "test": 1}
    assert summary["boxes_per_split"] == {"train": 3, "val": 1, "test": 2}
    assert summary["images_without_boxes"]["train"] == 1
    assert summary["part_state"] == {
        "cell": {"intact": 2, "damaged": 1, "absent": 1, "occluded": 0},
        "busbar": {"intact": 2, "damaged": 0, "absent": 0, "occluded": 0},
    }
    assert summary["part_frequency"]["all"] == {"cell": 4, "busbar": 2}
    assert summary["state_frequency"]["test"] == {
        "intact": 1,
        "damaged": 0,
        "absent": 1,
        "occluded": 0,
    }
    assert summary["boxes_per_image"]["train"]["max"] == 2
    assert summary["boxes_per_image"]["train"]["min"] == 0
    assert summary["box_size"]["width"]["max"] == 40
    assert summary["box_size"]["area"]["min"] == 100
    assert summary["box_size"]["aspect"]["max"] == 6  # 30 x 5
    assert summary["data_report"] == {
        "num_images": 6,
        "num_dropped_boxes": 2,
        "percent_dropped_boxes": 25.0,
        "clipped_boxes": 3,
        "dropped_by_reason": {"zero_area": 1, "unknown_category": 1},
        "images": {"listed": 6, "kept": 5, "missing": 1},
        "annotations": {"listed": 8, "kept": 6, "clipped": 1, "outside_image": 2},
        "dropped": 1,
        "dropped_not_listed": 0,
    }
    assert len(summary["samples"]) == 4


def test_samples_follow_the_seed(splits: dict, tmp_path: Path) -> None:
    root, path = tmp_path / "data", tmp_path / "samples.png"
    first = samples_figure(splits, root, 3, 7, STATES, path)
    again = samples_figure(splits, root, 3, 7, STATES, path)
    other = [samples_figure(splits, root, 3, seed, STATES, path) for seed in (1, 2)]
    assert first == again and len(set(first)) == 3
    assert any(o != first for o in other)
    assert len(samples_figure(splits, root, 50, 7, STATES, path)) == 5  # all there are


def test_eda_without_boxes_or_report(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    empty = {"train": _coco(root, "train", [[], []])}
    summary = detection_eda(empty, root, tmp_path / "figures", 10, 0)
    json.dumps(summary, allow_nan=False)
    assert summary["num_boxes"] == 0 and summary["data_report"] == {}
    assert summary["box_size"]["area"]["median"] is None
    assert summary["part_state"]["cell"]["intact"] == 0
    assert all((tmp_path / "figures" / name).is_file() for name in FIGURES)


def test_eda_errors(splits: dict, tmp_path: Path) -> None:
    root = tmp_path / "data"
    splits["val"]["annotations"][0]["category_id"] = 9
    with pytest.raises(UserError, match="val split: annotation 1: category_id 9"):
        detection_eda(splits, root, tmp_path / "figures", 2, 0)
    splits["val"]["annotations"][0]["category_id"] = 1
    del splits["val"]["annotations"][0]["attributes"]
    with pytest.raises(UserError, match="annotation 1: no attributes.state"):
        detection_eda(splits, root, tmp_path / "figures", 2, 0)
    (root / "test_0.png").write_bytes(b"not an image")
    only_test = {"test": splits["test"]}
    with pytest.raises(DataError, match="test_0.png"):
        detection_eda(only_test, root, tmp_path / "figures", 1, 0)
    with pytest.raises(DataError, match="no images"):
        detection_eda({"train": {**splits["train"], "images": [], "annotations": []}}, root,
                      tmp_path / "figures", 1, 0)  # fmt: skip


def test_quantiles_and_report_helpers() -> None:
    import pandas as pd

    q = quantiles(pd.Series([1.0, 2.0, 3.0, float("nan")]))
    assert q["count"] == 3 and q["median"] == 2 and q["min"] == 1 and q["max"] == 3
    assert report_counts(None) == {}
    assert report_counts({"clipped": True, "dropped_boxes": [1, 2]}) == {"dropped_boxes": 2}
