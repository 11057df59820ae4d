"""Detection's data stages: COCO, simple per-image JSON, YOLO or Pascal VOC annotations checked
into a cleaned COCO file and an image manifest, a split by image stratified on the parts present
(a pre-split export's splits kept), one COCO file per split beside its manifest, and the box /
part / state EDA figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.core.coco import (
    read_coco,
    read_split_coco,
    split_coco_path,
    subset_coco,
    write_coco,
)
from visionpipe.core.errors import UserError
from visionpipe.core.manifests import SPLITS
from visionpipe.core.sources.folder import ScanResult
from visionpipe.core.task import TaskData
from visionpipe.tasks.detection.data.coco_source import scan_coco
from visionpipe.tasks.detection.data.eda import detection_eda
from visionpipe.tasks.detection.data.split import split_images

PREPARED = "annotations.json"


@dataclass
class DetectionScan(ScanResult):
    """The image manifest, plus the cleaned COCO annotations it was made from."""

    coco: dict = field(default_factory=dict)


class DetectionData(TaskData):
    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        d = params.data
        root = Path(d.path)
        if not root.is_dir():
            raise UserError(f"data.path: {root} is not a folder")
        found = scan_coco(root, d.annotations, d.state_key, list(d.states), images=d.images)
        parts = [c["name"] for c in sorted(found.coco["categories"], key=lambda c: c["id"])]
        if len(found.manifest) < 3:
            where = d.annotations["train"] if isinstance(d.annotations, dict) else d.annotations
            raise UserError(
                f"{root / where}: {len(found.manifest)} usable image(s); "
                "detection needs at least 3 (train, val and test)"
            )
        result = DetectionScan(
            root=root,
            layout=found.report.get("format", "coco"),
            classes=parts,
            samples=found.manifest,
            skipped=found.report.get("dropped", []),
            coco=found.coco,
        )
        return result, found.report

    def write_prepared(self, result: ScanResult, out: Path) -> None:
        super().write_prepared(result, out)
        write_coco(out / PREPARED, result.coco)

    def split(self, manifest: pd.DataFrame, params: Any) -> pd.DataFrame:
        s = params.split
        return split_images(manifest, s.train, s.val, s.test, params.base.seed)

    def write_splits(self, frame: pd.DataFrame, prepared: Path, out: Path) -> None:
        super().write_splits(frame, prepared, out)
        coco = read_coco(prepared / PREPARED)
        for name in SPLITS:
            ids = frame.loc[frame["split"] == name, "image_id"].astype(int).tolist()
            write_coco(split_coco_path(out, name), subset_coco(coco, ids))

    def eda(
        self,
        frame: pd.DataFrame,
        params: Any,
        figures: Path,
        data_report: dict | None,
        splits: Path,
    ) -> dict[str, Any]:
        coco_by_split = {name: read_split_coco(splits, name) for name in SPLITS}
        return detection_eda(
            coco_by_split,
            Path(params.data.path),
            figures,
            params.eda.samples,
            params.base.seed,
            data_report,
        )


DATA = DetectionData
