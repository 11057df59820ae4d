"""The classification split: stratified by class, or the user's own train/ val/ test/ folders."""

from __future__ import annotations

import logging

import pandas as pd

from visionpipe.core.manifests import SPLITS
from visionpipe.core.split import assemble, check_counts, stratified, three_way

log = logging.getLogger(__name__)


def split_manifest(
    samples: pd.DataFrame, train: float, val: float, test: float, seed: int
) -> pd.DataFrame:
    """Return ``samples`` with a ``split`` column of train/val/test.

    Flat data is split by the ratios. Pre-split data keeps its folders; when it has no test/
    folder, the test split is carved from train/ with a ``test / (train + test)`` share, so
    model selection on val never touches the test images.
    """
    frame = samples.sort_values(["label", "path"], kind="stable").reset_index(drop=True)
    presplit = frame["split"].fillna("").astype(str).ne("").any()
    if not presplit:
        check_counts(frame, 3, "the data")
        parts = three_way(frame, val, test, seed)
    else:
        parts = {s: frame[frame["split"] == s] for s in SPLITS}
        if parts["test"].empty:
            check_counts(parts["train"], 2, "train/")
            parts["train"], parts["test"] = stratified(parts["train"], test / (train + test), seed)
            log.info("no test/ folder: carved %d test images from train/", len(parts["test"]))
    order = ["label", "path"]
    return assemble({n: p.sort_values(order, kind="stable") for n, p in parts.items()})
