"""Reproducible Excel output: the same table always gives the same bytes.

DVC hashes stage outputs, so a workbook that changes on every write would make every downstream
stage rerun. openpyxl stamps the current time into the workbook properties (docProps/core.xml)
and every zip entry carries the time it was written; here both are fixed, and the zip is rewritten
with a fixed entry order, compression and attributes, so nothing time- or machine-dependent
remains (the deflate output itself comes from zlib, which is stable for a given zlib build).
"""

from __future__ import annotations

import datetime
import io
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.utils import get_column_letter
from openpyxl.writer.excel import ExcelWriter

from visionpipe.core.io import atomic_path

# the workbook's created/modified properties (openpyxl would write "now")
PROPERTIES_TIME = datetime.datetime(2000, 1, 1)
# every zip entry's timestamp: the earliest a zip can store
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_COMPRESSLEVEL = 6
ZIP_EXTERNAL_ATTR = 0o100644 << 16  # a regular file, rw-r--r--
ZIP_CREATE_SYSTEM = 3  # Unix; ZipInfo would pick 0 on Windows
CONTENT_TYPES = "[Content_Types].xml"
_SHEET_XML = re.compile(r"xl/worksheets/sheet\d+\.xml")
_NUMBER_CELL = re.compile(rb'(<c r="([A-Z]+[0-9]+)"[^>]*><v>)([^<]*)(</v>)')


def _cell(value: Any) -> Any:
    """A frame value as openpyxl takes it: missing values (NaN, None, NA) as empty cells."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isinf(value):
        raise ValueError(f"{value} cannot be stored in a workbook cell")
    return value


def _keeps_float(value: float) -> bool:
    """Whether openpyxl's text of ``value`` reads back as this very float; not so for floats
    that need 17 digits, nor for whole ones ("1" reads back as the int 1)."""
    text = "%.16g" % value  # noqa: UP031 - exactly how openpyxl writes a number
    return float(text) == value and any(ch in text for ch in ".eE")


def _exact_floats(xml: bytes, exact: dict[str, str]) -> bytes:
    """The sheet XML with the ``exact`` cells' number text (openpyxl's "%.16g") replaced by
    the shortest text that reads back as the same float (repr: "1.0", "0.30000000000000004")."""
    found: set[str] = set()

    def replace(match: re.Match[bytes]) -> bytes:
        cell = match[2].decode()
        if cell not in exact:
            return match[0]
        found.add(cell)
        return match[1] + exact[cell].encode() + match[4]

    xml = _NUMBER_CELL.sub(replace, xml)
    if found != set(exact):
        raise RuntimeError("cannot find the number cells in openpyxl's sheet XML")
    return xml


def _workbook_entries(frame: pd.DataFrame, sheet: str) -> dict[str, bytes]:
    """The workbook's zip entries (name -> content) with fixed property times, exact floats."""
    book = Workbook()
    ws = book.active
    ws.title = sheet
    ws.append([str(c) for c in frame.columns])
    exact: dict[str, str] = {}  # cell -> repr, for floats openpyxl's text would not keep
    for r, row in enumerate(frame.itertuples(index=False, name=None), start=2):
        cells = [_cell(v) for v in row]
        ws.append(cells)
        for c, value in enumerate(cells, start=1):
            if isinstance(value, float) and not _keeps_float(value):
                exact[f"{get_column_letter(c)}{r}"] = repr(value)
    book.properties.created = PROPERTIES_TIME
    book.properties.modified = PROPERTIES_TIME
    buffer = io.BytesIO()
    # ExcelWriter directly: openpyxl's save_workbook would set ``modified`` to now
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(book, archive).write_data()
    with zipfile.ZipFile(buffer) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if exact:
        (name,) = [n for n in entries if _SHEET_XML.fullmatch(n)]
        entries[name] = _exact_floats(entries[name], exact)
    return entries


def _zip(entries: dict[str, bytes]) -> bytes:
    """A zip of ``entries`` in a fixed order ([Content_Types].xml first, then by name), with
    fixed times, compression and attributes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(entries, key=lambda n: (n != CONTENT_TYPES, n)):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = ZIP_CREATE_SYSTEM
            info.external_attr = ZIP_EXTERNAL_ATTR
            archive.writestr(info, entries[name], compresslevel=ZIP_COMPRESSLEVEL)
    return out.getvalue()


def write_xlsx(path: str | Path, frame: pd.DataFrame, sheet: str) -> None:
    """Write ``frame`` as a one-sheet workbook whose bytes depend only on its content.

    The header row is the column names, then one row per frame row (no index). Missing values
    (NaN, None, NA) are empty cells; floats read back exactly (17-digit ones too) and openpyxl
    reads whole ones as floats (1.0, not 1; pandas' reader still turns those into ints). An
    infinite float is a ValueError, and so is a sheet name Excel does not allow. Written
    atomically.
    """
    data = _zip(_workbook_entries(frame, sheet))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
