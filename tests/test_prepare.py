"""The prepare stage picks the source from params: class folders or a labels table."""

import dataclasses

import pandas as pd
import pytest

from stages.prepare import scan
from tests.conftest import make_class_folders, write_image
from visionpipe.errors import DataError
from visionpipe.params import Data, Params


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
