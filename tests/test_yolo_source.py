"""YOLO exports (Ultralytics, Roboflow) read as a raw COCO dict: layouts, labels and errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import write_image
from visionpipe.core.errors import UserError
from visionpipe.tasks.detection.data.coco_source import _clean_categories, _clean_images
from visionpipe.tasks.detection.data.yolo_source import yolo_label_path, yolo_to_coco

ULTRALYTICS_YAML = "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: wheel\n  1: chain\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def image(path: Path) -> Path:
    return write_image(path, size=(40, 30), mode="RGB")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An Ultralytics export in tmp_path/a/ds (room outside it for the escape tests)."""
    ds = tmp_path / "a" / "ds"
    write(ds / "data.yaml", ULTRALYTICS_YAML)
    for name in ("train/a.png", "train/b.jpg", "train/sub/d.png", "val/c.png"):
        image(ds / "images" / name)
    image(ds / "images/train/.hidden.png")
    write(ds / "images/train/notes.txt", "not an image")
    write(ds / "labels/train/a.txt", "0 0.5 0.5 0.5 0.5\n\n1 0.25 0.5 0.5 1\n")
    write(ds / "labels/train/sub/d.txt", "")
    write(ds / "labels/val/c.txt", "1 0.5 0.5 0.25 0.5\n")
    return ds


def boxes_of(coco: dict, file_name: str) -> list[tuple[int, list[float]]]:
    iid = next(i["id"] for i in coco["images"] if i["file_name"] == file_name)
    return [(a["category_id"], a["bbox"]) for a in coco["annotations"] if a["image_id"] == iid]


def test_ultralytics_layout(root: Path):
    coco = yolo_to_coco(root, "data.yaml")
    assert set(coco) == {"images", "annotations", "categories", "yolo"}
    assert coco["categories"] == [{"id": 1, "name": "wheel"}, {"id": 2, "name": "chain"}]
    assert [(i["id"], i["file_name"], i["split"]) for i in coco["images"]] == [
        (1, "images/train/a.png", "train"),
        (2, "images/train/b.jpg", "train"),
        (3, "images/train/sub/d.png", "train"),
        (4, "images/val/c.png", "val"),
    ]
    assert all((i["width"], i["height"]) == (40, 30) for i in coco["images"])
    assert boxes_of(coco, "images/train/a.png") == [
        (1, [10.0, 7.5, 20.0, 15.0]),
        (2, [0.0, 0.0, 20.0, 30.0]),
    ]
    assert boxes_of(coco, "images/val/c.png") == [(2, [15.0, 7.5, 10.0, 15.0])]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    assert all(a["attributes"] == {} for a in coco["annotations"])
    assert coco["yolo"] == {"without_label_file": 1, "segments": 0}  # b.jpg; d.txt is empty


def test_result_passes_the_scan_validators(root: Path):
    coco = yolo_to_coco(root, "data.yaml")
    assert len(_clean_images(coco["images"])) == 4
    assert [c["name"] for c in _clean_categories(coco["categories"])] == ["wheel", "chain"]


@pytest.mark.parametrize("folder", ["", "export/"])
def test_roboflow_layout(tmp_path: Path, folder: str):
    ds = tmp_path / folder
    yaml = "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
    write(ds / "data.yaml", yaml + "nc: 2\nnames: ['a', ' b ']\n")
    for split in ("train", "valid", "test"):
        image(ds / split / "images" / f"{split}.jpg")
    write(ds / "train/labels/train.txt", "1 0.5 0.5 0.5 0.5\n")
    write(ds / "valid/labels/valid.txt", "0 0.5 0.5 0.25 0.5\n")
    coco = yolo_to_coco(tmp_path, f"{folder}data.yaml")
    assert coco["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert [(i["file_name"], i["split"]) for i in coco["images"]] == [
        (f"{folder}train/images/train.jpg", "train"),
        (f"{folder}valid/images/valid.jpg", "val"),
        (f"{folder}test/images/test.jpg", "test"),
    ]
    assert boxes_of(coco, f"{folder}train/images/train.jpg") == [(2, [10.0, 7.5, 20.0, 15.0])]
    assert coco["yolo"]["without_label_file"] == 1


def test_txt_list_segments_and_absolute_path_key(root: Path, caplog: pytest.LogCaptureFixture):
    write(root / "lists/train.txt", "./../images/train/a.png\nimages/train/b.jpg\n\n")
    write(
        root / "data.yaml",
        "path: /content/datasets/mine\ntrain: lists/train.txt\nval: [images/val]\nnames: [p, q]\n",
    )
    write(root / "labels/train/a.txt", "0 0.25 0.5 0.75 0.25 0.5 1.0\n1 0.5 0.5 0.5 0.5\n")
    with caplog.at_level(logging.INFO, logger="visionpipe.tasks.detection.data.yolo_source"):
        coco = yolo_to_coco(root, "data.yaml")
    assert "ignoring path '/content/datasets/mine'" in caplog.text
    assert [(i["file_name"], i["split"]) for i in coco["images"]] == [
        ("images/train/a.png", "train"),
        ("images/train/b.jpg", "train"),
        ("images/val/c.png", "val"),
    ]
    assert boxes_of(coco, "images/train/a.png") == [
        (1, [10.0, 7.5, 20.0, 22.5]),
        (2, [10.0, 7.5, 20.0, 15.0]),
    ]
    assert coco["yolo"] == {"without_label_file": 1, "segments": 1}


def test_relative_path_key_and_string_name_keys(tmp_path: Path):
    write(tmp_path / "cfg/data.yaml", "path: ../ds\ntrain: images\nnames: {'1': y, '0': x}\n")
    image(tmp_path / "ds/images/m.png")
    write(tmp_path / "ds/labels/m.txt", "1 0.5 0.5 0.5 0.5\n")
    coco = yolo_to_coco(tmp_path, "cfg/data.yaml")
    assert coco["categories"] == [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]
    assert [i["file_name"] for i in coco["images"]] == ["ds/images/m.png"]
    assert coco["annotations"][0]["category_id"] == 2


def test_label_path_rule():
    assert yolo_label_path("a/images/x/images/b.jpg") == "a/images/x/labels/b.txt"
    assert yolo_label_path("imgs/b.png") == "imgs/b.txt"
    assert yolo_label_path("images/b.tar.png") == "labels/b.tar.txt"


def test_unreadable_image_listed_with_zero_size(root: Path):
    write(root / "images/val/broken.png", "not a png")
    coco = yolo_to_coco(root, "data.yaml")
    broken = next(i for i in coco["images"] if i["file_name"] == "images/val/broken.png")
    assert (broken["width"], broken["height"]) == (0, 0)


def test_size_respects_exif_orientation(root: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed 30 wide, 40 high
    Image.new("RGB", (40, 30)).save(root / "images/val/c.jpg", exif=exif)
    write(root / "labels/val/c.txt", "0 0.5 0.5 0.5 0.5\n")
    coco = yolo_to_coco(root, "data.yaml")
    rotated = next(i for i in coco["images"] if i["file_name"] == "images/val/c.jpg")
    assert (rotated["width"], rotated["height"]) == (30, 40)
    assert boxes_of(coco, "images/val/c.jpg") == [(1, [7.5, 10.0, 15.0, 20.0])]


def raises_one_line(root: Path, match: str, names: str, data_yaml: str = "data.yaml") -> None:
    with pytest.raises(UserError, match=match) as info:
        yolo_to_coco(root, data_yaml)
    message = str(info.value)
    assert "\n" not in message
    assert names in message


LABEL_ERRORS = [
    ("0 0.5 x 0.5 0.5", r"a\.txt:2: 'x' is not a number"),
    ("2 0.5 0.5 0.5 0.5", r"a\.txt:2: class 2 is not in 0\.\.1"),
    ("0.5 0.5 0.5 0.5 0.5", r"a\.txt:2: class '0\.5' is not an integer"),
    ("0 0.5 0.5 nan 0.5", r"a\.txt:2: 'nan' is not a finite number"),
    ("0 0.5", r"a\.txt:2: .*got 2 numbers"),
    ("0 0.5 0.5 0.5", r"a\.txt:2: .*got 4 numbers"),
    ("0 0.1 0.1 0.2 0.2 0.3", r"a\.txt:2: .*got 6 numbers"),
]


@pytest.mark.parametrize(("line", "match"), LABEL_ERRORS)
def test_label_line_errors(root: Path, line: str, match: str):
    write(root / "labels/train/a.txt", f"0 0.5 0.5 0.5 0.5\n{line}\n")
    raises_one_line(root, match, str(root / "labels/train/a.txt"))


YAML_ERRORS = [
    ("nc: 3\nnames: [a, b]\ntrain: images/train\n", r"nc is 3 but names lists 2 classes"),
    ("names: [a, b]\nval: images/val\n", r"no 'train' key"),
    ("names: [a, b]\ntrain: images/nope\n", r"train 'images/nope': not found"),
    ("names: [a, b]\ntrain: ../../elsewhere\n", r"train '\.\./\.\./elsewhere' leads outside"),
    ("- a\n- b\n", r"expected a mapping"),
    ("train: [a, b\nnames: x\n", r"data\.yaml:\d+: not valid YAML"),
    ("train: images/train\n", r"'names' must be a non-empty list"),
    ("names: []\ntrain: images/train\n", r"'names' must be a non-empty list"),
    ("names: [a, ' a']\ntrain: images/train\n", r"names\[1\] 'a' is also names\[0\]"),
    ("names: {0: a, 2: b}\ntrain: images/train\n", r"keys must be class indices"),
    ("names: [a]\ntrain: images/train\nval: images/train/sub\n", r"in both train and val"),
    ("names: [a]\ntrain: 2017\n", r"train: expected folder\(s\)"),
]


@pytest.mark.parametrize(("text", "match"), YAML_ERRORS)
def test_data_yaml_errors(root: Path, text: str, match: str):
    write(root / "data.yaml", text)
    image(root.parent.parent / "elsewhere/x.png")
    raises_one_line(root, match, str(root / "data.yaml"))


@pytest.mark.parametrize("data_yaml", ["/etc/data.yaml", "../data.yaml", "missing.yaml"])
def test_bad_data_yaml_argument(root: Path, data_yaml: str):
    raises_one_line(root, r"data\.yaml|missing\.yaml", data_yaml.lstrip("./"), data_yaml)


def test_listed_image_escaping_root(root: Path):
    write(root / "train.txt", "../../elsewhere/x.png\n")
    write(root / "data.yaml", "names: [a]\ntrain: train.txt\n")
    raises_one_line(root, r"train\.txt:1: image .* leads outside", str(root / "train.txt"))


def test_symlink_to_folder_outside_root(root: Path, tmp_path: Path):
    image(tmp_path / "outside/x.png")
    try:
        os.symlink(tmp_path / "outside", root / "images/link", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symlinks unsupported here")
    write(root / "data.yaml", "names: [a]\ntrain: images/link\n")
    raises_one_line(root, r"train 'images/link': a link leading outside", str(root / "data.yaml"))


def test_a_test_entry_without_its_folder_is_a_warning(root: Path, caplog):
    """Exporters list ``test:`` with no test folder: no test images (carved from train later),
    said in a warning; a missing train folder stays an error."""
    write(root / "data.yaml", ULTRALYTICS_YAML + "test: images/test\n")
    with caplog.at_level(logging.WARNING):
        coco = yolo_to_coco(root, "data.yaml")
    assert {i["split"] for i in coco["images"]} == {"train", "val"}
    assert "test 'images/test': not found" in caplog.text
