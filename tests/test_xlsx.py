"""write_xlsx: a workbook whose bytes depend only on its content, read back exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import openpyxl
import pandas as pd
import pytest

from tests.conftest import REPO
from visionpipe.core.errors import UserError
from visionpipe.core.sources.table import read_table
from visionpipe.core.sources.xlsx import write_xlsx


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": ["a/x.png", "a/y.png", "b/z.png", "b/w.png"],
            "count": [3, 0, -7, 12],
            "value": [1 / 3, 2 / 3, 0.1, np.nan],  # an empty cell in a float column
            "kind": ["mono", None, "poly", "mono"],  # and one in a text column
            "whole": [0.0, 1.0, 0.1 + 0.2, 12345.678901234567],  # 17 digits: the last two
        }
    )


def _later_clock(monkeypatch) -> None:
    """Move the clock: a second later for openpyxl's "now", a day later for zip entry times."""
    time.sleep(1.1)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 86400)


def test_rewrite_is_byte_identical_across_a_time_change(tmp_path, monkeypatch):
    path = tmp_path / "t.xlsx"
    plain = tmp_path / "plain.xlsx"
    write_xlsx(path, _frame(), "cells")
    first = path.read_bytes()
    pd.DataFrame({"a": [1]}).to_excel(plain, index=False)
    plain_first = plain.read_bytes()

    _later_clock(monkeypatch)
    write_xlsx(path, _frame(), "cells")
    assert path.read_bytes() == first
    pd.DataFrame({"a": [1]}).to_excel(plain, index=False)
    assert plain.read_bytes() != plain_first  # the clock change is one a plain write shows

    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        core = archive.read("docProps/core.xml").decode()
    assert infos[0].filename == "[Content_Types].xml"
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}
    assert len({(info.create_system, info.external_attr) for info in infos}) == 1
    assert "2000-01-01T00:00:00Z" in core and str(time.gmtime().tm_year) not in core


def test_same_bytes_from_another_process(tmp_path):
    here, there = tmp_path / "here.xlsx", tmp_path / "there.xlsx"
    write_xlsx(here, _frame(), "cells")
    code = (
        "import sys; from tests.test_xlsx import _frame; "
        "from visionpipe.core.sources.xlsx import write_xlsx; "
        "write_xlsx(sys.argv[1], _frame(), 'cells')"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(there)], check=True, cwd=REPO, env=env)
    assert there.read_bytes() == here.read_bytes()


def test_round_trip_through_openpyxl_and_read_table(tmp_path):
    path = tmp_path / "t.xlsx"
    frame = _frame()
    write_xlsx(path, frame, "cells")

    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["cells"]
    rows = list(book["cells"].iter_rows(values_only=True))
    assert rows[0] == tuple(frame.columns)
    assert rows[1] == ("a/x.png", 3, 1 / 3, "mono", 0.0)
    assert rows[2] == ("a/y.png", 0, 2 / 3, None, 1.0)
    assert rows[4] == ("b/w.png", 12, None, "mono", 12345.678901234567)
    assert all(isinstance(row[4], float) for row in rows[1:])  # 0.0 and 1.0 too, not 0 and 1
    assert all(isinstance(row[1], int) for row in rows[1:])

    back = read_table(path, "cells")
    assert list(back.columns) == list(frame.columns)
    assert back["image"].tolist() == frame["image"].tolist()
    assert back["count"].dtype == np.int64 and back["count"].tolist() == [3, 0, -7, 12]
    assert back["value"].tolist()[:3] == [1 / 3, 2 / 3, 0.1]  # exact, not approximately
    assert np.isnan(back["value"].iloc[3])
    assert back["whole"].dtype == np.float64 and back["whole"].tolist() == frame["whole"].tolist()
    assert back["kind"].isna().tolist() == [False, True, False, False]
    assert back["kind"].dropna().tolist() == ["mono", "poly", "mono"]


def test_sheet_name_is_used(tmp_path):
    path = tmp_path / "t.xlsx"
    write_xlsx(path, _frame(), "my sheet")
    assert openpyxl.load_workbook(path).sheetnames == ["my sheet"]
    assert len(read_table(path, "my sheet")) == 4
    with pytest.raises(UserError, match="no sheet 'cells'"):
        read_table(path, "cells")


def test_other_content_other_bytes_and_no_temp_files(tmp_path):
    path = tmp_path / "t.xlsx"
    write_xlsx(path, _frame(), "cells")
    first = path.read_bytes()
    changed = _frame()
    changed.loc[0, "value"] = 0.25
    write_xlsx(path, changed, "cells")
    assert path.read_bytes() != first
    assert read_table(path, "cells")["value"].iloc[0] == 0.25
    write_xlsx(path, _frame(), "other")
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["t.xlsx"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.xlsx"
    write_xlsx(path, _frame(), "cells")
    first = path.read_bytes()
    with pytest.raises(ValueError):
        write_xlsx(path, _frame(), "bad/name")  # not a valid sheet name
    with pytest.raises(ValueError, match="inf"):
        write_xlsx(path, _frame().assign(whole=np.inf), "cells")
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["t.xlsx"]
