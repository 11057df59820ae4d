"""COCO / simple detection annotations: conversion, validation, repairs and the report."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_image
from visionpipe.core.coco import read_coco, subset_coco, write_coco
from visionpipe.core.errors import DataError, UserError
from visionpipe.tasks.detection.data.coco_source import (
    MANIFEST_COLUMNS,
    coco_to_simple,
    scan_coco,
    simple_to_coco,
)
from visionpipe.tasks.detection.data.split import _holdout, split_images

STATES = ["intact", "damaged", "absent", "occluded"]


def ann(aid: int, image_id: int, bbox: list, state: str = "intact", category_id: int = 1):
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": 1.0,
        "iscrowd": 0,
        "segmentation": [],
        "attributes": {"occluded": False, "state": state},
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three 40x30 RGB images, one of them in a sub-folder."""
    for name in ("a.png", "b.png", "sub/c.png"):
        write_image(tmp_path / name, size=(40, 30), mode="RGB")
    return tmp_path


def base_coco() -> dict:
    return {
        "info": {"description": "exported by CVAT"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 3, "file_name": "sub/c.png", "width": 40, "height": 30},
        ],
        "categories": [{"id": 2, "name": "poly"}, {"id": 1, "name": "mono"}],
        "annotations": [
            ann(1, 1, [1, 2, 10, 8], "intact"),
            ann(2, 1, [20, 2, 10, 8], "damaged", category_id=2),
            ann(3, 2, [5, 5, 10, 10], "occluded"),
        ],
    }


def scan(root: Path, coco: dict | list, state_key: str = "state", name: str = "ann.json"):
    (root / name).write_text(json.dumps(coco))
    return scan_coco(root, name, state_key, STATES, workers=1)


def test_clean_coco_manifest_and_report(root: Path) -> None:
    result = scan(root, base_coco())
    coco = result.coco
    assert coco["categories"] == [{"id": 1, "name": "mono"}, {"id": 2, "name": "poly"}]
    assert coco["states"] == STATES
    assert [a["attributes"] for a in coco["annotations"]] == [
        {"state": "intact"},
        {"state": "damaged"},
        {"state": "occluded"},
    ]
    first = coco["annotations"][0]
    assert first["bbox"] == [1.0, 2.0, 10.0, 8.0] and first["area"] == 80.0
    assert set(first) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "attributes"}
    manifest = result.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest.to_dict("records") == [
        {
            "path": "a.png",
            "image_id": 1,
            "width": 40,
            "height": 30,
            "boxes": 2,
            "parts": "mono|poly",
            "states": "damaged|intact",
            "split": "",  # a pre-split export's own split, else empty
        },
        {
            "path": "b.png",
            "image_id": 2,
            "width": 40,
            "height": 30,
            "boxes": 1,
            "parts": "mono",
            "states": "occluded",
            "split": "",  # a pre-split export's own split, else empty
        },
        {
            "path": "sub/c.png",
            "image_id": 3,
            "width": 40,
            "height": 30,
            "boxes": 0,
            "parts": "",
            "states": "",
            "split": "",  # a pre-split export's own split, else empty
        },
    ]
    report = result.report
    assert report["format"] == "coco" and report["annotations_file"] == "ann.json"
    assert report["images"] == {
        "listed": 3,
        "kept": 3,
        "missing": 0,
        "undecodable": 0,
        "size_mismatch": 0,
        "without_boxes": 1,
    }
    assert report["annotations"]["listed"] == report["annotations"]["kept"] == 3
    assert report["parts"] == {"mono": 2, "poly": 1}
    assert report["states"] == {"intact": 1, "damaged": 1, "absent": 0, "occluded": 1}
    assert report["dropped"] == []
    json.dumps(report, allow_nan=False)  # serializable, no NaN


def test_state_read_from_top_level_key(root: Path) -> None:
    coco = base_coco()
    for a in coco["annotations"]:
        a["condition"] = a.pop("attributes")["state"]
    result = scan(root, coco, state_key="condition")
    assert [a["attributes"]["state"] for a in result.coco["annotations"]] == [
        "intact",
        "damaged",
        "occluded",
    ]


def test_simple_round_trip(root: Path) -> None:
    records = [
        {"image": "b.png", "parts": [{"name": "poly", "bbox": [1, 1, 5, 5], "cond": "absent"}]},
        {"image": "a.png", "parts": []},
        {
            "image": "sub/c.png",
            "parts": [
                {"name": "mono", "bbox": [0, 0, 4.5, 4], "cond": "intact"},
                {"name": "poly", "bbox": [3, 3, 6, 6], "cond": "damaged"},
            ],
        },
    ]
    coco = simple_to_coco(records, root, "cond")
    assert coco["categories"] == [{"id": 1, "name": "mono"}, {"id": 2, "name": "poly"}]
    assert [i["id"] for i in coco["images"]] == [1, 2, 3]
    assert coco["images"][0] == {"id": 1, "file_name": "b.png", "width": 40, "height": 30}
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    assert coco_to_simple(coco, "cond") == records

    result = scan(root, records, state_key="cond")
    assert result.report["format"] == "simple"
    assert result.manifest["path"].tolist() == ["b.png", "a.png", "sub/c.png"]
    expected = copy.deepcopy(records)  # the cleaned dict names the state "state"
    for record in expected:
        for part in record["parts"]:
            part["state"] = part.pop("cond")
    assert coco_to_simple(result.coco) == expected


def test_simple_format_errors(root: Path) -> None:
    with pytest.raises(UserError, match=r"ann.json: record 2: expected an object with 'image'"):
        scan(root, [{"image": "a.png", "parts": []}, {"parts": []}])
    with pytest.raises(UserError, match=r"ann.json: record 1 \('a.png'\) part 1: 'name' must"):
        scan(root, [{"image": "a.png", "parts": [{"bbox": [1, 1, 2, 2], "state": "intact"}]}])
    with pytest.raises(UserError, match=r"ann.json: record 1: path '../x.png' escapes the data"):
        scan(root, [{"image": "../x.png", "parts": []}])
    bad_box = [{"image": "a.png", "parts": [{"name": "m", "bbox": [1, 2], "state": "intact"}]}]
    with pytest.raises(UserError, match=r"annotation 1 \(image a.png\): bbox must be 4 finite"):
        scan(root, bad_box)


STRUCTURAL_ERRORS = [
    (
        lambda c: c.pop("categories"),
        r"not a COCO file: missing top-level key\(s\) categories$",
    ),
    (lambda c: c["images"].append(dict(c["images"][0])), r"image 1: duplicate image id$"),
    (
        lambda c: c["annotations"].append(ann(3, 2, [1, 1, 2, 2])),
        r"annotation 3 \(image b.png\): duplicate annotation id$",
    ),
    (
        lambda c: c["annotations"][1].update(bbox=[1, 2, 3]),
        r"annotation 2 \(image a.png\): bbox must be 4 finite numbers \[x, y, w, h\], got",
    ),
    (
        lambda c: c["annotations"][1].update(bbox=[1, 2, "3", 4]),
        r"annotation 2 \(image a.png\): bbox must be 4",
    ),
    (
        lambda c: c["annotations"][2].update(image_id="2"),
        r"annotation 3: 'image_id' must be an integer, got '2'$",
    ),
    (
        lambda c: c["annotations"][0]["attributes"].update(state="intakt"),
        r"annotation 1 \(image a.png\): state 'intakt' is not one of the allowed states "
        r"\['intact', 'damaged', 'absent', 'occluded'\]$",
    ),
    (
        lambda c: c["annotations"][2]["attributes"].pop("state"),
        r"annotation 3 \(image b.png\): no 'state' attribute; allowed states: \['intact'",
    ),
    (
        lambda c: c["images"][2].update(file_name="/etc/passwd"),
        r"image 3: path '/etc/passwd' is absolute",
    ),
    (
        lambda c: c["images"][2].update(file_name="sub/../../c.png"),
        r"image 3: path 'sub/../../c.png' escapes the data root$",
    ),
    (
        lambda c: c["images"][1].update(file_name="a.png"),
        r"image 2: file 'a.png' is also image 1$",
    ),
    (
        lambda c: c["categories"].append({"id": 3, "name": "mono"}),
        r"category 3: name 'mono' is also category 1$",
    ),
    (lambda c: c.update(images={}), r"'images' must be a list$"),
]


@pytest.mark.parametrize(("edit", "message"), STRUCTURAL_ERRORS)
def test_structural_errors_are_one_line(root: Path, edit, message: str) -> None:
    coco = base_coco()
    edit(coco)
    with pytest.raises(UserError, match=r"ann.json: " + message) as exc:
        scan(root, coco)
    assert "\n" not in str(exc.value)


def test_unknown_state_is_checked_before_anything_is_dropped(root: Path) -> None:
    coco = base_coco()
    coco["annotations"].append(ann(9, 77, [1, 1, 5, 5], "brokn"))  # unknown image too
    with pytest.raises(UserError, match=r"annotation 9: state 'brokn' is not one of"):
        scan(root, coco)


def test_file_and_params_errors(root: Path) -> None:
    (root / "bad.json").write_text('{"images": [1,')
    with pytest.raises(UserError, match=r"bad.json: invalid JSON at line 1 column 15"):
        scan_coco(root, "bad.json", "state", STATES)
    with pytest.raises(DataError, match=r"nope.json: annotations file not found"):
        scan_coco(root, "nope.json", "state", STATES)
    for bad in ("/abs/ann.json", "../ann.json", ""):
        with pytest.raises(UserError, match=r"expected a JSON file inside the data root"):
            scan_coco(root, bad, "state", STATES)
    with pytest.raises(DataError, match=r"data path does not exist"):
        scan_coco(root / "missing", "ann.json", "state", STATES)
    with pytest.raises(UserError, match=r"expected a COCO object or a list of image records"):
        scan(root, "text")
    with pytest.raises(UserError, match=r"data.states: expected distinct state names"):
        scan_coco(root, "ann.json", "state", ["a", "a"])


def test_repairs_are_counted(root: Path) -> None:
    (root / "broken.png").write_bytes(b"not a png at all")
    coco = base_coco()
    coco["images"] += [
        {"id": 4, "file_name": "gone.png", "width": 40, "height": 30},
        {"id": 5, "file_name": "broken.png", "width": 40, "height": 30},
    ]
    coco["images"][1].update(width=80, height=60)  # b.png really is 40x30
    coco["annotations"] += [
        ann(10, 1, [35, -5, 10, 10]),  # partly outside: clipped to [35, 0, 5, 5]
        ann(11, 1, [50, 5, 5, 5]),  # wholly outside
        ann(12, 1, [39.5, 5, 5, 5]),  # under one pixel left after clipping
        ann(13, 1, [5, 5, 0, 5]),  # zero width
        ann(14, 1, [5, 5, 5, -2]),  # negative height
        ann(15, 99, [5, 5, 5, 5]),  # unknown image
        ann(16, 1, [5, 5, 5, 5], category_id=7),  # unknown category
        ann(17, 4, [5, 5, 5, 5]),  # image missing on disk
        ann(18, 5, [5, 5, 5, 5]),  # image not decodable
        ann(19, 2, [60, 40, 10, 10]),  # inside the JSON size, outside the real one
    ]
    result = scan(root, coco)
    report = result.report
    assert report["images"] == {
        "listed": 5,
        "kept": 3,
        "missing": 1,
        "undecodable": 1,
        "size_mismatch": 1,
        "without_boxes": 1,
    }
    assert report["annotations"] == {
        "listed": 13,
        "kept": 4,
        "non_positive_size": 2,
        "clipped": 1,
        "outside_image": 3,
        "unknown_image": 1,
        "unknown_category": 1,
        "image_missing": 2,
    }
    clipped = next(a for a in result.coco["annotations"] if a["id"] == 10)
    assert clipped["bbox"] == [35.0, 0.0, 5.0, 5.0] and clipped["area"] == 25.0
    assert [i["id"] for i in result.coco["images"]] == [1, 2, 3]
    assert result.coco["images"][1] == {"id": 2, "file_name": "b.png", "width": 40, "height": 30}
    dropped = {(d.get("annotation_id"), d.get("image_id")): d for d in report["dropped"]}
    assert dropped[(None, 4)] == {"image_id": 4, "file": "gone.png", "reason": "file not found"}
    assert dropped[(None, 5)]["reason"].startswith("corrupt or truncated image")
    assert dropped[(15, None)] == {"annotation_id": 15, "reason": "unknown image_id 99"}
    assert dropped[(16, None)]["file"] == "a.png"
    assert len(report["dropped"]) == 2 + 9
    json.dumps(report, allow_nan=False)


def test_dropped_list_is_capped(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("visionpipe.tasks.detection.data.coco_source.MAX_LISTED", 3)
    coco = base_coco()
    coco["annotations"] = [ann(i, 1, [5, 5, 0, 5]) for i in range(1, 8)]
    coco["annotations"].append(ann(8, 2, [5, 5, 10, 10]))  # one usable box: prepare goes on
    report = scan(root, coco).report
    assert report["annotations"]["non_positive_size"] == 7
    assert len(report["dropped"]) == 3 and report["dropped_not_listed"] == 4


def test_no_usable_image_is_an_error(root: Path) -> None:
    coco = base_coco()
    for image in coco["images"]:
        image["file_name"] = "x_" + image["file_name"]
    with pytest.raises(DataError, match=r"ann.json: none of the 3 listed images is usable"):
        scan(root, coco)


def test_subset_and_stable_write(root: Path, tmp_path: Path) -> None:
    coco = scan(root, base_coco()).coco
    part = subset_coco(coco, [2, 3])
    assert [i["id"] for i in part["images"]] == [2, 3]
    assert [a["id"] for a in part["annotations"]] == [3]
    assert part["categories"] == coco["categories"] and part["states"] == STATES
    with pytest.raises(ValueError, match="image id 42"):
        subset_coco(coco, [1, 42])

    write_coco(tmp_path / "out" / "one.json", coco)
    shuffled = dict(reversed(list(coco.items())))
    shuffled["annotations"] = list(reversed(coco["annotations"]))
    write_coco(tmp_path / "out" / "two.json", shuffled)
    one = (tmp_path / "out" / "one.json").read_bytes()
    assert one == (tmp_path / "out" / "two.json").read_bytes()
    assert read_coco(tmp_path / "out" / "one.json") == coco
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.json", "two.json"]


def test_float_boxes_inside_the_image_are_kept_exactly(root: Path) -> None:
    coco = base_coco()
    coco["annotations"] = [ann(1, 1, [0.1, 0.2, 10.2, 9.7])]
    result = scan(root, coco)
    assert result.coco["annotations"][0]["bbox"] == [0.1, 0.2, 10.2, 9.7]
    assert result.report["annotations"]["clipped"] == 0
    assert math.isclose(result.coco["annotations"][0]["area"], 10.2 * 9.7)


# --- the detection split of the scanned manifest (tasks/detection/data/split.py) ----------------


def manifest_of(parts: list[str]) -> pd.DataFrame:
    n = len(parts)
    return pd.DataFrame(
        {
            "path": [f"img_{i:03d}.png" for i in range(n)],
            "image_id": range(1, n + 1),
            "boxes": [0 if p == "" else 1 for p in parts],
            "parts": parts,
        }
    )


def test_split_is_stratified_by_parts_and_deterministic() -> None:
    parts = ["mono"] * 40 + ["poly"] * 40 + ["mono|poly"] * 3 + [""] * 2 + ["odd"]
    manifest = manifest_of(parts)
    out = split_images(manifest, 0.7, 0.15, 0.15, seed=1)
    assert list(out.columns) == [*manifest.columns, "split"]
    assert out.drop(columns="split").equals(manifest)
    counts = pd.crosstab(out["parts"], out["split"])
    assert out["split"].value_counts().to_dict() == {"train": 60, "val": 13, "test": 13}
    for part in ("mono", "poly"):  # 40 images each: 6 in val and in test, give or take one
        assert 5 <= counts.loc[part, "val"] <= 7 and 5 <= counts.loc[part, "test"] <= 7

    shuffled = manifest.sample(frac=1, random_state=0)
    assert split_images(shuffled, 0.7, 0.15, 0.15, seed=1).equals(out)  # input order is moot
    assert not split_images(manifest, 0.7, 0.15, 0.15, seed=2)["split"].equals(out["split"])


def test_split_keeps_every_split_and_falls_back_to_random(caplog) -> None:
    for n, strata in [(3, 1), (4, 2), (7, 3), (9, 2), (12, 5)]:
        parts = [f"p{i % strata}" for i in range(n)]
        out = split_images(manifest_of(parts), 0.6, 0.3, 0.1, seed=0)
        assert set(out["split"]) == {"train", "val", "test"}
    assert "cannot stratify" not in caplog.text  # small strata are merged, not given up on

    # two strata of two images cannot both reach a held-out side of one image
    frame = manifest_of(["a", "a", "b", "b"]).assign(_stratum=["a", "a", "b", "b"])
    with caplog.at_level("WARNING", logger="visionpipe.tasks.detection.data.split"):
        keep, held = _holdout(frame, 1, 0, 2, "val | test")
    assert "cannot stratify 4 images by parts" in caplog.text and "at random" in caplog.text
    assert (len(keep), len(held)) == (3, 1)


def test_split_needs_three_images() -> None:
    with pytest.raises(DataError, match=r"^split: only 2 usable image\(s\); a detection split"):
        split_images(manifest_of(["a", "a"]), 0.7, 0.15, 0.15, 0)
