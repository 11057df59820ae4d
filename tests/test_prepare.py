"""The prepare stage picks the source from params: class folders or a labels table."""

import dataclasses
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, make_class_folders, write_image
from visionpipe.core.errors import DataError
from visionpipe.core.params import Data, Params, as_dict
from visionpipe.tasks import task_data


def scan(params: Params):
    return task_data(params.base.task).scan(params)


def with_data(**data) -> Params:
    return dataclasses.replace(Params(), data=Data(**data))


def test_folder_source_with_a_classes_whitelist(flat_dataset):
    result, report = scan(with_data(path=str(flat_dataset)))
    assert result.classes == ["cat", "dog", "owl"] and report["num_images"] == 30
    scan(with_data(path=str(flat_dataset), classes=["owl", "dog", "cat"]))
    with pytest.raises(DataError, match=r"owl: class folder not in data.classes \(cat, dog\)"):
        scan(with_data(path=str(flat_dataset), classes=["cat", "dog"]))


def test_table_source_reports_dropped_rows(tmp_path):
    root = make_class_folders(tmp_path / "d", {"ok": 3, "bad": 3})
    rows = [{"file": f"{c}/{c}_{i:03d}.png", "grade": c} for c in ("ok", "bad") for i in range(3)]
    rows += [{"file": "ok/ok_000.png", "grade": ""}, {"file": "gone.png", "grade": "ok"}]
    rows[6]["file"] = "ok/extra.png"
    write_image(root / "ok/extra.png")
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    params = with_data(
        path=str(root), table="labels.csv", image_column="file", label_column="grade"
    )
    result, report = scan(params)
    assert result.layout == "table" and len(result.samples) == 6
    assert report["num_missing_label"] == 1 and report["num_missing_file"] == 1
    assert {s["path"] for s in report["skipped"]} >= {"gone.png"}


def run_stage_cli(tmp_path, params: dict, *args: str):
    """Run ``python -m <stage> ARGS --params <file with params>`` from the repo root."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, "-m", *args, "--params", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_table_rows_stop_prepare_with_one_line(tmp_path):
    root = make_class_folders(tmp_path / "d", {"ok": 2, "bad": 2})
    pd.DataFrame({"image": ["ok/ok_000.png", "../escape.png"], "label": ["ok", "bad"]}).to_csv(
        root / "labels.csv", index=False
    )
    raw = as_dict(with_data(path=str(root), table="labels.csv"))
    proc = run_stage_cli(
        tmp_path, raw, "stages.prepare", "--out", str(tmp_path / "p"), "--report", "r.json"
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1
    assert "row 3" in errors[0] and "escapes data.path" in errors[0]


def test_class_weights_for_unknown_classes_stop_train_before_work(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    for name in ("train", "val", "test"):
        pd.DataFrame({"path": ["a.png", "b.png"], "label": ["cat", "dog"]}).to_csv(
            splits / f"{name}.csv", index=False
        )
    raw = as_dict(Params())
    raw["classification"]["class_weights"] = {"cat": 2.0, "cow": 3.0}
    proc = run_stage_cli(
        tmp_path,
        raw,
        "stages.train",
        "--splits",
        str(splits),
        "--model",
        str(tmp_path / "m.pt"),
        "--class-index",
        str(tmp_path / "c.json"),
        "--live",
        str(tmp_path / "live"),
        "--state",
        str(tmp_path / "state.pt"),
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2
    assert errors == ["error: classification.class_weights: 'cow' not a class; classes: cat, dog"]
    assert not (tmp_path / "live").exists()
