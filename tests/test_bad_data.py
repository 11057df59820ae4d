"""Data a user's folder delivers: decoded the way it is displayed, huge images and links out
of the data folder skipped and listed, annotation sets without boxes stopped (issue #18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import make_class_folders, write_huge_png, write_image
from visionpipe.core import paths
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.images import TOO_LARGE, decode_image, decode_scaled_array
from visionpipe.core.sources.folder import check_image, scan_folder
from visionpipe.core.sources.table import scan_table
from visionpipe.tasks.detection.data.coco_source import scan_coco
from visionpipe.tasks.detection.model.dataset import load_split

STATES = ["intact", "damaged", "absent", "occluded"]


# --- decoding -----------------------------------------------------------------------------


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode == "I;16"  # what Pillow makes of it: the case that used to clip
    decoded = decode_image(tmp_path / "deep.png", 8)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(decoded[0], expected) and np.array_equal(decoded[0], decoded[2])
    assert 0 < decoded.max() < 255 and len(np.unique(decoded)) > 50


def exif_rotated_jpeg(path: Path) -> np.ndarray:
    """A 40 x 20 (w x h) JPEG stored with EXIF orientation 6 (shown rotated 90 degrees
    clockwise, 20 x 40); a bright block marks the stored top-left. Returns the displayed
    pixels as they should be (gray)."""
    stored = np.full((20, 40), 30, dtype=np.uint8)
    stored[0:8, 0:12] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    return np.rot90(stored, k=-1)  # clockwise


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    expected = exif_rotated_jpeg(tmp_path / "phone.jpg")
    decoded = decode_scaled_array(tmp_path / "phone.jpg", 1.0)
    assert decoded.shape == (3, 40, 20)
    assert np.abs(decoded[0].astype(int) - expected).max() < 40  # JPEG: close, not exact
    assert decoded[0, 0:8, 12:20].min() > 180 and decoded[0, 30:, :8].max() < 80
    assert check_image(tmp_path / "phone.jpg")[:2] == (20, 40)  # the displayed size


def test_an_oriented_tiff_is_checked_as_it_is_decoded(tmp_path: Path) -> None:
    """Pillow's TIFF reader handles the orientation itself: prepare's size is the decoded one."""
    stored = np.zeros((20, 40), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "scan.tif", exif=exif)
    decoded = decode_scaled_array(tmp_path / "scan.tif", 1.0)
    assert check_image(tmp_path / "scan.tif")[:2] == (decoded.shape[2], decoded.shape[1])


def test_float_images_are_scaled(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert decode_scaled_array(tmp_path / "f.tif", 1.0)[0].tolist() == [[0, 128, 255]]


@pytest.mark.parametrize("kind", ["L+trns", "P+trns", "LA"])
def test_every_kind_of_transparency_is_composited(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "t.png"
    values = np.array([[200, 90]], dtype=np.uint8)  # the first pixel is the transparent one
    if kind == "L+trns":
        Image.fromarray(values).save(path, transparency=200)
    elif kind == "P+trns":
        Image.fromarray(values).convert("P").save(path, transparency=200)
    else:
        Image.fromarray(np.stack([values, np.array([[0, 255]], np.uint8)], -1), "LA").save(path)
    decoded = decode_scaled_array(path, 1.0)
    assert decoded[:, 0, 0].tolist() == [0, 0, 0] and decoded[:, 0, 1].tolist() == [90, 90, 90]


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200  # colour under the transparent pixels: arbitrary, must not show
    rgba[:2, :, 3] = 255  # top half opaque
    rgba[2:, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "cutout.png")
    decoded = decode_scaled_array(tmp_path / "cutout.png", 1.0)
    assert (decoded[:, :2] == 200).all() and (decoded[:, 2:] == 0).all()


def test_detection_boxes_land_on_the_displayed_pixels(tmp_path: Path) -> None:
    """CVAT and COCO annotate the displayed (EXIF-rotated) frame: the box drawn around the
    bright block there must hold the bright pixels after decoding and scaling."""
    exif_rotated_jpeg(tmp_path / "phone.jpg")
    box = [12, 0, 8, 8]  # x, y, w, h of the bright block in the displayed 20 x 40 image
    coco = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": 20, "height": 40}],
        "categories": [{"id": 1, "name": "part"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": box,
                "attributes": {"state": "intact"},
            }
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    scan = scan_coco(tmp_path, "ann.json", "state", STATES, workers=1)
    assert scan.report["images"]["size_mismatch"] == 0
    split = load_split(tmp_path, scan.coco, STATES, min_size=20, max_size=20)
    image, (x1, y1, x2, y2) = split.images[0], split.targets[0]["boxes"][0].round().int().tolist()
    assert image.shape[-2:] == (20, 10)  # scaled by 0.5, aspect kept
    assert image[0, y1:y2, x1:x2].float().mean() > 180
    assert image[0, 10:, :].float().mean() < 60


# --- huge images (decompression bombs) ----------------------------------------------------


@pytest.mark.parametrize("side", [10_000, 30_000])  # over the limit; over twice the limit
def test_a_huge_image_is_skipped_and_counted_in_prepare(tmp_path: Path, side: int) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    write_huge_png(root / "a" / "huge.png", side, side)
    scan = scan_folder(root, workers=1)
    assert len(scan.samples) == 6
    assert [s["path"] for s in scan.skipped] == ["a/huge.png"]
    assert scan.skipped[0]["reason"].startswith(TOO_LARGE)


# --- data folders: links leading out, annotation sets without boxes ------------------------


def test_links_leading_out_of_the_data_folder_are_skipped(tmp_path) -> None:
    secret = write_image(tmp_path / "elsewhere" / "secret.png")
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    (root / "a" / "linked.png").symlink_to(secret)
    (root / "b" / "inside.png").symlink_to(root / "b" / "b_000.png")  # stays inside: fine
    scan = scan_folder(root, workers=1)
    assert "b/inside.png" in set(scan.samples["path"])
    assert [s["path"] for s in scan.skipped] == ["a/linked.png"]
    assert scan.skipped[0]["reason"] == (
        f"a link leading outside the data folder (to {secret.resolve()})"
    )


def test_a_table_row_through_a_linked_folder_is_skipped(tmp_path) -> None:
    outside = make_class_folders(tmp_path / "elsewhere", {"x": 2})
    root = make_class_folders(tmp_path / "data", {"a": 2, "b": 2})
    (root / "via").symlink_to(outside / "x", target_is_directory=True)
    rows = [
        ("a/a_000.png", "a"),
        ("a/a_001.png", "a"),
        ("b/b_000.png", "b"),
        ("via/x_000.png", "b"),
    ]
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(root / "labels.csv", index=False)
    scan = scan_table(root, "labels.csv", workers=1)
    assert len(scan.samples) == 3
    assert [(s["path"], s["row"]) for s in scan.skipped] == [("via/x_000.png", 5)]
    assert "a link leading outside the data folder" in scan.skipped[0]["reason"]
    # the table itself, linked in from outside: refused
    (outside / "labels.csv").write_text((root / "labels.csv").read_text())
    (root / "linked.csv").symlink_to(outside / "labels.csv")
    with pytest.raises(UserError, match="^data.table 'linked.csv': a link leading outside"):
        scan_table(root, "linked.csv", workers=1)


def test_coco_links_out_and_the_dvc_cache(tmp_path, monkeypatch) -> None:
    root = tmp_path / "data"
    write_image(root / "a.png", size=(40, 30), mode="RGB")
    outside = write_image(tmp_path / "elsewhere" / "b.png", size=(40, 30), mode="RGB")
    (root / "b.png").symlink_to(outside)
    box = {"category_id": 1, "bbox": [1, 1, 10, 10], "attributes": {"state": "intact"}}
    coco = {
        "images": [
            {"id": i, "file_name": f"{n}.png", "width": 40, "height": 30}
            for i, n in ((1, "a"), (2, "b"))
        ],
        "categories": [{"id": 1, "name": "part"}],
        "annotations": [{"id": i, "image_id": i, **box} for i in (1, 2)],
    }
    (root / "ann.json").write_text(json.dumps(coco))
    monkeypatch.setattr(paths, "_dvc_cache_dir", lambda: None)
    scan = scan_coco(root, "ann.json", "state", STATES, workers=1)
    assert scan.report["images"]["kept"] == 1 and scan.report["images"]["undecodable"] == 1
    assert "a link leading outside the data folder" in json.dumps(scan.report["dropped"])
    # DVC's cache.type symlink: every tracked file links into the cache, which is allowed
    monkeypatch.setattr(paths, "_dvc_cache_dir", lambda: (tmp_path / "elsewhere").resolve())
    assert scan_coco(root, "ann.json", "state", STATES, workers=1).report["images"]["kept"] == 2


@pytest.mark.parametrize("annotations", [[], "all outside"])
def test_an_annotation_set_without_boxes_stops_prepare(tmp_path, annotations) -> None:
    write_image(tmp_path / "a.png", size=(40, 30), mode="RGB")
    boxes = (
        []
        if annotations == []
        else [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [50, 50, 5, 5],
                "attributes": {"state": "intact"},
            }
        ]
    )
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "part"}],
        "annotations": boxes,
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="ann.json: no boxes to train on"):
        scan_coco(tmp_path, "ann.json", "state", STATES, workers=1)
