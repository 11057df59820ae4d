"""Stratified train/val/test split: a pure function of (manifest, ratios, seed).

Same manifest and params give byte-identical split files, so DVC's hashes do not change and
nothing downstream reruns.
"""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import train_test_split

from visionpipe.errors import DataError
from visionpipe.manifests import SPLITS

log = logging.getLogger(__name__)


def _check_counts(frame: pd.DataFrame, minimum: int, what: str) -> None:
    counts = frame.groupby("label").size()
    small = counts[counts < minimum]
    if len(small):
        label, n = small.index[0], int(small.iloc[0])
        raise DataError(
            f"class {label!r}: only {n} image(s) in {what}; a stratified split needs at least "
            f"{minimum} per class"
        )


def _stratified(frame: pd.DataFrame, holdout: float, seed: int) -> tuple[pd.DataFrame, ...]:
    try:
        keep, held = train_test_split(
            frame, test_size=holdout, stratify=frame["label"], random_state=seed
        )
    except ValueError as exc:  # sklearn explains which class/size is the problem
        raise DataError(f"split: cannot stratify {len(frame)} images: {exc}") from exc
    return keep, held


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
        _check_counts(frame, 3, "the data")
        rest, held = _stratified(frame, val + test, seed)
        val_part, test_part = _stratified(held, test / (val + test), seed)
        parts = {"train": rest, "val": val_part, "test": test_part}
    else:
        parts = {s: frame[frame["split"] == s] for s in SPLITS}
        if parts["test"].empty:
            _check_counts(parts["train"], 2, "train/")
            parts["train"], parts["test"] = _stratified(parts["train"], test / (train + test), seed)
            log.info("no test/ folder: carved %d test images from train/", len(parts["test"]))
    out = []
    for name in SPLITS:
        part = parts[name].sort_values(["label", "path"], kind="stable").copy()
        part["split"] = name
        out.append(part)
    return pd.concat(out, ignore_index=True)
