"""Regression EDA: figures, summary and its JSON-safety on a tiny plant-weight dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_image
from visionpipe.core.errors import UserError
from visionpipe.tasks.regression.data import eda as eda_regression

FIGURES = (
    "target_histogram.png",
    "samples.png",
    "correlation.png",
    "target_vs_metadata.png",
    "pixel_intensity.png",
    "image_sizes.png",
)
SPLIT_OF_GROUP = {"p0": "train", "p1": "train", "p2": "train", "p3": "train"}
SPLIT_OF_GROUP |= {"p4": "val", "p5": "test"}


def make_frame(root: Path) -> pd.DataFrame:
    """18 images of 6 plants (3 each; 4 plants train, 1 val, 1 test). ``fresh_weight`` is
    exactly 2 * age_days + 5; ``cell_type`` is text; ``note`` is mostly numeric with blanks and
    a typo (still numeric)."""
    rows = []
    for i in range(18):
        group = f"p{i // 3}"
        age = 3 * i + 1
        path = f"img/{group}_{i:02d}.png"
        mode = "RGB" if i % 2 else "L"
        write_image(root / path, value=20 + 12 * i, size=(24, 20), mode=mode)
        rows.append(
            {
                "path": path,
                "target": 2.0 * age + 5.0,
                "group": group,
                "split": SPLIT_OF_GROUP[group],
                "width": 24,
                "height": 20,
                "mode": mode,
                "age_days": str(age),
                "cell_type": "ABC"[i % 3],
                "note": "" if i % 4 == 0 else ("n/a" if i == 5 else str(i % 7)),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    root = tmp_path / "raw"
    return root, make_frame(root)


def run(root: Path, frame: pd.DataFrame, figures: Path, **kwargs) -> dict:
    args = {
        "target_name": "fresh_weight",
        "metadata_columns": ["age_days", "cell_type", "note"],
        "target_vs": "cell_type",
        "samples": 6,
        "intensity_samples": 10,
        "seed": 0,
        "figures": figures,
    }
    args.update(kwargs)
    return eda_regression.regression_eda(root, frame, **args)


def test_figures_and_summary(dataset, tmp_path):
    root, frame = dataset
    report = {
        "root": "raw",
        "task": "regression",
        "num_table_rows": 20,
        "num_images": 18,
        "num_missing_target": 1,
        "percent_missing_target": 5.0,
        "num_missing_file": 1,
        "percent_missing_file": 5.0,
        "target": {"count": 18},
        "skipped": [{"row": 3, "reason": "missing target"}],
    }
    summary = run(root, frame, tmp_path / "fig", data_report=report)
    for name in FIGURES:
        assert (tmp_path / "fig" / name).stat().st_size > 1000, name
    json.dumps(summary, allow_nan=False)

    assert summary["task"] == "regression" and summary["target"] == "fresh_weight"
    assert summary["num_images"] == 18
    assert summary["images_per_split"] == {"train": 12, "val": 3, "test": 3}
    stats = summary["target_stats"]
    assert stats["all"]["count"] == 18 and stats["all"]["min"] == 7.0
    assert stats["all"]["max"] == 2.0 * 52 + 5.0
    assert stats["val"]["count"] == 3 and stats["val"]["median"] == 2.0 * 40 + 5.0
    assert stats["train"]["std"] > 0
    groups = summary["groups"]
    assert groups["num_groups"] == 6 and groups["images_per_group"] == {"max": 3, "mean": 3.0}
    assert groups["groups_per_split"] == {"train": 4, "val": 1, "test": 1}
    assert groups["groups_in_several_splits"] == 0
    corr = summary["correlation_with_target"]
    assert set(corr) == {"age_days", "note"}  # cell_type is text
    assert corr["age_days"] == pytest.approx(1.0)
    assert summary["metadata_columns"] == ["age_days", "cell_type", "note"]
    assert summary["image_size"]["most_common_size"] == [24, 20]
    assert summary["image_size"]["modes"] == {"L": 9, "RGB": 9}
    px = summary["pixel_intensity"]
    assert px["images"] == 10 and set(px) == {"R", "G", "B", "images"}
    assert 0 < px["R"]["mean"] < 255 and px["G"]["std"] > 0
    # every num_*/percent_* number of the prepare report, nothing else
    assert summary["missing"] == {
        "num_table_rows": 20,
        "num_images": 18,
        "num_missing_target": 1,
        "percent_missing_target": 5.0,
        "num_missing_file": 1,
        "percent_missing_file": 5.0,
    }


def test_target_vs_numeric_text_and_none(dataset, tmp_path):
    _, frame = dataset
    draw = eda_regression.target_vs_metadata
    assert draw(frame, "fresh_weight", "age_days", tmp_path / "num.png") == "scatter"
    assert draw(frame, "fresh_weight", "cell_type", tmp_path / "text.png") == "box"
    assert draw(frame, "fresh_weight", "", tmp_path / "none.png") == "none"
    many = frame.assign(cell_type=[f"c{i:02d}" for i in range(18)])
    many = pd.concat([many, many.assign(cell_type=[f"x{i:02d}" for i in range(18)])])
    assert draw(many.reset_index(drop=True), "w", "cell_type", tmp_path / "many.png") == "box"
    for name in ("num.png", "text.png", "none.png", "many.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_numeric_target_vs_and_no_target_vs_in_full_run(dataset, tmp_path):
    root, frame = dataset
    summary = run(root, frame, tmp_path / "a", target_vs="age_days", samples=3)
    assert (tmp_path / "a" / "target_vs_metadata.png").stat().st_size > 1000
    summary = run(root, frame, tmp_path / "b", target_vs="", intensity_samples=2)
    assert summary["pixel_intensity"]["images"] == 2
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(FIGURES)
    assert summary["missing"] == {}  # no data_report


def test_unknown_target_vs_names_it_and_lists_the_columns(dataset, tmp_path):
    root, frame = dataset
    with pytest.raises(UserError) as err:
        run(root, frame, tmp_path / "f", target_vs="weight_g")
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        "eda.target_vs: 'weight_g' is not a metadata column; "
        "metadata columns: age_days, cell_type, note"
    )
    with pytest.raises(UserError, match=r"no metadata columns \(data.metadata_columns is empty\)"):
        run(root, frame, tmp_path / "f", target_vs="age_days", metadata_columns=[])
    assert not (tmp_path / "f").exists()  # checked before any figure is drawn


def test_no_numeric_metadata_and_empty_split(dataset, tmp_path):
    root, frame = dataset
    frame = frame.assign(split=frame["split"].replace({"val": "train"}), group="")
    summary = run(
        root,
        frame.drop(columns=["age_days", "note"]),
        tmp_path / "f",
        metadata_columns=["cell_type"],
        samples=2,
        intensity_samples=2,
    )
    assert (tmp_path / "f" / "correlation.png").stat().st_size > 1000
    assert summary["correlation_with_target"] == {}
    assert summary["groups"] is None
    assert summary["images_per_split"] == {"train": 15, "val": 0, "test": 3}
    assert summary["target_stats"]["val"] == {
        "count": 0,
        "mean": None,
        "std": None,
        "min": None,
        "median": None,
        "max": None,
    }
    json.dumps(summary, allow_nan=False)

    args = {"metadata_columns": [], "target_vs": "", "samples": 1, "intensity_samples": 1}
    summary = run(root, frame, tmp_path / "g", **args)
    assert summary["correlation_with_target"] == {} and summary["metadata_columns"] == []


def test_numeric_detection_and_constant_column():
    detect = eda_regression.numeric_values
    assert detect(pd.Series(["1", "", "2.5", "n/a"])).tolist()[::2] == [1.0, 2.5]
    assert detect(pd.Series(["a", "b", "3", ""])) is None  # 1 of 3 non-empty is a number
    assert detect(pd.Series(["", " "])) is None
    assert detect(pd.Series([1.0, None, float("nan"), 4.0])).notna().sum() == 2


def test_constant_metadata_gives_null_correlation(dataset, tmp_path):
    _, frame = dataset
    frame = frame.assign(tray=["7"] * 18)
    numeric = {"tray": eda_regression.numeric_values(frame["tray"])}
    corr = eda_regression.correlation(frame, "fresh_weight", numeric, tmp_path / "c.png")
    assert corr == {"tray": None}
    assert eda_regression.target_stats(pd.Series([3.0]))["std"] is None
    assert [eda_regression._caption(v) for v in (1234.5, 0.012345, 7.0)] == ["1230", "0.0123", "7"]


def test_sample_selection_is_deterministic_and_sorted(dataset):
    _, frame = dataset
    first = eda_regression.sample_rows(frame, 6, seed=3)
    again = eda_regression.sample_rows(frame, 6, seed=3)
    other = eda_regression.sample_rows(frame, 6, seed=4)
    assert first["path"].tolist() == again["path"].tolist()
    assert first["path"].tolist() != other["path"].tolist()
    assert first["target"].is_monotonic_increasing
    assert len(eda_regression.sample_rows(frame, 100, seed=0)) == 18
