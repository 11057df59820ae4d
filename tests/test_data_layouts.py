"""Users' own layouts through the real prepare and split stage commands: a sheet beside an
images/ folder naming bare files, a CVAT COCO export (annotations/ beside images/), and
data.images errors (issue #14, point 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_class_folders, write_image
from tests.test_prepare import run_stage_cli
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.params import Params, as_dict
from visionpipe.tasks.detection.data.coco_source import scan_coco

STATES = ["intact", "damaged", "absent", "occluded"]


def prepare_and_split(tmp_path: Path, raw: dict) -> tuple[pd.DataFrame, dict, dict]:
    """The manifest, the data report and the split manifests (or COCO files) by split."""
    out, report = tmp_path / "prepared", tmp_path / "report.json"
    proc = run_stage_cli(
        tmp_path, raw, "stages.prepare", "--out", str(out), "--report", str(report)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    splits = tmp_path / "splits"
    proc = run_stage_cli(
        tmp_path,
        raw,
        "stages.split",
        "--prepared",
        str(out),
        "--out",
        str(splits),
        "--duplicates",
        str(tmp_path / "duplicates.json"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    found = {p.stem: p for p in splits.iterdir()}
    return manifest, json.loads(report.read_text()), found


def prepare_fails_in_one_line(tmp_path: Path, raw: dict, message: str) -> None:
    """The prepare command stops with exit code 2 and one error line holding ``message``."""
    out = str(tmp_path / "p")
    proc = run_stage_cli(tmp_path, raw, "stages.prepare", "--out", out, "--report", "r.json")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def params(task: str, **data) -> dict:
    raw = as_dict(Params())
    raw["base"]["task"] = task
    raw["data"].update(data)
    return raw


def test_a_sheet_beside_images_naming_bare_files(tmp_path):
    """Biomass-style: metadata.xlsx beside images/, bare file names, plant ids, a missing
    target and a missing file; the split is grouped by plant."""
    root = tmp_path / "biomass"
    rows = []
    for plant in range(1, 7):
        for shot in range(3):
            name = f"p{plant:03d}_s{shot:02d}.png"
            write_image(root / "images" / name, value=20 * plant + shot)
            rows.append({"file": name, "plant": f"P{plant}", "fresh_weight": 1.5 * plant + shot})
    rows.append({"file": "p099_s00.png", "plant": "P9", "fresh_weight": 3.0})  # no such file
    rows.append({"file": "p001_s00.png", "plant": "P1", "fresh_weight": None})  # no target
    rows[-1]["file"] = "p001_s09.png"
    write_image(root / "images" / "p001_s09.png")
    pd.DataFrame(rows).to_excel(root / "metadata.xlsx", index=False, sheet_name="weights")
    raw = params(
        "regression",
        path=str(root),
        images="images",
        table="metadata.xlsx",
        sheet="weights",
        image_column="file",
        target_column="fresh_weight",
        group_column="plant",
        metadata_columns=[],
    )
    manifest, report, splits = prepare_and_split(tmp_path, raw)
    assert len(manifest) == 18
    assert manifest["path"].str.startswith("images/p").all()
    assert report["num_missing_file"] == 1 and report["num_missing_target"] == 1
    by_split = {name: pd.read_csv(path, keep_default_na=False) for name, path in splits.items()}
    assert sum(len(f) for f in by_split.values()) == 18
    groups = [set(f["group"]) for f in by_split.values()]
    assert all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1 :])


def test_a_classification_csv_beside_images(tmp_path):
    root = tmp_path / "trash"
    make_class_folders(root / "images", {"glass": 6, "paper": 6})
    rows = [
        {"image": f"{label}/{label}_{i:03d}.png", "label": label}
        for label in ("glass", "paper")
        for i in range(6)
    ]
    rows.append({"image": "../outside.png", "label": "glass"})  # images/../outside.png: inside
    write_image(root / "outside.png")
    (root / "meta").mkdir()  # the table in a subfolder of data.path
    pd.DataFrame(rows).to_csv(root / "meta" / "labels.csv", index=False)
    raw = params("classification", path=str(root), images="images", table="meta/labels.csv")
    manifest, report, splits = prepare_and_split(tmp_path, raw)
    assert len(manifest) == 13 and "outside.png" in set(manifest["path"])
    assert manifest["path"].str.startswith("images/").sum() == 12
    assert report["images_per_class"] == {"glass": 7, "paper": 6}
    assert sum(len(pd.read_csv(p)) for p in splits.values()) == 13


def write_cvat_coco(root: Path, parts: list[str], frames: int = 6) -> dict:
    """``frames`` RGB images in ``root/images`` and their COCO dict as CVAT exports it (bare
    file names, the state an attribute): one box per frame, of part ``i % len(parts)``,
    damaged on odd frames. The caller writes it (after any change) with :func:`save_coco`."""
    images, annotations = [], []
    for i in range(1, frames + 1):
        write_image(root / "images" / f"frame_{i:06d}.jpg", value=30 * i, size=(48, 32), mode="RGB")
        images.append({"id": i, "file_name": f"frame_{i:06d}.jpg", "width": 48, "height": 32})
        state = "damaged" if i % 2 else "intact"
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 1 + i % len(parts),
                "bbox": [4.0, 4.0, 20.0, 12.0],
                "area": 240.0,
                "iscrowd": 0,
                "attributes": {"occluded": False, "state": state},
            }
        )
    categories = [{"id": k, "name": name} for k, name in enumerate(parts, start=1)]
    return {
        "licenses": [],
        "info": {},
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }


def save_coco(root: Path, coco: dict) -> None:
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(coco))


def test_a_cvat_coco_export(tmp_path):
    """annotations/instances_default.json beside images/, bare file names, the state as an
    attribute; an image listed but not exported counts as missing."""
    root = tmp_path / "bikes"
    coco = write_cvat_coco(root, ["wheel", "saddle"])
    coco["images"].append({"id": 7, "file_name": "frame_000007.jpg", "width": 48, "height": 32})
    save_coco(root, coco)
    raw = params(
        "detection",
        path=str(root),
        images="images",
        annotations="annotations/instances_default.json",
    )
    manifest, report, splits = prepare_and_split(tmp_path, raw)
    assert len(manifest) == 6 and manifest["path"].str.startswith("images/frame_").all()
    assert report["images"]["missing"] == 1 and report["annotations"]["kept"] == 6
    assert report["parts"] == {"wheel": 3, "saddle": 3}
    split_images = [
        json.loads(p.read_text())["images"] for p in splits.values() if p.suffix == ".json"
    ]
    assert sum(len(i) for i in split_images) == 6
    assert all(i["file_name"].startswith("images/") for s in split_images for i in s)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("pics", "data.images 'pics': no such folder in data.path"),
        ("../elsewhere", "data.images '../elsewhere': escapes data.path"),
        ("/abs/images", "data.images '/abs/images': expected a folder inside data.path"),
    ],
)
def test_bad_data_images_is_one_line(tmp_path, images, message):
    root = make_class_folders(tmp_path / "d", {"a": 2, "b": 2})
    pd.DataFrame({"image": ["a/a_000.png"], "label": ["a"]}).to_csv(
        root / "labels.csv", index=False
    )
    raw = params("classification", path=str(root), images=images, table="labels.csv")
    prepare_fails_in_one_line(tmp_path, raw, message)


def voc_xml(file_name: str, objects: list[tuple[str, list[float], str]], size=(48, 32)) -> str:
    """A Pascal VOC file as CVAT exports it: the state as an object attribute."""
    body = "".join(
        f"<object><name>{name}</name><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"
        f"<attributes><attribute><name>occluded</name><value>no</value></attribute>"
        f"<attribute><name>state</name><value>{state}</value></attribute></attributes></object>"
        for name, (x1, y1, x2, y2), state in objects
    )
    return (
        f"<annotation><folder></folder><filename>{file_name}</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{body}</annotation>"
    )


def test_a_cvat_pascal_voc_export(tmp_path):
    """Annotations/*.xml beside JPEGImages/, states as CVAT attributes; a box off the image is
    clipped and counted as in COCO."""
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    for i in range(1, 7):
        name = f"frame_{i:06d}.jpg"
        write_image(root / "JPEGImages" / name, value=30 * i, size=(48, 32), mode="RGB")
        objects = [("wheel", [2, 3, 22, 15], "intact"), ("saddle", [30, 4, 60, 20], "damaged")]
        (root / "Annotations" / f"frame_{i:06d}.xml").write_text(voc_xml(name, objects))
    raw = params("detection", path=str(root), images="JPEGImages", annotations="Annotations")
    manifest, report, splits = prepare_and_split(tmp_path, raw)
    assert report["format"] == "voc" and len(manifest) == 6
    assert manifest["path"].str.startswith("JPEGImages/").all()
    assert report["parts"] == {"saddle": 6, "wheel": 6}
    assert report["states"] == {"intact": 6, "damaged": 6, "absent": 0, "occluded": 0}
    assert report["annotations"]["clipped"] == 6  # the saddle boxes run past x = 48
    test = json.loads(splits["test"].read_text())
    wheel = next(a for a in test["annotations"] if a["category_id"] == 2)
    assert wheel["bbox"] == [2.0, 3.0, 20.0, 12.0]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotation><filename>a.png", "bad.xml: not valid XML ("),
        ("<root/>", "bad.xml: not a Pascal VOC file (root element <root>)"),
        ("<annotation><size/></annotation>", "bad.xml: no <filename>"),
        (
            "<annotation><filename>a.png</filename><object><name>w</name></object></annotation>",
            "bad.xml object 1 (w): no <bndbox>",
        ),
        (
            "<annotation><filename>a.png</filename><object><name>w</name><bndbox><xmin>x</xmin>"
            "</bndbox></object></annotation>",
            "bad.xml object 1: <xmin> must be a number, got 'x'",
        ),
    ],
)
def test_bad_voc_files_are_one_line(tmp_path, xml, message):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    write_image(root / "a.png")
    (root / "Annotations" / "bad.xml").write_text(xml)
    raw = params("detection", path=str(root), annotations="Annotations")
    prepare_fails_in_one_line(tmp_path, raw, message)


def test_the_simple_format_with_an_images_folder(tmp_path):
    root = tmp_path / "d"
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / "pics" / name, size=(40, 30), mode="RGB")
    part = {"name": "wheel", "bbox": [1, 1, 10, 10], "state": "intact"}
    records = [{"image": n, "parts": [part]} for n in ("a.png", "b.png", "c.png")]
    (root / "ann.json").write_text(json.dumps(records))
    scan = scan_coco(root, "ann.json", "state", STATES, workers=1, images="pics")
    assert scan.manifest["path"].tolist() == ["pics/a.png", "pics/b.png", "pics/c.png"]
    assert scan.manifest["width"].tolist() == [40, 40, 40]
    assert scan.report["images"]["size_mismatch"] == 0


def write_roboflow_coco(root: Path, counts: dict[str, int]) -> None:
    """Roboflow's COCO export: a folder per split (train, valid, test) holding its images and
    ``_annotations.coco.json`` with bare file names, and the dataset itself listed as
    category 0, the supercategory of the real ones, with no box."""
    categories = [
        {"id": 0, "name": "bikes", "supercategory": "none"},
        {"id": 1, "name": "chain", "supercategory": "bikes"},
        {"id": 2, "name": "wheel", "supercategory": "bikes"},
    ]
    for folder, n in counts.items():
        images, annotations = [], []
        for i in range(n):
            name = f"{folder}_{i}_jpg.rf.{i:04x}.jpg"
            write_image(root / folder / name, value=20 + 9 * i, size=(48, 32), mode="RGB")
            images.append({"id": i, "file_name": name, "width": 48, "height": 32})
            annotations.append(
                {"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [2, 2, 16, 10]}
            )
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (root / folder / "_annotations.coco.json").write_text(json.dumps(coco))


def test_a_roboflow_coco_export_keeps_its_splits(tmp_path):
    root = tmp_path / "rf"
    write_roboflow_coco(root, {"train": 6, "valid": 3, "test": 2})
    files = {s: f"{d}/_annotations.coco.json" for s, d in [("train", "train"), ("val", "valid")]}
    files["test"] = "test/_annotations.coco.json"
    raw = params("detection", path=str(root), annotations=files, states=[])
    manifest, report, splits = prepare_and_split(tmp_path, raw)
    assert len(manifest) == 11 and report["format"] == "coco"
    assert report["parts"] == {"chain": 6, "wheel": 5} and report["states"] == {}
    assert report["categories_dropped"] == ["bikes"]
    by_split = {s: json.loads(splits[s].read_text())["images"] for s in ("train", "val", "test")}
    folders = {s: {i["file_name"].split("/")[0] for i in imgs} for s, imgs in by_split.items()}
    assert folders == {"train": {"train"}, "val": {"valid"}, "test": {"test"}}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [6, 3, 2]
    test = json.loads(splits["test"].read_text())
    assert all(a["attributes"] == {} for a in test["annotations"])


def test_a_pre_split_export_without_test_has_test_carved_from_train(tmp_path):
    root = tmp_path / "rf"
    write_roboflow_coco(root, {"train": 10, "valid": 3})
    files = {"train": "train/_annotations.coco.json", "val": "valid/_annotations.coco.json"}
    raw = params("detection", path=str(root), annotations=files, states=[])
    _, _, splits = prepare_and_split(tmp_path, raw)
    by_split = {s: json.loads(splits[s].read_text())["images"] for s in ("train", "val", "test")}
    assert {i["file_name"].split("/")[0] for i in by_split["test"]} == {"train"}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [8, 3, 2]


def write_yolo(root: Path, counts: dict[str, int], names=("wheel", "chain")) -> None:
    """An Ultralytics export: data.yaml, images/<split>/ and labels/<split>/ (one image of
    train without a label file: a background image)."""
    lines = ["path: .", *(f"{s}: images/{s}" for s in counts), f"names: {list(names)}"]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
    for split, n in counts.items():
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            write_image(root / "images" / split / f"{i}.png", value=10 + 20 * i, size=(40, 20))
            if split == "train" and i == 0:
                continue
            label = f"{i % len(names)} 0.5 0.5 0.5 0.5\n"
            (root / "labels" / split / f"{i}.txt").write_text(label)


def test_a_yolo_export_through_prepare_and_split(tmp_path):
    root = tmp_path / "yolo"
    write_yolo(root, {"train": 8, "val": 3})
    raw = params("detection", path=str(root), annotations="data.yaml", states=[])
    manifest, report, splits = prepare_and_split(tmp_path, raw)
    assert report["format"] == "yolo" and len(manifest) == 11
    assert report["yolo"] == {"without_label_file": 1, "segments": 0}
    assert report["images"]["without_boxes"] == 1 and report["parts"] == {"wheel": 5, "chain": 5}
    by_split = {s: json.loads(splits[s].read_text()) for s in ("train", "val", "test")}
    assert {i["file_name"] for i in by_split["val"]["images"]} == {
        f"images/val/{i}.png" for i in range(3)
    }
    assert all(i["file_name"].startswith("images/train/") for i in by_split["test"]["images"])
    assert sum(len(c["images"]) for c in by_split.values()) == 11
    box = by_split["val"]["annotations"][0]["bbox"]
    assert box == [10.0, 5.0, 20.0, 10.0]  # 0.5 0.5 0.5 0.5 of a 40 x 20 image


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"states": ["intact"]},
            "data.yaml: YOLO labels carry no state; set data.states: [] to train a plain detector",
        ),
        (
            {"states": [], "images": "images"},
            "data.images 'images': a YOLO data.yaml names its own image folders",
        ),
        (
            {"states": [], "annotations": {"train": "data.yaml", "tset": "x.json"}},
            "data.annotations.tset: unknown split; use train, val and test",
        ),
        ({"states": ["a", ""]}, "data.states: expected distinct state names"),
    ],
)
def test_yolo_and_split_file_mistakes_are_one_line(tmp_path, data, message):
    root = tmp_path / "yolo"
    write_yolo(root, {"train": 3, "val": 1})
    raw = params("detection", path=str(root), annotations="data.yaml")
    raw["data"].update(data)
    prepare_fails_in_one_line(tmp_path, raw, message)


def test_states_off_reads_a_cvat_export_as_a_plain_detector_set(tmp_path):
    root = tmp_path / "bikes"
    save_coco(root, write_cvat_coco(root, ["wheel", "saddle"]))
    scan = scan_coco(
        root, "annotations/instances_default.json", "state", [], workers=1, images="images"
    )
    assert all(a["attributes"] == {} for a in scan.coco["annotations"])
    assert scan.coco["states"] == [] and scan.report["states"] == {}
    assert set(scan.manifest["states"]) == {""} and len(scan.manifest) == 6


def test_split_files_read_against_data_images_in_simple_format_and_as_voc(tmp_path):
    """Image names of split files resolve against data.images when set (a CVAT export with a
    file per subset), against each file's folder otherwise (simple JSON too), and a VOC
    folder per split against itself (Roboflow's VOC: the XML beside the images)."""
    root = tmp_path / "cvat"
    coco = write_cvat_coco(root, ["wheel"], frames=6)
    for split, ids in (("train", {1, 2, 3, 4}), ("val", {5, 6})):
        part = {
            **coco,
            "images": [i for i in coco["images"] if i["id"] in ids],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
        }
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(part))
    files = {s: f"annotations/instances_{s}.json" for s in ("train", "val")}
    scan = scan_coco(root, files, "state", ["damaged", "intact"], workers=1, images="images")
    assert len(scan.manifest) == 6 and scan.manifest["path"].str.startswith("images/").all()
    assert scan.manifest.groupby("split").size().to_dict() == {"train": 4, "val": 2}

    simple = tmp_path / "simple"
    for split in ("train", "val"):
        for name in ("a.png", "b.png"):
            write_image(simple / split / name, size=(40, 30), mode="RGB")
        records = [{"image": n, "parts": [{"name": "w", "bbox": [1, 1, 9, 9]}]} for n in "ab"]
        records = [{**r, "image": f"{r['image']}.png"} for r in records]
        (simple / split / "ann.json").write_text(json.dumps(records))
    files = {s: f"{s}/ann.json" for s in ("train", "val")}
    scan = scan_coco(simple, files, "state", [], workers=1)
    assert sorted(scan.manifest["path"]) == ["train/a.png", "train/b.png", "val/a.png", "val/b.png"]

    voc = tmp_path / "voc"
    for split, folder in (("train", "train"), ("val", "valid")):
        for i in range(2):
            name = f"{split}{i}.jpg"
            write_image(voc / folder / name, size=(48, 32), mode="RGB")
            xml = voc_xml(name, [("wheel", [2, 3, 22, 15], "intact")])
            (voc / folder / f"{split}{i}.xml").write_text(xml)
    scan = scan_coco(voc, {"train": "train", "val": "valid"}, "state", ["intact"], workers=1)
    assert sorted(scan.manifest["path"]) == [
        "train/train0.jpg",
        "train/train1.jpg",
        "valid/val0.jpg",
        "valid/val1.jpg",
    ]


def test_split_file_mistakes_name_their_own_file_and_id(tmp_path):
    root = tmp_path / "rf"
    write_roboflow_coco(root, {"train": 4, "valid": 2})
    valid = json.loads((root / "valid/_annotations.coco.json").read_text())
    valid["annotations"][1]["bbox"] = [1, 2]
    (root / "valid/_annotations.coco.json").write_text(json.dumps(valid))
    files = {"train": "train/_annotations.coco.json", "val": "valid/_annotations.coco.json"}
    with pytest.raises(UserError) as err:
        scan_coco(root, files, "state", [], workers=1)
    assert str(err.value).startswith(f"{root}/valid/_annotations.coco.json: annotation 1 ")
    assert "bbox must be 4 finite numbers" in str(err.value)

    valid["annotations"][1]["bbox"] = [1, 2, 3, 4]
    valid["images"][1]["id"] = valid["images"][0]["id"]
    (root / "valid/_annotations.coco.json").write_text(json.dumps(valid))
    with pytest.raises(UserError, match=r"valid/_annotations.coco.json: image 0: duplicate"):
        scan_coco(root, files, "state", [], workers=1)
    valid["images"][1]["id"] = 1
    (root / "valid/_annotations.coco.json").write_text(json.dumps(valid))
    with pytest.raises(DataError, match=r"test/x.json: data.annotations.test: annotations file"):
        scan_coco(root, {**files, "test": "test/x.json"}, "state", [], workers=1)


def test_a_split_key_in_an_ordinary_coco_file_is_not_a_pre_split(tmp_path):
    root = tmp_path / "bikes"
    coco = write_cvat_coco(root, ["wheel"])
    for image in coco["images"]:
        image["split"] = "training"
    save_coco(root, coco)
    scan = scan_coco(
        root, "annotations/instances_default.json", "state", [], workers=1, images="images"
    )
    assert set(scan.manifest["split"]) == {""}


def test_a_part_named_like_the_unmatched_labels_is_refused_without_states(tmp_path):
    root = tmp_path / "bikes"
    save_coco(root, write_cvat_coco(root, ["wheel", "background"]))
    with pytest.raises(UserError, match=r"a part named 'background'; without states"):
        scan_coco(root, "annotations/instances_default.json", "state", [], images="images")
