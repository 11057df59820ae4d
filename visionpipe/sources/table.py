"""Images listed in a table (CSV or Excel inside ``data.path``) instead of class folders.

The reading and validation helpers are generic (any column, any task) so a regression source can
reuse them; ``scan_table`` is the classification scan and yields the same manifest as
``scan_folder``. Messages name rows as the user sees them in the spreadsheet (header = row 1).
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from visionpipe.errors import DataError, UserError
from visionpipe.sources.folder import MANIFEST_COLUMNS, ScanResult, check_image, data_report

log = logging.getLogger(__name__)

TABLE_EXTENSIONS = (".csv", ".xlsx", ".xlsm")
MISSING_LABEL = "missing label"
FILE_NOT_FOUND = "file not found"


def _strip_cell(value: Any) -> Any:
    """Whitespace-only text is an empty cell; stray spaces around text are spreadsheet noise."""
    if isinstance(value, str):
        return value.strip() or np.nan
    return value


def _tidy(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    names = [str(c).strip() for c in frame.columns]
    if len(set(names)) == len(names):  # never let stripping merge two columns
        frame.columns = names
    frame = frame.map(_strip_cell).dropna(how="all")  # keeps the index, so row numbers hold
    if frame.empty or not len(frame.columns):
        raise DataError(f"{path}: table has no rows")
    return frame


def read_table(path: Path, sheet: str = "") -> pd.DataFrame:
    """Read a CSV or Excel table with inferred dtypes (callers convert what they need).

    Only empty cells are missing values (not "NA" or "None", which can be class names); blank
    rows are dropped but the index stays the 0-based data row, so ``sheet_row`` still names the
    row the user sees. ``sheet`` "" is the first sheet of a workbook and is ignored for CSV.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: table not found")
    if not path.is_file():
        raise UserError(f"{path}: table is not a file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise UserError(
            f"{path}: unsupported table type '{path.suffix or 'no extension'}'; "
            f"use {', '.join(TABLE_EXTENSIONS)}"
        )
    na = {"keep_default_na": False, "na_values": [""]}
    if suffix == ".csv":
        if sheet:
            log.warning("%s is a CSV file: data.sheet %r is ignored", path, sheet)
        try:
            frame = pd.read_csv(path, skip_blank_lines=False, **na)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: table has no rows") from None
        except Exception as exc:  # noqa: BLE001 - any parser failure is the user's file
            raise UserError(
                f"{path}: cannot read CSV ({type(exc).__name__}); save it as a UTF-8 CSV"
            ) from exc
        return _tidy(frame, path)
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            sheets = [str(s) for s in book.sheet_names]
            if sheet and sheet not in sheets:
                listed = ", ".join(f"'{s}'" for s in sheets)
                raise UserError(f"{path}: no sheet '{sheet}' (data.sheet); sheets: {listed}")
            frame = pd.read_excel(book, sheet_name=sheet or sheets[0], **na)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or non-Excel file, whatever the reader says
        raise UserError(
            f"{path}: cannot read workbook ({type(exc).__name__}); "
            "is it a valid .xlsx/.xlsm file (not .xls, not renamed)?"
        ) from exc
    return _tidy(frame, path)


def require_columns(frame: pd.DataFrame, columns: dict[str, str], path: Path | str) -> None:
    """Fail early, naming the param to fix, when a configured column is not in the table."""
    missing = [f"{key} '{name}'" for key, name in columns.items() if name not in frame.columns]
    if missing:
        have = ", ".join(str(c) for c in frame.columns)
        raise UserError(f"{path}: {', '.join(missing)} not in the table; its columns: {have}")


def sheet_row(index: int) -> int:
    """The row number the user sees: the header is row 1, the first data row (index 0) row 2."""
    return int(index) + 2


def cell_text(value: Any) -> str:
    """A cell as text: "" when empty, and 1 (read as 1.0 next to empty cells) as "1"."""
    if isinstance(value, str):
        return value.strip()
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if math.isfinite(number) and number.is_integer() else str(number)
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value).strip()


def _where(table: Path | str, row: int) -> str:
    return f"{table} row {row}" if str(table) else f"row {row}"


def resolve_image_path(value: Any, root: Path, row: int, table: Path | str = "") -> str:
    """The image path of one row as a posix path relative to ``root`` (``data.path``).

    Rejected (DataError naming the row): empty, absolute, or escaping ``root`` after
    normalization. The check is lexical, so symlinked folders inside ``root`` still work.
    Backslashes (tables written on Windows) are read as separators.
    """
    raw = cell_text(value)
    where = _where(table, row)
    if not raw:
        raise DataError(f"{where}: empty image path")
    text = raw.replace("\\", "/")
    if text.startswith("/") or PureWindowsPath(raw).is_absolute():
        raise DataError(
            f"{where}: image path '{raw}' is absolute; write it relative to data.path ({root})"
        )
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise DataError(f"{where}: image path '{raw}' escapes data.path")
    return norm


def scan_table(
    root: str | Path,
    table: str | Path,
    sheet: str = "",
    image_column: str = "image",
    label_column: str = "label",
    classes: Sequence[str] = (),
    workers: int = 4,
) -> ScanResult:
    """Classification samples from a labels table inside ``root``, every image decoded once.

    Rows without a label, rows whose file is missing and undecodable files are skipped and listed
    with their row; a bad path, a label outside ``classes`` or an image listed twice is an error.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data path does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: data path is not a directory")
    rel_table = posixpath.normpath(str(table).replace("\\", "/")) if str(table) else ""
    if not rel_table or rel_table.startswith(("/", "../")) or rel_table in (".", ".."):
        raise UserError(f"data.table '{table}': expected a table file inside data.path ({root})")
    path = root / rel_table
    frame = read_table(path, sheet)
    require_columns(
        frame, {"data.image_column": image_column, "data.label_column": label_column}, path
    )
    if image_column == label_column:
        raise UserError(f"data.image_column and data.label_column are both '{image_column}'")
    allowed = list(dict.fromkeys(str(c) for c in classes))

    skipped: list[dict] = []
    candidates: list[tuple[int, str, str]] = []  # (row, path relative to root, label)
    first_row: dict[str, int] = {}
    labels_seen: set[str] = set()
    for index, image_value, label_value in zip(
        frame.index, frame[image_column], frame[label_column], strict=True
    ):
        row = sheet_row(index)
        label = cell_text(label_value)
        if not label:
            skipped.append({"path": cell_text(image_value), "reason": MISSING_LABEL, "row": row})
            continue
        rel = resolve_image_path(image_value, root, row, table=path)
        if allowed and label not in allowed:
            raise DataError(
                f"{path} row {row}: label '{label}' is not in data.classes ({', '.join(allowed)})"
            )
        if rel in first_row:
            raise DataError(f"{path} rows {first_row[rel]} and {row}: image '{rel}' listed twice")
        first_row[rel] = row
        labels_seen.add(label)
        if not (root / rel).is_file():
            skipped.append({"path": rel, "reason": FILE_NOT_FOUND, "row": row})
            continue
        candidates.append((row, rel, label))

    if not labels_seen:
        raise DataError(
            f"{path}: no row has a label in column '{label_column}' (data.label_column)"
        )
    class_list = allowed or sorted(labels_seen)
    if len(class_list) < 2:
        raise DataError(f"{path}: found 1 class ({class_list[0]}); need at least two")

    rows = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = pool.map(check_image, (root / rel for _, rel, _ in candidates))
        for (row, rel, label), result in tqdm(
            zip(candidates, checks, strict=True),
            total=len(candidates),
            desc="checking images",
            unit="img",
        ):
            if isinstance(result, str):
                skipped.append({"path": rel, "reason": result, "row": row})
            else:
                width, height, mode = result
                rows.append((rel, label, "", width, height, mode))
    samples = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    skipped.sort(key=lambda item: item["row"])

    counts = samples["label"].value_counts()
    for label in class_list:
        if counts.get(label, 0) == 0:
            raise DataError(f"{path}: class '{label}' has no readable images")
    n_missing = sum(item["reason"] == MISSING_LABEL for item in skipped)
    if n_missing:
        log.warning("%s: dropped %d row(s) without a label", path, n_missing)
    for item in skipped:
        if item["reason"] != MISSING_LABEL:
            log.warning(
                "skipped %s row %d (%s): %s", path, item["row"], item["path"], item["reason"]
            )
    return ScanResult(root, "table", class_list, samples, skipped)


def table_report(scan: ScanResult) -> dict:
    """``data_report`` plus why table rows were dropped, as counts and percent of the rows.

    The table rows are the non-blank data rows: every one is either a sample or skipped.
    """
    report = data_report(scan)
    reasons = [item["reason"] for item in scan.skipped]
    table_rows = len(scan.samples) + len(reasons)
    counts = {
        "missing_label": reasons.count(MISSING_LABEL),
        "missing_file": reasons.count(FILE_NOT_FOUND),
    }
    counts["undecodable"] = len(reasons) - counts["missing_label"] - counts["missing_file"]
    report["num_table_rows"] = table_rows
    for name, n in counts.items():
        report[f"num_{name}"] = n
        report[f"percent_{name}"] = round(100 * n / table_rows, 2) if table_rows else 0.0
    return report
