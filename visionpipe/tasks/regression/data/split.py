"""The regression split: whole groups (e.g. one plant photographed many times) kept in one split,
or rows at random, stratified by target quantile bins."""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from visionpipe.core.errors import DataError
from visionpipe.core.split import assemble, three_way

log = logging.getLogger(__name__)


def _text(column: pd.Series) -> pd.Series:
    return column.fillna("").astype(str)


def _group_holdout(
    frame: pd.DataFrame, groups: pd.Series, holdout: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    splitter = GroupShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
    keep, held = next(splitter.split(frame, groups=groups.loc[frame.index]))
    return frame.iloc[keep], frame.iloc[held]


def _by_group(
    frame: pd.DataFrame,
    column: str,
    train: float,
    val: float,
    test: float,
    seed: int,
    name: str,
) -> dict[str, pd.DataFrame]:
    groups = _text(frame[column])  # messages name the column as the user knows it: ``name``
    if missing := int(groups.eq("").sum()):
        raise DataError(
            f"split: {missing} of {len(frame)} rows have no {name!r}; give every row a group"
        )
    if (n := groups.nunique()) < 3:
        raise DataError(
            f"split: only {n} group(s) in column {name!r}; a grouped split needs at least 3"
        )
    try:
        rest, held = _group_holdout(frame, groups, val + test, seed)
        val_part, test_part = _group_holdout(held, groups, test / (val + test), seed)
    except ValueError as exc:  # sklearn refuses to leave one side without a group
        raise DataError(
            f"split: {n} groups in column {name!r} are too few for ratios "
            f"{train:g}/{val:g}/{test:g}: a split would be empty; add groups or change the ratios"
        ) from exc
    return {"train": rest, "val": val_part, "test": test_part}


def _by_rows(
    frame: pd.DataFrame, val: float, test: float, seed: int, bins: int
) -> dict[str, pd.DataFrame]:
    if bins <= 1:
        return three_way(frame, val, test, seed, strata=None)
    target = pd.to_numeric(frame["target"], errors="coerce") if "target" in frame else None
    if target is None or target.isna().any():
        raise DataError("split: stratify_bins needs a numeric 'target' on every row")
    for n in range(bins, 1, -1):  # quantile bins too small to stratify: try fewer
        binned = frame.assign(_bin=pd.qcut(target, n, labels=False, duplicates="drop"))
        try:
            parts = three_way(binned, val, test, seed, strata="_bin")
        except DataError as exc:
            error = exc
            continue
        if n < bins:
            log.warning("split: %d target bins are too small to stratify; used %d", bins, n)
        return {name: part.drop(columns="_bin") for name, part in parts.items()}
    raise DataError(f"{error}; even 2 target bins are too small, set stratify_bins to 0")


def split_regression(
    samples: pd.DataFrame,
    train: float,
    val: float,
    test: float,
    seed: int,
    group_column: str = "group",
    stratify_bins: int = 0,
    group_name: str = "",
) -> pd.DataFrame:
    """Return ``samples`` with a ``split`` column of train/val/test (any old one is replaced).

    When ``group_column`` has values, whole groups are split (scikit-learn's
    ``GroupShuffleSplit``): no group is in two splits and the ratios apply to the number of
    groups, not rows. Every row then needs a group, there must be at least 3 groups, and a
    ratio that would leave a split without a group raises ``DataError``.

    Otherwise rows are split at random; with ``stratify_bins > 1`` stratified by quantile bins
    of the numeric ``target`` column. Bins too small to stratify fall back to fewer bins (down
    to 2, logged as a warning); when even 2 fail, ``DataError``.

    Rows are sorted first, so the result does not depend on the input row order. Errors name
    the group column ``group_name`` (the user's name for it) when given.
    """
    grouped = group_column in samples and _text(samples[group_column]).ne("").any()
    order = [group_column, "path"] if grouped else ["path"]
    frame = samples.sort_values(order, kind="stable", key=_text).reset_index(drop=True)
    if grouped:
        parts = _by_group(frame, group_column, train, val, test, seed, group_name or group_column)
    else:
        parts = _by_rows(frame, val, test, seed, stratify_bins)
    return assemble(
        {n: p.sort_index() for n, p in parts.items()}, group_column if grouped else None
    )
