"""Detection data in memory: scaling, flips that move boxes, targets and COCO results."""

import numpy as np
import pytest
import torch
from PIL import Image

from visionpipe.core.images import fit_scale
from visionpipe.core.params import Augment, ParamsError, params_from_dict
from visionpipe.deploy.decode import detection as decode_detection
from visionpipe.tasks.detection.model.dataset import (
    augment,
    flip,
    image_targets,
    load_split,
    to_coco_results,
)

STATES = ["intact", "damaged", "absent", "occluded"]


def coco(width=200, height=100):
    return {
        "images": [{"id": 7, "file_name": "a.png", "width": width, "height": height}],
        "categories": [{"id": 5, "name": "poly"}, {"id": 2, "name": "mono"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 2,
                "bbox": [10, 20, 30, 40],
                "attributes": {"state": "damaged"},
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 5,
                "bbox": [100, 0, 100, 50],
                "attributes": {"state": "absent"},
            },
        ],
        "states": STATES,
    }


def test_targets_follow_category_id_order_and_states():
    t = image_targets(coco(), STATES)[7]
    assert t["boxes"].tolist() == [[10, 20, 40, 60], [100, 0, 200, 50]]
    assert t["labels"].tolist() == [1, 2]  # mono (id 2) is label 1, poly (id 5) label 2
    assert t["states"].tolist() == [1, 2]


def test_fit_scale_matches_the_model_transform_and_never_enlarges():
    assert fit_scale(640, 480, 240, 320) == pytest.approx(0.5)
    assert fit_scale(1000, 100, 240, 320) == pytest.approx(0.32)  # the long side caps it
    assert fit_scale(100, 80, 240, 320) == 1.0


def test_flips_move_boxes_with_the_pixels():
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    image[:, 20:60, 10:40] = 255  # the pixels of box 1
    target = image_targets(coco(), STATES)[7]
    for horizontal in (True, False):
        flipped, moved = flip(image, target, horizontal)
        x1, y1, x2, y2 = (int(v) for v in moved["boxes"][0])
        assert flipped[0, y1:y2, x1:x2].float().mean() == 255
        assert flipped[0].float().sum() == image[0].float().sum()
        again, back = flip(flipped, moved, horizontal)
        assert torch.equal(again, image) and torch.equal(back["boxes"], target["boxes"])
        assert torch.equal(moved["states"], target["states"])


def test_augment_draws_only_from_the_generator():
    image = torch.arange(2 * 4 * 6, dtype=torch.uint8).reshape(2, 4, 6)[[0, 1, 1]]
    target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([1])}
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(3)
        torch.manual_seed(0)
        runs.append(
            [
                augment(image, target, Augment(ops=["hflip", "vflip"]), gen)[1]["boxes"]
                for _ in range(8)
            ]
        )
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    assert len({tuple(b.flatten().tolist()) for b in runs[0]}) > 1


def test_color_jitter_changes_the_pixels_and_leaves_the_boxes():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(40, 200, (3, 8, 8), generator=gen, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "labels": torch.tensor([1])}
    cfg = Augment(ops=["color_jitter"], jitter=0.4)
    out, moved = augment(image, target, cfg, torch.Generator().manual_seed(1))
    again, _ = augment(image, target, cfg, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert not torch.equal(out, image) and torch.equal(out, again)
    assert torch.equal(moved["boxes"], target["boxes"])
    assert torch.equal(
        image,
        torch.randint(
            40, 200, (3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
        ),
    )  # the dataset's own image is left as it was


def test_a_detector_takes_color_jitter_and_refuses_what_the_boxes_cannot_follow():
    from tests.test_accuracy_levers import _raw

    raw = _raw(base={"task": "detection"}, augment={"ops": ["hflip", "rot90", "color_jitter"]})
    assert params_from_dict(raw).augment.ops == ["hflip", "rot90", "color_jitter"]
    raw["augment"]["ops"] = ["hflip", "rotate"]
    with pytest.raises(ParamsError, match="augment.ops: .* 'rotate'"):
        params_from_dict(raw)


def test_load_split_scales_images_and_boxes_and_results_map_back(tmp_path):
    Image.fromarray(np.full((100, 200, 3), 90, np.uint8)).save(tmp_path / "a.png")
    data = load_split(tmp_path, coco(), STATES, min_size=50, max_size=100)
    assert tuple(data.images[0].shape) == (3, 50, 100) and data.scales == [0.5]
    assert data.targets[0]["boxes"][0].tolist() == [5, 10, 20, 30]
    out = {
        "boxes": data.targets[0]["boxes"],
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.4]),
        "states": torch.tensor([1, 3]),
        "state_scores": torch.tensor([0.8, 0.6]),
    }
    records = to_coco_results([out], data.image_ids, data.scales, coco(), STATES)
    assert records[0] == {
        "image_id": 7,
        "category_id": 2,
        "bbox": [10.0, 20.0, 30.0, 40.0],
        "score": pytest.approx(0.9),
        "state": "damaged",
        "state_score": pytest.approx(0.8),
    }
    assert records[1]["category_id"] == 5 and records[1]["state"] == "occluded"


def test_frame_record_summarises_kept_detections():
    out = {
        "boxes": torch.tensor([[10.0, 20, 30, 40], [0, 0, 8, 8], [1, 1, 2, 2]]),
        "labels": torch.tensor([1, 2, 2]),
        "scores": torch.tensor([0.9, 0.7, 0.2]),
        "states": torch.tensor([0, 1, 1]),
        "state_scores": torch.tensor([0.95, 0.6, 0.9]),
    }
    meta = {"labels": ["mono", "poly"], "states": STATES, "score_threshold": 0.5}
    (record,) = decode_detection(out, meta, 0.5)  # the input was half the file's size
    objects = record.pop("objects")
    assert record == {
        "class": "mono/intact:1 poly/damaged:1",
        "confidence": pytest.approx(0.6),
        "detections": 2,
    }
    assert objects == [
        {
            "part": "mono",
            "box": [20.0, 40.0, 60.0, 80.0],
            "score": pytest.approx(0.9),
            "confidence": pytest.approx(0.9),
            "state": "intact",
            "state_score": pytest.approx(0.95),
        },
        {
            "part": "poly",
            "box": [0.0, 0.0, 16.0, 16.0],
            "score": pytest.approx(0.7),
            "confidence": pytest.approx(0.6),
            "state": "damaged",
            "state_score": pytest.approx(0.6),
        },
    ]
    empty = {k: v[:0] for k, v in out.items()}
    assert decode_detection(empty, meta)[0]["class"] == "none"
    assert decode_detection(empty, meta)[0]["objects"] == []
    # a plain detector's three outputs: parts counted, the box scores the confidence
    plain = {k: out[k] for k in ("boxes", "labels", "scores")}
    (record,) = decode_detection(plain, {**meta, "states": []})
    assert [set(o) for o in record.pop("objects")] == [{"part", "box", "score", "confidence"}] * 2
    assert record == {"class": "mono:1 poly:1", "confidence": pytest.approx(0.7), "detections": 2}
