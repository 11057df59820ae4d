"""Pieces of the tasks' train/val/test splits: stratified hold-outs and the assembled frame.

Every split is a pure function of (samples, ratios, seed): same samples and params give
byte-identical split files, so DVC's hashes do not change and nothing downstream reruns.
"""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import train_test_split

from visionpipe.core.errors import DataError
from visionpipe.core.manifests import SPLITS

log = logging.getLogger(__name__)


def check_counts(frame: pd.DataFrame, minimum: int, what: str) -> None:
    counts = frame.groupby("label").size()
    small = counts[counts < minimum]
    if len(small):
        label, n = small.index[0], int(small.iloc[0])
        raise DataError(
            f"class {label!r}: only {n} image(s) in {what}; a stratified split needs at least "
            f"{minimum} per class"
        )


def stratified(
    frame: pd.DataFrame, holdout: float, seed: int, strata: str | None = "label"
) -> tuple[pd.DataFrame, ...]:
    """Hold out a ``holdout`` share of rows, stratified by column ``strata`` (None: random)."""
    stratify = None if strata is None else frame[strata]
    try:
        keep, held = train_test_split(
            frame, test_size=holdout, stratify=stratify, random_state=seed
        )
    except ValueError as exc:  # sklearn explains which class/size is the problem
        verb = "split" if strata is None else "stratify"
        raise DataError(f"split: cannot {verb} {len(frame)} images: {exc}") from exc
    return keep, held


def three_way(
    frame: pd.DataFrame, val: float, test: float, seed: int, strata: str | None = "label"
) -> dict[str, pd.DataFrame]:
    """Hold out val + test, then divide the held-out rows by ``test / (val + test)``."""
    rest, held = stratified(frame, val + test, seed, strata)
    val_part, test_part = stratified(held, test / (val + test), seed, strata)
    return {"train": rest, "val": val_part, "test": test_part}


def assemble(parts: dict[str, pd.DataFrame], group: str | None = None) -> pd.DataFrame:
    """Concatenate the splits (each already in its final row order) with a ``split`` column."""
    out = []
    for name in SPLITS:
        part = parts[name].assign(split=name)
        groups = f" in {part[group].nunique()} group(s)" if group else ""
        log.info("%s: %d rows%s", name, len(part), groups)
        out.append(part)
    return pd.concat(out, ignore_index=True)
