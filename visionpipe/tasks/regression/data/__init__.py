"""Regression's data stages: targets (and groups, metadata) from a table beside the images, a
split that keeps each group in one split, and the target EDA figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.core.errors import UserError
from visionpipe.core.sources.folder import ScanResult
from visionpipe.core.sources.shards import holds_shards, shard_frame
from visionpipe.core.sources.table import (
    regression_report,
    scan_regression_frame,
    scan_regression_table,
)
from visionpipe.core.task import TaskData
from visionpipe.tasks.regression.data.eda import regression_eda
from visionpipe.tasks.regression.data.split import split_regression


class RegressionData(TaskData):
    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        d = params.data
        if not d.table and holds_shards(d.path):  # tar shards: targets in each .json
            root = Path(d.path)
            frame, skipped = shard_frame(root, d.image_column)
            result = scan_regression_frame(
                root,
                frame,
                root,
                d.image_column,
                d.target_column,
                d.group_column,
                d.metadata_columns,
                layout="shards",
                skipped=skipped,
            )
            return result, regression_report(result)
        if not d.table:
            raise UserError(
                "data.table: regression reads its targets from a table (.csv, .xlsx) inside "
                f"data.path ({d.path}) or tar shards (python -m visionpipe.pack); set "
                "data.table and data.target_column"
            )
        result = scan_regression_table(
            d.path,
            d.table,
            d.sheet,
            d.image_column,
            d.target_column,
            d.group_column,
            d.metadata_columns,
            images=d.images,
        )
        return result, regression_report(result)

    def split(self, manifest: pd.DataFrame, params: Any) -> pd.DataFrame:
        s = params.split
        return split_regression(
            manifest,
            s.train,
            s.val,
            s.test,
            params.base.seed,
            "group",
            s.stratify_bins,
            group_name=params.data.group_column,
        )

    def eda(
        self,
        frame: pd.DataFrame,
        params: Any,
        figures: Path,
        data_report: dict | None,
        splits: Path,
    ) -> dict[str, Any]:
        return regression_eda(
            Path(params.data.path),
            frame,
            params.data.target_column,
            list(params.data.metadata_columns),
            params.eda.target_vs,
            params.eda.samples,
            params.eda.intensity_samples,
            params.base.seed,
            figures,
            data_report,
        )


DATA = RegressionData
