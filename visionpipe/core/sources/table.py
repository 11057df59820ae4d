"""Images listed in a table (CSV or Excel inside ``data.path``) instead of class folders.

The reading and validation helpers are generic (any column, any task) so a regression source can
reuse them; ``scan_table`` is the classification scan and yields the same manifest as
``scan_folder``; ``scan_regression_table`` reads a numeric target (and optional group and
metadata columns) per image. Messages name rows as the user sees them in the spreadsheet
(header = row 1).
"""

from __future__ import annotations

import itertools
import logging
import math
import posixpath
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from visionpipe.core import shards
from visionpipe.core.errors import DataError, UserError
from visionpipe.core.io import significant
from visionpipe.core.paths import images_folder, link_outside, under_images
from visionpipe.core.sources.folder import MANIFEST_COLUMNS, ScanResult, check_image, data_report

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
    _require_columns(frame, list(columns.items()), path)


def _require_columns(
    frame: pd.DataFrame, columns: Sequence[tuple[str, str]], path: Path | str
) -> None:
    """``require_columns`` for (param key, column) pairs, where one key may name several columns
    (``data.metadata_columns``): all the missing ones go into one error."""
    missing: dict[str, list[str]] = {}
    for key, name in columns:
        if name not in frame.columns:
            missing.setdefault(key, []).append(f"'{name}'")
    if missing:
        listed = ", ".join(f"{key} {', '.join(names)}" for key, names in missing.items())
        have = ", ".join(str(c) for c in frame.columns)
        raise UserError(f"{path}: {listed} not in the table; its columns: {have}")


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


def resolve_image_path(
    value: Any, root: Path, row: int, table: Path | str = "", images: str = ""
) -> str:
    """The image path of one row as a posix path relative to ``root`` (``data.path``), read
    relative to ``images`` (``data.images``, a folder inside ``root``; "" for ``root``).

    Rejected (DataError naming the row): empty, absolute, or escaping ``root`` after
    normalization. Links leading out of ``root`` are caught when the image is checked.
    Backslashes (tables written on Windows) are read as separators.
    """
    raw = cell_text(value)
    where = _where(table, row)
    if not raw:
        raise DataError(f"{where}: empty image path")
    text = raw.replace("\\", "/")
    if text.startswith("/") or PureWindowsPath(raw).is_absolute():
        raise DataError(
            f"{where}: image path '{raw}' is absolute; write it relative to "
            + (f"data.images ({images})" if images else f"data.path ({root})")
        )
    norm = under_images(images, posixpath.normpath(text))
    if norm == ".." or norm.startswith("../"):
        raise DataError(f"{where}: image path '{raw}' escapes data.path")
    return norm


def _locate_table(root: str | Path, table: str | Path) -> tuple[Path, Path]:
    """``root`` (``data.path``) checked to be a folder, and the table file inside it."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data path does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: data path is not a directory")
    rel_table = posixpath.normpath(str(table).replace("\\", "/")) if str(table) else ""
    if not rel_table or rel_table.startswith(("/", "../")) or rel_table in (".", ".."):
        raise UserError(f"data.table '{table}': expected a table file inside data.path ({root})")
    path = root / rel_table
    if path.exists() and (outside := link_outside(path, root)):
        raise UserError(f"data.table '{table}': {outside}")
    return root, path


def _check_images(
    root: Path, rels: Sequence[str], workers: int
) -> list[tuple[int, int, str] | str]:
    """``check_image`` of every path (relative to ``root``), in order, decoded in threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = pool.map(check_image, (root / rel for rel in rels), itertools.repeat(root))
        return list(tqdm(checks, total=len(rels), desc="checking images", unit="img"))


def scan_table(
    root: str | Path,
    table: str | Path,
    sheet: str = "",
    image_column: str = "image",
    label_column: str = "label",
    classes: Sequence[str] = (),
    workers: int = 4,
    images: str = "",
) -> ScanResult:
    """Classification samples from a labels table inside ``root``, every image decoded once;
    image paths are relative to ``images`` (``data.images``) and made relative to ``root``.

    Rows without a label, rows whose file is missing and undecodable files are skipped and listed
    with their row; a bad path, a label outside ``classes`` or an image listed twice is an error.
    """
    root, path = _locate_table(root, table)
    images = images_folder(root, images)
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
        rel = resolve_image_path(image_value, root, row, path, images)
        if allowed and label not in allowed:
            raise DataError(
                f"{path} row {row}: label '{label}' is not in data.classes ({', '.join(allowed)})"
            )
        if rel in first_row:
            raise DataError(f"{path} rows {first_row[rel]} and {row}: image '{rel}' listed twice")
        first_row[rel] = row
        labels_seen.add(label)
        if not shards.is_file(root / rel):
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
    checks = _check_images(root, [rel for _, rel, _ in candidates], workers)
    for (row, rel, label), result in zip(candidates, checks, strict=True):
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


# --- regression: a numeric target per image (e.g. plant fresh weight), optional group ---------

MISSING_TARGET = "missing target"
NON_NUMERIC_TARGET = "non-numeric target"  # the reason goes on with the cell: "... 'n/a'"
MISSING_GROUP = "missing group"
REGRESSION_COLUMNS = ["path", "target", "group", "split", "width", "height", "mode"]
MIN_REGRESSION_ROWS = 3
# a plain decimal number, as text: "12.5", "-3", ".5", "1e3"; not "12,5", "12.5kg", "inf", "nan"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# why a row was skipped, as report key and as words; "undecodable" is any check_image reason
_SKIP_KINDS = {
    "missing_target": MISSING_TARGET,
    "non_numeric_target": NON_NUMERIC_TARGET,
    "missing_group": MISSING_GROUP,
    "missing_file": FILE_NOT_FOUND,
    "undecodable": "undecodable",
}


def _parse_target(value: Any) -> float | str:
    """A target cell as a finite float, or the reason it is unusable (the cell is not empty)."""
    numeric = isinstance(value, int | float | np.integer | np.floating)
    numeric = numeric and not isinstance(value, bool | np.bool_)  # TRUE/FALSE is no measurement
    as_text = isinstance(value, str) and _NUMBER.fullmatch(value.strip()) is not None
    number = float(value) if numeric or as_text else math.nan
    if math.isfinite(number):
        return number
    return f"{NON_NUMERIC_TARGET} '{cell_text(value)}'"


def _skip_kind(reason: str) -> str:
    if reason == MISSING_TARGET:
        return "missing_target"
    if reason.startswith(NON_NUMERIC_TARGET):
        return "non_numeric_target"
    if reason == MISSING_GROUP:
        return "missing_group"
    if reason == FILE_NOT_FOUND:
        return "missing_file"
    return "undecodable"  # check_image's reasons


def scan_regression_table(
    root: str | Path,
    table: str | Path,
    sheet: str = "",
    image_column: str = "image",
    target_column: str = "target",
    group_column: str = "",
    metadata_columns: Sequence[str] = (),
    workers: int = 4,
    images: str = "",
) -> ScanResult:
    """Regression samples (a numeric target per image) from a table inside ``root``; image
    paths as in :func:`scan_table`.

    Skipped and listed with their row: an empty or non-numeric target (numbers stored as text,
    like "12.5", are fine; "n/a", "12,5kg", "inf" are not), an empty group (when
    ``group_column`` is set), a missing file, an undecodable image. A bad image path or an image
    listed twice is an error, and so are fewer than ``MIN_REGRESSION_ROWS`` usable rows.

    The manifest has ``REGRESSION_COLUMNS`` (target float, group text: plant 7 is "7", "" with
    no group column, split "") then the ``metadata_columns`` as read; ``classes`` is empty.
    """
    root, path = _locate_table(root, table)
    images = images_folder(root, images)
    frame = read_table(path, sheet)
    return scan_regression_frame(
        root,
        frame,
        path,
        image_column,
        target_column,
        group_column,
        metadata_columns,
        workers,
        images,
    )


def scan_regression_frame(
    root: Path,
    frame: pd.DataFrame,
    path: Path,
    image_column: str = "image",
    target_column: str = "target",
    group_column: str = "",
    metadata_columns: Sequence[str] = (),
    workers: int = 4,
    images: str = "",
    layout: str = "table",
    skipped: list[dict] | None = None,
) -> ScanResult:
    """:func:`scan_regression_table` on rows already read (``path`` names them in messages;
    ``skipped``: what the reader already set aside)."""
    if isinstance(metadata_columns, str):
        metadata_columns = [metadata_columns]
    metadata = list(dict.fromkeys(str(c) for c in metadata_columns))
    keys = {"data.image_column": image_column, "data.target_column": target_column}
    if group_column:
        keys["data.group_column"] = group_column
    _require_columns(
        frame, [*keys.items(), *(("data.metadata_columns", c) for c in metadata)], path
    )
    named = list(keys.items())
    for i, (key, column) in enumerate(named):
        for other, other_column in named[i + 1 :]:
            if column == other_column:
                raise UserError(f"{key} and {other} are both '{column}'")
    clashes = [c for c in metadata if c in REGRESSION_COLUMNS]
    if clashes:
        raise UserError(
            f"data.metadata_columns: {', '.join(repr(c) for c in clashes)} would replace a "
            f"manifest column ({', '.join(REGRESSION_COLUMNS)}); rename it in the table"
        )

    skipped = list(skipped or [])
    candidates: list[tuple[Any, int, str, float, str]] = []  # (index, row, rel, target, group)
    first_row: dict[str, int] = {}
    groups = frame[group_column] if group_column else pd.Series("", index=frame.index)
    for index, image_value, target_value, group_value in zip(
        frame.index, frame[image_column], frame[target_column], groups, strict=True
    ):
        row = sheet_row(index)
        target = _parse_target(target_value) if cell_text(target_value) else MISSING_TARGET
        group = cell_text(group_value)
        if isinstance(target, str) or (group_column and not group):
            reason = target if isinstance(target, str) else MISSING_GROUP
            skipped.append({"path": cell_text(image_value), "reason": reason, "row": row})
            continue
        rel = resolve_image_path(image_value, root, row, path, images)
        if rel in first_row:
            raise DataError(f"{path} rows {first_row[rel]} and {row}: image '{rel}' listed twice")
        first_row[rel] = row
        if not shards.is_file(root / rel):
            skipped.append({"path": rel, "reason": FILE_NOT_FOUND, "row": row})
            continue
        candidates.append((index, row, rel, target, group))

    rows, kept = [], []
    checks = _check_images(root, [rel for _, _, rel, _, _ in candidates], workers)
    for (index, row, rel, target, group), result in zip(candidates, checks, strict=True):
        if isinstance(result, str):
            skipped.append({"path": rel, "reason": result, "row": row})
        else:
            width, height, mode = result
            rows.append((rel, target, group, "", width, height, mode))
            kept.append(index)
    skipped.sort(key=lambda item: item.get("row", 0))
    if len(rows) < MIN_REGRESSION_ROWS:
        kinds = [_skip_kind(item["reason"]) for item in skipped]
        why = ", ".join(
            f"{kinds.count(kind)} {words}" for kind, words in _SKIP_KINDS.items() if kind in kinds
        )
        raise DataError(
            f"{path}: {len(rows)} usable row(s) with an image and a numeric target in column "
            f"'{target_column}' (data.target_column); need at least {MIN_REGRESSION_ROWS}"
            + (f" ({len(skipped)} row(s) skipped: {why})" if skipped else "")
        )

    samples = pd.DataFrame(rows, columns=REGRESSION_COLUMNS).astype({"target": float})
    if metadata:
        extra = frame.loc[kept, metadata].reset_index(drop=True)
        samples = pd.concat([samples, extra], axis=1)
    n_missing = sum(item["reason"] == MISSING_TARGET for item in skipped)
    if n_missing:
        log.warning("%s: dropped %d row(s) without a target", path, n_missing)
    for item in skipped:
        if item["reason"] != MISSING_TARGET:
            where = f"row {item['row']} " if "row" in item else ""
            log.warning("skipped %s %s(%s): %s", path, where, item["path"], item["reason"])
    return ScanResult(root, layout, [], samples, skipped)


def regression_report(scan: ScanResult) -> dict:
    """Summary of a ``scan_regression_table`` result: why table rows were dropped (counts and
    percent of the non-blank data rows), target statistics of the kept rows, groups, and every
    skipped row. Built here: ``data_report`` counts per class, and regression has none."""
    samples = scan.samples
    reasons = [item["reason"] for item in scan.skipped]
    kinds = [_skip_kind(reason) for reason in reasons]
    table_rows = len(samples) + len(reasons)
    report: dict[str, Any] = {
        "root": str(scan.root),
        "layout": scan.layout,
        "task": "regression",
        "num_table_rows": table_rows,
        "num_images": int(len(samples)),
        "num_skipped": len(reasons),
    }
    for kind in _SKIP_KINDS:
        n = kinds.count(kind)
        report[f"num_{kind}"] = n
        report[f"percent_{kind}"] = round(100 * n / table_rows, 2) if table_rows else 0.0
    stats = samples["target"].astype(float).describe()
    names = {"mean": "mean", "std": "std", "min": "min", "25%": "25%", "50%": "median"}
    names.update({"75%": "75%", "max": "max"})  # describe()'s names, in its order
    report["target"] = {
        "count": int(stats["count"]),
        **{name: significant(float(stats[key])) for key, name in names.items()},
    }
    groups = samples["group"].astype(str)
    if len(groups) and (groups != "").any():  # kept rows all have a group when one is set
        per_group = groups.value_counts()
        report["num_groups"] = int(len(per_group))
        report["images_per_group"] = {
            "max": int(per_group.max()),
            "mean": round(float(per_group.mean()), 2),
        }
    report["metadata_columns"] = [str(c) for c in samples.columns[len(REGRESSION_COLUMNS) :]]
    report["skipped"] = scan.skipped
    return report
