"""Detection: parts with boxes and a state per part (Faster R-CNN with a state head).

Data comes as COCO JSON (state in ``attributes.<state_key>`` or a top-level key) or a simple
per-image JSON that prepare converts; prepare writes the cleaned COCO file, split writes one COCO
file per split beside the image manifests, and train, evaluate, export and simulate read those.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visionpipe.detection import stages
from visionpipe.detection.eda import detection_eda
from visionpipe.detection.split import split_images
from visionpipe.errors import UserError
from visionpipe.manifests import SPLITS
from visionpipe.sources.coco import read_coco, scan_coco, subset_coco, write_coco
from visionpipe.sources.folder import ScanResult
from visionpipe.tasks.base import Task

PREPARED = "annotations.json"


@dataclass
class DetectionScan(ScanResult):
    """The image manifest, plus the cleaned COCO annotations it was made from."""

    coco: dict = field(default_factory=dict)


def split_coco_path(splits: Path, name: str) -> Path:
    """The COCO file of one split, written beside its image manifest."""
    return Path(splits) / f"{name}.json"


def read_split_coco(splits: Path, name: str) -> dict:
    path = split_coco_path(splits, name)
    if not path.is_file():
        raise UserError(f"{path}: split annotations not found (run the split stage)")
    return read_coco(path)


class DetectionTask(Task):
    name = "detection"
    monitor_modes = {"map": "max", "map_50": "max", "state_accuracy": "max", "loss": "min"}
    default_monitor = "val_map"

    def scan(self, params: Any) -> tuple[ScanResult, dict]:
        cfg = params.detection
        root = Path(params.data.path)
        if not root.is_dir():
            raise UserError(f"data.path: {root} is not a folder")
        found = scan_coco(root, cfg.annotations, cfg.state_key, list(cfg.states))
        parts = [c["name"] for c in sorted(found.coco["categories"], key=lambda c: c["id"])]
        if len(found.manifest) < 3:
            raise UserError(
                f"{root / cfg.annotations}: {len(found.manifest)} usable image(s); "
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

    def train_stage(self, params: Any, args: argparse.Namespace) -> None:
        stages.train(self, params, args)

    def evaluate_stage(self, params: Any, args: argparse.Namespace) -> None:
        stages.evaluate(self, params, args)

    def export_stage(self, params: Any, args: argparse.Namespace) -> None:
        stages.export(self, params, args)

    def simulate_stage(self, params: Any, args: argparse.Namespace) -> None:
        stages.simulate(self, params, args)

    def prediction_records(self, outputs: Any, labels: list[str]) -> list[dict]:
        """One record per frame for the conveyor loop: see :func:`stages.frame_record`."""
        threshold = self.score_threshold
        return [stages.frame_record(out, labels, self.states, threshold) for out in outputs]

    def load_meta(self, meta: dict[str, Any]) -> None:
        """The states and the score threshold the model was trained and exported with."""
        self.states = list(meta["states"])
        self.score_threshold = float(meta.get("score_threshold", 0.5))
