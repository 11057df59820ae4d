"""Train/val/test split of detection images: a pure function of (manifest, ratios, seed).

Images (not boxes) are split, so every box of an image lands in one split. The stratum of an
image is the set of parts it shows (the manifest's ``parts`` column, "" for negatives), so each
split sees every kind of image in about the same share. Strata too small to reach val and test
are merged into one ``rare`` stratum; when even that cannot be stratified the split falls back
to a plain seeded random one (with a warning). Split sizes are rounded counts, at least one
image each, so every split is non-empty from three images up.

A pre-split export (YOLO's train/val/test folders, Roboflow's per-split COCO files) keeps its
splits, as class folders do: a split it lacks (test, or val) is carved from its train images
by the same stratified holdout, so model selection and the test score never share an image.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
from sklearn.model_selection import train_test_split

from visionpipe.core.errors import DataError

log = logging.getLogger(__name__)

RARE = "rare"  # the merged stratum of parts combinations too small to stratify
STRATUM = "_stratum"  # working column: the strata of the first holdout, refined by the second


def _strata(parts: pd.Series, min_count: int) -> pd.Series:
    """``parts`` with combinations under ``min_count`` images merged into ``RARE``; a lone
    ``RARE`` image joins the largest stratum (sklearn needs two per stratum)."""
    strata = parts.fillna("").astype(str)
    counts = strata.value_counts()
    strata = strata.where(strata.map(counts) >= min_count, RARE)
    counts = strata.value_counts()
    if counts.get(RARE, 0) == 1 and len(counts) > 1:
        largest = counts.drop(RARE).sort_index().idxmax()
        strata = strata.replace(RARE, largest)
    return strata


def _holdout(
    frame: pd.DataFrame, size: int, seed: int, min_count: int, step: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``size`` rows, stratified by parts when the strata allow, else at random."""
    try:
        return train_test_split(
            frame,
            test_size=size,
            stratify=_strata(frame[STRATUM], min_count),
            random_state=seed,
        )
    except ValueError as exc:  # too few images per stratum for these sizes
        log.warning(
            "split (%s): cannot stratify %d images by parts (%s); splitting at random",
            step,
            len(frame),
            exc,
        )
        return train_test_split(frame, test_size=size, random_state=seed)


def _sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """Rounded val and test counts, at least one each, leaving at least one for train."""
    n_val, n_test = max(1, round(val * n)), max(1, round(test * n))
    while n - n_val - n_test < 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _carve(frame: pd.DataFrame, given: pd.Series, share: float, name: str, seed: int) -> None:
    """Move a ``share`` of the train images of ``given`` (the export's splits) into ``name``."""
    train = frame[given == "train"]
    if len(train) < 2:
        raise DataError(
            f"split: the export has no {name} split and only {len(train)} train image(s) to "
            f"carve one from"
        )
    size = min(len(train) - 1, max(1, round(share * len(train))))
    strata = train.assign(**{STRATUM: _strata(train["parts"], 2)})
    _, held = _holdout(strata, size, seed, 2, f"train | {name}")
    given[held.index] = name
    log.info("no %s split in the export: carved %d images from train", name, len(held))


def _presplit(frame: pd.DataFrame, train: float, val: float, test: float, seed: int) -> pd.Series:
    given = frame["split"].fillna("").astype(str).copy()
    if unknown := sorted(set(given) - {"train", "val", "test"}):
        raise DataError(f"split: the manifest names an unknown split {unknown[0]!r}")
    if "train" not in set(given):
        raise DataError("split: the export's train split has no usable image (see the data report)")
    if "test" not in set(given):
        _carve(frame, given, test / (train + test), "test", seed)
    if "val" not in set(given):
        _carve(frame, given, val / (train + val), "val", seed)
    return given


def split_images(
    manifest: pd.DataFrame, train: float, val: float, test: float, seed: int
) -> pd.DataFrame:
    """Return ``manifest`` (sorted by image id) with a ``split`` column of train/val/test.

    ``train`` is implied by the other two (params checks that the three sum to 1); it is kept
    in the signature so callers pass the ratios as configured. A manifest whose ``split``
    column names splits (a pre-split export) keeps them; see the module docstring.
    """
    n = len(manifest)
    if n < 3:
        raise DataError(
            f"split: only {n} usable image(s); a detection split needs at least 3 "
            "(one each for train, val and test)"
        )
    order = "image_id" if "image_id" in manifest else "path"
    frame = manifest.sort_values(order, kind="stable").reset_index(drop=True)
    given = set(frame["split"].fillna("").astype(str)) if "split" in frame else set()
    if given - {"", "train"}:  # pre-split (a train split alone is split like flat data)
        return frame.assign(split=_presplit(frame, train, val, test, seed))
    n_val, n_test = _sizes(n, val, test)
    min_count = max(2, math.ceil(1 / max(min(val, test), 1e-9)))
    strata = frame.assign(**{STRATUM: _strata(frame["parts"], min_count)})
    _, held = _holdout(strata, n_val + n_test, seed, min_count, "train | val + test")
    val_part, test_part = _holdout(held, n_test, seed, 2, "val | test")
    split = pd.Series("train", index=frame.index)
    split[val_part.index] = "val"
    split[test_part.index] = "test"
    return frame.assign(split=split)
