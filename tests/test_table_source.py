import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_image
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.sources.table import (
    read_table,
    require_columns,
    resolve_image_path,
    scan_table,
    sheet_row,
    table_report,
)


def _images(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        write_image(root / name, value=40 + 10 * i)


def _csv(root: Path, rows: list[tuple], name: str = "labels.csv", header=("image", "label")):
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(header)).to_csv(root / name, index=False)
    return name


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    """Four images (two per class) under img/, not yet listed in a table."""
    root = tmp_path / "ds"
    _images(root, ["img/a0.png", "img/a1.png", "img/b0.png", "img/b1.png"])
    return root


ROWS = [("img/a0.png", "cat"), ("img/b0.png", "dog"), ("img/a1.png", "cat"), ("img/b1.png", "dog")]


def test_csv_happy_path(ds):
    table = _csv(ds, ROWS)
    scan = scan_table(ds, table)
    assert scan.layout == "table" and scan.classes == ["cat", "dog"] and scan.skipped == []
    assert scan.samples["path"].tolist() == [p for p, _ in ROWS]
    assert scan.samples["label"].tolist() == [label for _, label in ROWS]
    row = scan.samples.iloc[0]
    assert row["split"] == "" and (row["width"], row["height"], row["mode"]) == (24, 20, "L")


def _xlsx(root: Path, sheets: dict[str, list[tuple]], name: str = "labels.xlsx") -> str:
    with pd.ExcelWriter(root / name, engine="openpyxl") as writer:
        for sheet, rows in sheets.items():
            pd.DataFrame(rows, columns=["image", "label"]).to_excel(
                writer, sheet_name=sheet, index=False
            )
    return name


def test_xlsx_named_sheet_and_first_sheet_by_default(ds):
    other = [("img/a0.png", "x"), ("img/b0.png", "y")]
    table = _xlsx(ds, {"notes": other, "labels": ROWS})
    assert scan_table(ds, table, sheet="labels").classes == ["cat", "dog"]
    first = scan_table(ds, table)
    assert first.classes == ["x", "y"] and len(first.samples) == 2
    assert read_table(ds / table, "labels")["label"].tolist() == ["cat", "dog", "cat", "dog"]


def test_missing_sheet_lists_sheets(ds):
    table = _xlsx(ds, {"one": ROWS, "two": ROWS})
    with pytest.raises(UserError, match=r"no sheet 'three' \(data.sheet\); sheets: 'one', 'two'$"):
        read_table(ds / table, "three")


def test_unreadable_workbook(tmp_path):
    (tmp_path / "fake.xlsx").write_text("image,label\na.png,cat\n")
    with pytest.raises(UserError, match=r"fake.xlsx: cannot read workbook \(BadZipFile\)") as exc:
        read_table(tmp_path / "fake.xlsx")
    assert "\n" not in str(exc.value)


def test_unsupported_extension_and_missing_file(tmp_path):
    (tmp_path / "labels.txt").write_text("image,label\n")
    with pytest.raises(UserError, match=r"unsupported table type '.txt'; use .csv, .xlsx, .xlsm"):
        read_table(tmp_path / "labels.txt")
    with pytest.raises(UserError, match=r"nope.csv: table not found"):
        read_table(tmp_path / "nope.csv")


def test_empty_table_is_a_data_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("image,label\n,\n")
    for name in ("empty.csv", "header.csv"):
        with pytest.raises(DataError, match="table has no rows"):
            read_table(tmp_path / name)


def test_missing_column_names_param_and_lists_columns(ds):
    table = _csv(ds, ROWS, header=("file", "label"))
    with pytest.raises(
        UserError, match=r"data.image_column 'image' not in the table; its columns: file, label$"
    ):
        scan_table(ds, table)
    frame = read_table(ds / table)
    with pytest.raises(UserError, match=r"data.target_column 'y' not in the table"):
        require_columns(frame, {"data.target_column": "y"}, ds / table)


def test_sheet_row():
    assert sheet_row(0) == 2 and sheet_row(5) == 7


def test_missing_labels_files_and_undecodable_are_skipped_with_rows(ds):
    (ds / "img" / "broken.png").write_bytes(b"not a png")
    rows = [
        *ROWS,  # rows 2-5
        ("img/unlabelled.png", None),  # row 6
        ("img/gone.png", "cat"),  # row 7
        ("img/broken.png", "dog"),  # row 8
        ("img/a9.png", "  "),  # row 9: whitespace only is missing too
    ]
    scan = scan_table(ds, _csv(ds, rows))
    assert len(scan.samples) == 4
    assert [(s["row"], s["path"], s["reason"][:12]) for s in scan.skipped] == [
        (6, "img/unlabelled.png", "missing labe"),
        (7, "img/gone.png", "file not fou"),
        (8, "img/broken.png", "corrupt or t"),
        (9, "img/a9.png", "missing labe"),
    ]
    report = table_report(scan)
    json.dumps(report)
    assert report["num_table_rows"] == 8 and report["num_images"] == 4
    assert report["num_skipped"] == 4 and report["layout"] == "table"
    assert (report["num_missing_label"], report["percent_missing_label"]) == (2, 25.0)
    assert (report["num_missing_file"], report["percent_missing_file"]) == (1, 12.5)
    assert (report["num_undecodable"], report["percent_undecodable"]) == (1, 12.5)


def test_percentages_rounded(ds):
    rows = [*ROWS, ("img/a0b.png", None), ("img/gone.png", "dog")]  # 6 rows
    report = table_report(scan_table(ds, _csv(ds, rows)))
    assert report["percent_missing_label"] == 16.67 and report["percent_missing_file"] == 16.67
    assert report["percent_undecodable"] == 0.0


def test_blank_lines_keep_row_numbers(ds):
    (ds / "labels.csv").write_text(
        "image,label\nimg/a0.png,cat\n\nimg/b0.png,dog\nimg/a1.png,cat\nimg/b1.png,dog\n"
        "../x.png,cat\n"
    )
    with pytest.raises(
        DataError, match=r"labels.csv row 7: image path '../x.png' escapes data.path$"
    ):
        scan_table(ds, "labels.csv")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("../x.png", r"labels.csv row 4: image path '../x.png' escapes data.path$"),
        ("img/../../x.png", r"row 4: image path 'img/../../x.png' escapes data.path$"),
        ("/etc/x.png", r"labels.csv row 4: image path '/etc/x.png' is absolute; write it rel"),
        ("C:\\data\\x.png", r"row 4: image path 'C:\\data\\x.png' is absolute"),
        (None, r"labels.csv row 4: empty image path$"),
    ],
)
def test_bad_image_paths_rejected_with_row(ds, image, message):
    rows = [ROWS[0], ROWS[1], (image, "cat"), ROWS[3]]
    with pytest.raises(DataError, match=message):
        scan_table(ds, _csv(ds, rows))


def test_resolve_image_path_normalizes():
    root = Path("/data")
    assert resolve_image_path("./img//a.png", root, 2) == "img/a.png"
    assert resolve_image_path("img\\sub\\..\\a.png", root, 2) == "img/a.png"
    with pytest.raises(DataError, match=r"^row 3: image path '..' escapes data.path$"):
        resolve_image_path("..", root, 3)


def test_label_outside_classes_rejected_with_row(ds):
    rows = [*ROWS[:3], ("img/b1.png", "owl")]
    with pytest.raises(
        DataError, match=r"labels.csv row 5: label 'owl' is not in data.classes \(dog, cat\)$"
    ):
        scan_table(ds, _csv(ds, rows), classes=["dog", "cat"])


def test_classes_order_respected_and_empty_class_rejected(ds):
    table = _csv(ds, ROWS)
    assert scan_table(ds, table, classes=["dog", "cat"]).classes == ["dog", "cat"]
    with pytest.raises(DataError, match=r"labels.csv: class 'owl' has no readable images$"):
        scan_table(ds, table, classes=["dog", "cat", "owl"])


def test_numeric_labels_are_integral_strings(ds):
    # the empty label makes pandas read the column as float (1.0, 2.0, nan)
    rows = [("img/a0.png", 1), ("img/b0.png", 2), ("img/a1.png", 1), ("img/b1.png", None)]
    scan = scan_table(ds, _csv(ds, rows))
    assert scan.classes == ["1", "2"] and scan.samples["label"].tolist() == ["1", "2", "1"]
    assert scan_table(ds, _xlsx(ds, {"s": rows})).classes == ["1", "2"]


def test_duplicate_image_names_both_rows(ds):
    rows = [*ROWS, ("./img/a0.png", "dog")]
    with pytest.raises(
        DataError, match=r"labels.csv rows 2 and 6: image 'img/a0.png' listed twice$"
    ):
        scan_table(ds, _csv(ds, rows))


def test_fewer_than_two_classes(ds):
    rows = [(p, "cat") for p, _ in ROWS]
    with pytest.raises(DataError, match=r"labels.csv: found 1 class \(cat\); need at least two$"):
        scan_table(ds, _csv(ds, rows))
    with pytest.raises(DataError, match=r"no row has a label in column 'label'"):
        scan_table(ds, _csv(ds, [(p, None) for p, _ in ROWS]))


def test_table_must_be_inside_data_path(ds):
    with pytest.raises(
        UserError, match=r"data.table '../labels.csv': expected a table file inside"
    ):
        scan_table(ds, "../labels.csv")
