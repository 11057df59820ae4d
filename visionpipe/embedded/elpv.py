"""The embedded default: the elpv-dataset package's solar-cell images, as a user would bring them.

The images are written as class folders (one folder per grade) AND listed in the Excel sheet
``SHEET`` of ``TABLE`` inside the same folder, so the default run can take either the class-folder
code path or the user's table code path (``visionpipe.core.sources.table``: classification on column
``grade``, regression on ``defect_probability`` with ``cell_type`` as metadata)::

    <out_dir>/
        0_functional/cell0004.png ...
        1_possibly_defective/ ...
        2_likely_defective/ ...
        3_defective/ ...
        elpv_cells.xlsx   sheet "cells": image, grade, defect_probability, cell_type
        LICENSE.md

The workbook's bytes depend only on its content (``visionpipe.core.sources.xlsx``), so DVC
sees the same output on every rerun. The package's licence (CC BY-NC-SA) is copied from the
installed distribution at run time; the images are never committed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from visionpipe.core.errors import DataError
from visionpipe.core.sources.xlsx import write_xlsx

log = logging.getLogger(__name__)

DISTRIBUTION = "elpv-dataset"
TABLE = "elpv_cells.xlsx"  # inside the output folder, beside the class folders
SHEET = "cells"
TABLE_COLUMNS = ["image", "grade", "defect_probability", "cell_type"]
# defect probability -> class folder; the numeric prefix keeps the grades in order
GRADES = {
    0.0: "0_functional",
    1 / 3: "1_possibly_defective",
    2 / 3: "2_likely_defective",
    1.0: "3_defective",
}


def package_dir() -> Path:
    try:
        import elpv_dataset
    except ImportError as exc:
        raise DataError(
            f"{DISTRIBUTION} is not installed: pip install -r requirements.txt"
        ) from exc
    return Path(elpv_dataset.__file__).parent / "data"


def licence_text() -> str:
    """The dataset's licence as shipped in the installed distribution."""
    dist = importlib.metadata.distribution(DISTRIBUTION)
    for file in dist.files or ():
        if file.name.upper().startswith("LICENSE"):
            return file.read_text()
    raise DataError(f"{DISTRIBUTION}: no licence file in the installed distribution")


def read_labels() -> pd.DataFrame:
    """The package's labels: image file, defect probability, module type, and grade class."""
    labels = pd.read_csv(
        package_dir() / "labels.csv",
        sep=r"\s+",
        header=None,
        names=["image", "probability", "type"],
    )
    grades = list(GRADES)
    labels["label"] = [GRADES[min(grades, key=lambda g: abs(g - p))] for p in labels["probability"]]
    return labels


def materialize(out_dir: str | Path, max_per_class: int = 0) -> pd.DataFrame:
    """Copy the images into ``out_dir/<grade>/`` and list them in ``TABLE``; return that table.

    One row per image (``TABLE_COLUMNS``: the path relative to ``out_dir``, the grade folder, the
    package's defect probability as read, mono/poly), sorted by grade then image. The folder is
    written all at once or not at all (atomic rename), replacing any earlier one.
    """
    out_dir = Path(out_dir)
    src = package_dir()
    labels = read_labels().sort_values(["label", "image"], kind="stable")
    if max_per_class:
        labels = labels.groupby("label", sort=False).head(max_per_class)

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for label in GRADES.values():
        (tmp / label).mkdir(parents=True)
    rows = []
    for image, label, prob, cell_type in tqdm(
        labels[["image", "label", "probability", "type"]].itertuples(index=False),
        total=len(labels),
        desc="writing elpv images",
        unit="img",
    ):
        name = Path(image).name
        shutil.copyfile(src / image, tmp / label / name)
        rows.append((f"{label}/{name}", label, prob, cell_type))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    write_xlsx(tmp / TABLE, table, SHEET)
    (tmp / "LICENSE.md").write_text(licence_text())
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("wrote %d elpv images to %s", len(table), out_dir)
    return table
