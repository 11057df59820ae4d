"""python -m visionpipe.init: each layout recognised, its written params valid and read by the
real prepare and split commands as written; the folders it refuses (issue #14, point 3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, make_class_folders, write_image
from tests.e2e import copy_repo, run
from tests.test_data_layouts import (
    save_coco,
    voc_xml,
    write_cvat_coco,
    write_roboflow_coco,
    write_yolo,
)
from visionpipe.core.params import load_params


def init(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, in ``workdir`` holding a copy of the repo's params.yaml."""
    if not (workdir / "params.yaml").exists():
        shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
    return subprocess.run(
        [sys.executable, "-m", "visionpipe.init", *args],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def prepare_and_split(workdir: Path) -> tuple[pd.DataFrame, list[Path]]:
    """The stage commands with the params init wrote; the manifest and the split files."""
    for stage, *args in (
        ("stages.prepare", "--out", "prepared", "--report", "report.json"),
        ("stages.split", "--prepared", "prepared", "--out", "splits", "--duplicates", "dup.json"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", stage, *args, "--params", "params.yaml"],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pd.read_csv(workdir / "prepared/manifest.csv", keep_default_na=False)
    return manifest, sorted((workdir / "splits").iterdir())


def written(workdir: Path) -> dict:
    load_params(workdir / "params.yaml")  # valid, as every stage checks it
    return yaml.safe_load((workdir / "params.yaml").read_text())


def test_class_folders_flat_and_presplit(tmp_path):
    root = make_class_folders(tmp_path / "produce", {"fresh": 6, "rotten": 7})
    (root / "rotten" / "broken.png").write_bytes(b"not a png")
    proc = init(tmp_path, "produce")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "produce: class folders, read as classification" in proc.stdout
    assert "  fresh: 6 images\n  rotten: 7 images\n  1 skipped:" in proc.stdout
    assert "next: dvc add produce (to version it), then dvc repro" in proc.stdout
    params = written(tmp_path)
    text = (tmp_path / "params.yaml").read_text()  # the comments are kept
    assert "  path: produce               # the images; the embedded elpv default is" in text
    assert params["base"]["task"] == "classification"
    assert params["data"]["path"] == "produce" and params["data"]["table"] == ""
    assert params["evaluate"]["binary_positive"] == [] and params["eda"]["target_vs"] == ""
    assert params["model"]["image_size"] == "auto"  # resolved at train: never upscaled
    assert "model.image_size: auto (32 px here" in proc.stdout  # 24 x 20 images: 32, not 160
    manifest, splits = prepare_and_split(tmp_path)
    assert len(manifest) == 13 and {p.name for p in splits} >= {"train.csv", "test.csv"}

    other = tmp_path / "second"
    other.mkdir()
    make_class_folders(other / "trash", {"glass": 4, "paper": 4}, prefix="train")
    make_class_folders(other / "trash", {"glass": 2, "paper": 2}, prefix="val")
    proc = init(other, "trash")
    assert "trash: pre-split class folders, read as classification" in proc.stdout
    manifest, _ = prepare_and_split(other)
    assert sorted(set(manifest["split"])) == ["train", "val"]


def test_a_regression_sheet_beside_images(tmp_path):
    root = tmp_path / "biomass"
    rows = []
    for plant in range(1, 6):
        for shot in range(3):
            name = f"p{plant:03d}_s{shot:02d}.png"
            write_image(root / "images" / name, value=20 * plant + shot, size=(200, 120))
            rows.append({"file": name, "plant_number": plant, "fresh_weight": 1.5 * plant + shot})
    write_image(root / "images" / "unlisted.png")
    pd.DataFrame(rows).to_excel(root / "metadata.xlsx", index=False)
    proc = init(tmp_path, "biomass")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "biomass: table, read as regression" in out
    assert "guessed its image column: 'file'" in out and "guessed images: images" in out
    assert "guessed target column: 'fresh_weight' (the first numeric one)" in out
    assert "guessed group column: 'plant_number'" in out
    assert "1 images under the images folder that no row names" in out
    data = written(tmp_path)["data"]
    assert (data["images"], data["table"], data["group_column"]) == (
        "images",
        "metadata.xlsx",
        "plant_number",
    )
    assert written(tmp_path)["model"]["image_size"] == "auto"
    assert "model.image_size: auto (120 px here" in out  # the median shorter side, 120
    manifest, splits = prepare_and_split(tmp_path)
    assert len(manifest) == 15
    groups = [set(pd.read_csv(p)["group"]) for p in splits if p.suffix == ".csv"]
    assert all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1 :])


def test_a_classification_csv_and_the_task_forced(tmp_path):
    root = make_class_folders(tmp_path / "scrap" / "images", {"metal": 8, "plastic": 8}).parent
    rows = [
        {"image": f"{c}/{c}_{i:03d}.png", "material": c, "weight_g": 10.0 + i}
        for c in ("metal", "plastic")
        for i in range(8)
    ]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    proc = init(tmp_path, "scrap")
    assert "guessed label column: 'material' (2 values)" in proc.stdout
    assert written(tmp_path)["data"]["label_column"] == "material"
    manifest, _ = prepare_and_split(tmp_path)
    assert sorted(set(manifest["label"])) == ["metal", "plastic"]
    proc = init(tmp_path, "scrap", "--task", "regression", "--dry-run")
    assert "guessed target column: 'weight_g'" in proc.stdout
    assert "dry run: params.yaml not changed" in proc.stdout
    assert written(tmp_path)["base"]["task"] == "classification"


def test_a_cvat_coco_export_and_a_voc_export(tmp_path):
    root = tmp_path / "bikes"
    save_coco(root, write_cvat_coco(root, ["wheel"]))
    proc = init(tmp_path, "bikes")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "found annotations/instances_default.json, a COCO file (6 images listed)" in proc.stdout
    assert "found states: damaged, intact" in proc.stdout
    data = written(tmp_path)["data"]
    assert data["images"] == "images" and data["states"] == ["damaged", "intact"]
    manifest, _ = prepare_and_split(tmp_path)
    assert len(manifest) == 6

    voc = tmp_path / "second" / "voc"
    (voc / "Annotations").mkdir(parents=True)
    for i in range(1, 5):
        write_image(voc / "JPEGImages" / f"f{i}.jpg", size=(48, 32), mode="RGB")
        (voc / "Annotations" / f"f{i}.xml").write_text(
            voc_xml(f"f{i}.jpg", [("saddle", [2, 3, 22, 15], "absent")])
        )
    proc = init(tmp_path / "second", "voc")
    assert "voc: Pascal VOC, read as detection" in proc.stdout, proc.stderr[-2000:]
    assert written(tmp_path / "second")["data"]["images"] == "JPEGImages"
    manifest, _ = prepare_and_split(tmp_path / "second")
    assert len(manifest) == 4


def test_a_yolo_export_and_a_roboflow_coco_export(tmp_path):
    write_yolo(tmp_path / "yolo", {"train": 6, "val": 2})
    proc = init(tmp_path, "yolo")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "yolo: YOLO, read as detection" in proc.stdout
    assert "found data.yaml, a YOLO export (2 classes; splits train, val" in proc.stdout
    assert "8 images; boxes per part: wheel 3, chain 4\n" in proc.stdout
    assert "1 images without a label file (background images, no box)" in proc.stdout
    data = written(tmp_path)["data"]
    assert data["annotations"] == "data.yaml" and data["states"] == [] and data["images"] == ""
    manifest, _ = prepare_and_split(tmp_path)
    assert len(manifest) == 8 and set(manifest["split"]) == {"train", "val"}

    second = tmp_path / "second"
    write_roboflow_coco(second / "rf", {"train": 5, "valid": 2, "test": 2})
    proc = init(second, "rf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rf: per-split COCO, read as detection" in proc.stdout
    assert "categories without boxes dropped: bikes" in proc.stdout
    assert "no box has a 'state' attribute: a plain detector" in proc.stdout
    data = written(second)["data"]
    assert data["annotations"] == {
        "train": "train/_annotations.coco.json",
        "val": "valid/_annotations.coco.json",
        "test": "test/_annotations.coco.json",
    }
    assert data["states"] == []
    manifest, files = prepare_and_split(second)
    assert len(manifest) == 9
    test = json.loads(next(f for f in files if f.name == "test.json").read_text())
    assert {i["file_name"].split("/")[0] for i in test["images"]} == {"test"}


def test_a_roboflow_export_one_folder_down(tmp_path):
    """Unzipped as rf/bikes.v1i.coco/{train,valid}/: still one file per split, not one
    split's file taken for the whole set."""
    write_roboflow_coco(tmp_path / "rf" / "bikes.v1i.coco", {"train": 5, "valid": 2})
    proc = init(tmp_path, "rf", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rf: per-split COCO, read as detection" in proc.stdout
    assert "bikes.v1i.coco/train/_annotations.coco.json" in proc.stdout
    assert "7 images; boxes per part" in proc.stdout


def make_yolo(root: Path) -> None:
    """A YOLO export whose train folder was not copied along."""
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("train: images/train\nnames: [wheel]\n")


def make_notes(root: Path) -> None:
    root.mkdir()
    (root / "notes.txt").write_text("no images here")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such folder"),
        (make_notes, "no layout recognised (class folders, train/ val/ folders, a table"),
        (make_yolo, "data.yaml: train 'images/train': not found (tried images/train in"),
    ],
)
def test_folders_it_cannot_read_are_one_line(tmp_path, make, message):
    make(tmp_path / "mine")
    before = (REPO / "params.yaml").read_text()
    proc = init(tmp_path, "mine")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
    assert (tmp_path / "params.yaml").read_text() == before  # nothing written


def test_dvc_repro_runs_as_written(tmp_path):
    """In a copy of the repo: init, then the real `dvc repro prepare split`."""
    repo = copy_repo(tmp_path / "repo", {})
    make_class_folders(repo / "mydata", {"cat": 6, "dog": 6})
    proc = init(repo, "mydata")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "  path: mydata" in (repo / "params.yaml").read_text()
    out = run(repo, "dvc", "repro", "prepare", "split").stdout
    assert "Running stage 'prepare'" in out and "Running stage 'embed'" not in out
    assert len(pd.read_csv(repo / "data/prepared/manifest.csv")) == 12


def test_the_guesses_reviewers_caught(tmp_path):
    """Text plant ids and a trailing id column are no label or target; integer 0/1 labels are
    labels; the table may sit on a workbook's second sheet."""
    root = tmp_path / "plants"
    rows = []
    for plant in range(1, 6):
        for shot in range(3):
            name = f"p{plant}_{shot}.png"
            write_image(root / name, value=20 * plant + shot)
            rows.append(
                {
                    "image": name,
                    "fresh_weight": 1.5 * plant + shot / 3,
                    "plant": f"P{plant}",
                    "photo_id": 3 * plant + shot,
                }
            )
    with pd.ExcelWriter(root / "sheet.xlsx") as writer:
        pd.DataFrame({"note": ["made by hand"]}).to_excel(writer, sheet_name="info", index=False)
        pd.DataFrame(rows).to_excel(writer, sheet_name="weights", index=False)
    proc = init(tmp_path, "plants", "--dry-run")
    assert "found sheet.xlsx, sheet 'weights'" in proc.stdout, proc.stderr[-2000:]
    assert "plants: table, read as regression" in proc.stdout
    assert "guessed target column: 'fresh_weight'" in proc.stdout
    assert "guessed group column: 'plant'" in proc.stdout

    binary = make_class_folders(tmp_path / "second" / "cells", {"ok": 6, "bad": 6})
    rows = [
        {"file": f"{c}/{c}_{i:03d}.png", "defective": int(c == "bad")}
        for c in ("ok", "bad")
        for i in range(6)
    ]
    pd.DataFrame(rows).to_csv(binary / "labels.csv", index=False)
    proc = init(tmp_path / "second", "cells", "--dry-run")
    assert "guessed label column: 'defective' (2 values)" in proc.stdout, proc.stderr[-2000:]


def test_states_as_vocs_element_and_cocos_top_level_key(tmp_path):
    voc = tmp_path / "voc"
    (voc / "Annotations" / "odd.xml").mkdir(parents=True)  # a folder named like a file
    for name in ("a", "b", "c"):
        write_image(voc / "images" / f"{name}.png")
        (voc / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.png</filename><object><name>w</name>"
            "<state>intact</state><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
            "<ymax>9</ymax></bndbox></object></annotation>"
        )
    proc = init(tmp_path, "voc", "--dry-run")
    assert "found states: intact" in proc.stdout and "guessed images: images" in proc.stdout, (
        proc.stderr[-2000:]
    )
    coco = tmp_path / "coco"
    images = [{"id": i, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    for image in images:
        write_image(coco / image["file_name"])
    boxes = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5], "state": "absent"}
        for i in (1, 2, 3)
    ]
    categories = [{"id": 1, "name": "w"}]
    coco_dict = {"images": images, "annotations": boxes, "categories": categories}
    (coco / "ann.json").write_text(json.dumps(coco_dict))
    proc = init(tmp_path, "coco", "--dry-run")
    assert "found states: absent" in proc.stdout, proc.stderr[-2000:]
