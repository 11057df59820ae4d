import math

import pandas as pd
import pytest

from visionpipe.core.errors import DataError
from visionpipe.tasks.classification.data.split import split_manifest


def manifest(counts: dict[str, int], split: str = "") -> pd.DataFrame:
    rows = [(f"{c}/{i:04d}.png", c, split) for c, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "label", "split"])


COUNTS = {"a": 100, "b": 40, "c": 13}


def test_same_params_same_bytes_and_order_independent(tmp_path):
    m = manifest(COUNTS)
    one = split_manifest(m, 0.7, 0.15, 0.15, seed=7)
    two = split_manifest(m.sample(frac=1, random_state=3), 0.7, 0.15, 0.15, seed=7)
    one.to_csv(tmp_path / "1.csv", index=False)
    two.to_csv(tmp_path / "2.csv", index=False)
    assert (tmp_path / "1.csv").read_bytes() == (tmp_path / "2.csv").read_bytes()
    other_seed = split_manifest(m, 0.7, 0.15, 0.15, seed=8)
    assert not one.equals(other_seed)


def test_stratified_disjoint_and_complete():
    m = manifest(COUNTS)
    out = split_manifest(m, 0.7, 0.15, 0.15, seed=0)
    assert sorted(out["path"]) == sorted(m["path"])  # every sample exactly once
    table = out.groupby(["split", "label"]).size().unstack()
    for label, n in COUNTS.items():
        assert abs(table.loc["train", label] - 0.7 * n) <= 1.5
        assert abs(table.loc["val", label] - 0.15 * n) <= 1.5
        assert abs(table.loc["test", label] - 0.15 * n) <= 1.5


def test_presplit_kept_and_test_carved_from_train_when_absent():
    m = pd.concat([manifest({"a": 20, "b": 20}, "train"), manifest({"a": 5, "b": 5}, "val")])
    m["path"] = m["split"] + "/" + m["path"]
    out = split_manifest(m, 0.7, 0.15, 0.15, seed=0)
    sizes = out.groupby("split").size().to_dict()
    assert sizes["val"] == 10
    assert out[out["split"] == "val"]["path"].str.startswith("val/").all()
    assert out[out["split"] == "test"]["path"].str.startswith("train/").all()
    assert sizes["test"] == math.ceil(40 * 0.15 / 0.85)  # sklearn rounds the test share up
    assert sizes["train"] == 40 - sizes["test"]


def test_too_few_images_per_class():
    with pytest.raises(DataError, match="class 'c': only 2 image"):
        split_manifest(manifest({"a": 30, "c": 2}), 0.7, 0.15, 0.15, seed=0)


def test_holdout_smaller_than_the_number_of_classes():
    counts = {f"c{i}": 3 for i in range(10)}  # 30 images: 9 held out for val+test, 10 classes
    with pytest.raises(DataError, match="split: cannot stratify 30 images: .*number of classes"):
        split_manifest(manifest(counts), 0.7, 0.15, 0.15, seed=0)
