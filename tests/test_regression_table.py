import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_image
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.sources.table import (
    REGRESSION_COLUMNS,
    regression_report,
    scan_regression_table,
)

HEADER = ("image", "weight", "plant", "day")


def _csv(root: Path, rows: list[tuple], header=HEADER, name: str = "plants.csv") -> str:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(header)).to_csv(root / name, index=False)
    return name


def _xlsx(root: Path, rows: list[tuple], sheet: str, name: str = "plants.xlsx") -> str:
    with pd.ExcelWriter(root / name, engine="openpyxl") as writer:
        pd.DataFrame([("x.png", 0, 0, 0)], columns=list(HEADER)).to_excel(
            writer, sheet_name="notes", index=False
        )
        pd.DataFrame(rows, columns=list(HEADER)).to_excel(writer, sheet_name=sheet, index=False)
    return name


def _scan(root: Path, table: str, **kwargs):
    kwargs = {"image_column": "image", "target_column": "weight", **kwargs}
    return scan_regression_table(root, table, **kwargs)


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    """Five images under img/, not yet listed in a table."""
    root = tmp_path / "ds"
    for i in range(5):
        write_image(root / f"img/p{i}.png", value=40 + 10 * i)
    return root


# rows 2-5: plant 7 twice, plant 8 twice
ROWS = [
    ("img/p0.png", 10.5, 7, 1),
    ("img/p1.png", 12.0, 7, 2),
    ("img/p2.png", 20.25, 8, 1),
    ("img/p3.png", 30.0, 8, 2),
]


def _check_happy_manifest(scan) -> None:
    samples = scan.samples
    assert scan.layout == "table" and scan.classes == [] and scan.skipped == []
    assert list(samples.columns) == [*REGRESSION_COLUMNS, "day"]
    assert samples["path"].tolist() == [r[0] for r in ROWS]
    assert samples["target"].dtype == float and samples["target"].tolist() == [r[1] for r in ROWS]
    assert samples["group"].tolist() == ["7", "7", "8", "8"]
    assert (samples["split"] == "").all()
    assert pd.api.types.is_integer_dtype(samples["day"]) and samples["day"].tolist() == [1, 2, 1, 2]
    first = samples.iloc[0]
    assert (first["width"], first["height"], first["mode"]) == (24, 20, "L")


def test_csv_happy_path(ds):
    scan = _scan(ds, _csv(ds, ROWS), group_column="plant", metadata_columns=["day"])
    _check_happy_manifest(scan)


def test_xlsx_named_sheet(ds):
    table = _xlsx(ds, ROWS, sheet="biomass")
    scan = _scan(ds, table, sheet="biomass", group_column="plant", metadata_columns=["day"])
    _check_happy_manifest(scan)


def test_group_read_as_float_stays_integral_text(ds):
    # an empty plant cell makes pandas read the column as float (7.0, nan, ...)
    rows = [*ROWS[:3], ("img/p3.png", 30.0, None, 2)]
    scan = _scan(ds, _csv(ds, rows), group_column="plant")
    assert scan.samples["group"].tolist() == ["7", "7", "8"]
    assert scan.skipped == [{"path": "img/p3.png", "reason": "missing group", "row": 5}]


def test_no_group_column(ds):
    scan = _scan(ds, _csv(ds, ROWS))
    assert list(scan.samples.columns) == REGRESSION_COLUMNS
    assert (scan.samples["group"] == "").all()
    report = regression_report(scan)
    assert "num_groups" not in report and report["num_missing_group"] == 0


def test_missing_and_non_numeric_targets_listed_with_rows(ds):
    rows = [
        *ROWS,  # rows 2-5
        ("img/p4.png", None, 9, 1),  # row 6: missing
        ("img/x1.png", "n/a", 9, 1),  # row 7
        ("img/x2.png", "12,5kg", 9, 1),  # row 8
        ("img/x3.png", "  ", 9, 1),  # row 9: whitespace only is missing too
        ("img/x4.png", "nan", 9, 1),  # row 10
    ]
    scan = _scan(ds, _csv(ds, rows), group_column="plant")
    assert len(scan.samples) == 4
    assert [(s["row"], s["path"], s["reason"]) for s in scan.skipped] == [
        (6, "img/p4.png", "missing target"),
        (7, "img/x1.png", "non-numeric target 'n/a'"),
        (8, "img/x2.png", "non-numeric target '12,5kg'"),
        (9, "img/x3.png", "missing target"),
        (10, "img/x4.png", "non-numeric target 'nan'"),
    ]


def test_numbers_as_text_accepted_and_inf_rejected(ds):
    rows = [
        ("img/p0.png", "12.5", 7, 1),
        ("img/p1.png", " 3 ", 7, 1),
        ("img/p2.png", "1e2", 8, 1),
        ("img/p3.png", "inf", 8, 1),  # row 5
        ("img/p4.png", "-Infinity", 8, 1),  # row 6
    ]
    scan = _scan(ds, _csv(ds, rows))
    assert scan.samples["target"].tolist() == [12.5, 3.0, 100.0]
    assert [(s["row"], s["reason"]) for s in scan.skipped] == [
        (5, "non-numeric target 'inf'"),
        (6, "non-numeric target '-inf'"),
    ]
    # in an xlsx, "12.5" typed as text stays a string cell
    scan = _scan(ds, _xlsx(ds, rows[:3], sheet="s"), sheet="s")
    assert scan.samples["target"].tolist() == [12.5, 3.0, 100.0]


def test_missing_file_and_undecodable_listed(ds):
    (ds / "img" / "broken.png").write_bytes(b"not a png")
    rows = [*ROWS, ("img/gone.png", 1.0, 9, 1), ("img/broken.png", 2.0, 9, 1)]
    scan = _scan(ds, _csv(ds, rows), group_column="plant")
    assert len(scan.samples) == 4
    assert [(s["row"], s["path"], s["reason"][:14]) for s in scan.skipped] == [
        (6, "img/gone.png", "file not found"),
        (7, "img/broken.png", "corrupt or tru"),
    ]


def test_missing_columns_named_with_param_keys(ds):
    table = _csv(ds, ROWS)
    with pytest.raises(
        UserError,
        match=r"plants.csv: data.target_column 'mass', data.group_column 'pot', "
        r"data.metadata_columns 'a', 'b' not in the table; its columns: image, weight, plant, day$",
    ):
        _scan(
            ds, table, target_column="mass", group_column="pot", metadata_columns=["day", "a", "b"]
        )
    with pytest.raises(UserError, match=r"data.image_column 'file' not in the table"):
        _scan(ds, table, image_column="file")


def test_same_column_twice_and_reserved_metadata_names(ds):
    table = _csv(ds, ROWS)
    with pytest.raises(UserError, match=r"data.target_column and data.group_column are both"):
        _scan(ds, table, group_column="weight")
    _csv(ds, ROWS, header=("image", "weight", "plant", "split"), name="s.csv")
    with pytest.raises(UserError, match=r"data.metadata_columns: 'split' would replace a manif"):
        _scan(ds, "s.csv", metadata_columns=["split"])


def test_duplicate_image_names_both_rows(ds):
    rows = [*ROWS, ("./img/p1.png", 5.0, 9, 1)]
    with pytest.raises(
        DataError, match=r"plants.csv rows 3 and 6: image 'img/p1.png' listed twice$"
    ):
        _scan(ds, _csv(ds, rows))


def test_path_escaping_root_names_row(ds):
    rows = [*ROWS[:2], ("../x.png", 5.0, 9, 1), ROWS[2]]
    with pytest.raises(DataError, match=r"plants.csv row 4: image path '../x.png' escapes data"):
        _scan(ds, _csv(ds, rows))


def test_too_few_usable_rows(ds):
    rows = [*ROWS[:2], ("img/p2.png", "abc", 8, 1), ("img/gone.png", 1.0, 8, 1)]
    with pytest.raises(
        DataError,
        match=r"plants.csv: 2 usable row\(s\) with an image and a numeric target in column "
        r"'weight' \(data.target_column\); need at least 3 \(2 row\(s\) skipped: "
        r"1 non-numeric target, 1 file not found\)$",
    ):
        _scan(ds, _csv(ds, rows))


def test_regression_report(ds):
    rows = [
        ("img/p0.png", 10.0, 7, 1),
        ("img/p1.png", 20.0, 7, 2),
        ("img/p2.png", 30.0, 8, 1),
        ("img/p3.png", 40.0, 9, 1),
        ("img/p4.png", None, 9, 1),  # missing target
        ("img/x1.png", "n/a", 9, 1),  # non-numeric
        ("img/x2.png", 5.0, None, 1),  # missing group
        ("img/gone.png", 5.0, 9, 1),  # missing file
    ]
    scan = _scan(ds, _csv(ds, rows), group_column="plant", metadata_columns=["day"])
    report = regression_report(scan)
    json.dumps(report, allow_nan=False)
    assert report["layout"] == "table" and report["num_table_rows"] == 8
    assert report["num_images"] == 4 and report["num_skipped"] == 4
    for kind in ("missing_target", "non_numeric_target", "missing_group", "missing_file"):
        assert (report[f"num_{kind}"], report[f"percent_{kind}"]) == (1, 12.5), kind
    assert (report["num_undecodable"], report["percent_undecodable"]) == (0, 0.0)
    assert report["target"] == {
        "count": 4,
        "mean": 25.0,
        "std": 12.9099,  # sample std of 10, 20, 30, 40, 6 significant digits
        "min": 10.0,
        "25%": 17.5,
        "median": 25.0,
        "75%": 32.5,
        "max": 40.0,
    }
    assert report["num_groups"] == 3
    assert report["images_per_group"] == {"max": 2, "mean": 1.33}
    assert report["metadata_columns"] == ["day"]
    assert [s["row"] for s in report["skipped"]] == [6, 7, 8, 9]
