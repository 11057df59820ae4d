"""Classification's data stages: labels from class folders or a table, a split stratified by
class, and the class EDA figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.core.errors import DataError, UserError
from visionpipe.core.sources.folder import ScanResult, data_report, scan_folder
from visionpipe.core.sources.shards import holds_shards, scan_shards
from visionpipe.core.sources.table import scan_table, table_report
from visionpipe.core.task import TaskData
from visionpipe.tasks.classification.data.eda import classification_eda
from visionpipe.tasks.classification.data.split import split_manifest


class ClassificationData(TaskData):
    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        """Labels from ``data.table`` when it is set, else from the class folders."""
        d = params.data
        if d.table:
            result = scan_table(
                d.path,
                d.table,
                d.sheet,
                d.image_column,
                d.label_column,
                d.classes,
                images=d.images,
            )
            return result, table_report(result)
        if d.images:
            raise UserError(
                f"data.images '{d.images}': tables and annotation files use it; class folders "
                "are read from data.path (set data.path to the folder of class folders)"
            )
        if holds_shards(d.path):  # tar shards (WebDataset layout) instead of class folders
            result = scan_shards(d.path, d.label_column, d.classes)
            return result, data_report(result)
        result = scan_folder(d.path)
        extra = [c for c in result.classes if d.classes and c not in d.classes]
        if extra:
            raise DataError(
                f"{Path(d.path) / extra[0]}: class folder not in data.classes "
                f"({', '.join(d.classes)})"
            )
        return result, data_report(result)

    def split(self, manifest: pd.DataFrame, params: Any) -> pd.DataFrame:
        s = params.split
        return split_manifest(manifest, s.train, s.val, s.test, params.base.seed)

    def eda(
        self,
        frame: pd.DataFrame,
        params: Any,
        figures: Path,
        data_report: dict | None,
        splits: Path,
    ) -> dict[str, Any]:
        return classification_eda(
            Path(params.data.path),
            frame,
            params.eda.samples,
            params.eda.intensity_samples,
            params.base.seed,
            figures,
        )


DATA = ClassificationData
