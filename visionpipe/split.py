"""Train/val/test splits: pure functions of (samples, ratios, seed).

Same samples and params give byte-identical split files, so DVC's hashes do not change and
nothing downstream reruns. ``split_manifest`` stratifies classification labels;
``split_regression`` keeps groups (e.g. one plant photographed many times) within one split.
"""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

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


def _stratified(
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


def _three_way(
    frame: pd.DataFrame, val: float, test: float, seed: int, strata: str | None = "label"
) -> dict[str, pd.DataFrame]:
    """Hold out val + test, then divide the held-out rows by ``test / (val + test)``."""
    rest, held = _stratified(frame, val + test, seed, strata)
    val_part, test_part = _stratified(held, test / (val + test), seed, strata)
    return {"train": rest, "val": val_part, "test": test_part}


def _assemble(parts: dict[str, pd.DataFrame], group: str | None = None) -> pd.DataFrame:
    """Concatenate the splits (each already in its final row order) with a ``split`` column."""
    out = []
    for name in SPLITS:
        part = parts[name].assign(split=name)
        groups = f" in {part[group].nunique()} group(s)" if group else ""
        log.info("%s: %d rows%s", name, len(part), groups)
        out.append(part)
    return pd.concat(out, ignore_index=True)


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
        parts = _three_way(frame, val, test, seed)
    else:
        parts = {s: frame[frame["split"] == s] for s in SPLITS}
        if parts["test"].empty:
            _check_counts(parts["train"], 2, "train/")
            parts["train"], parts["test"] = _stratified(parts["train"], test / (train + test), seed)
            log.info("no test/ folder: carved %d test images from train/", len(parts["test"]))
    order = ["label", "path"]
    return _assemble({n: p.sort_values(order, kind="stable") for n, p in parts.items()})


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
        return _three_way(frame, val, test, seed, strata=None)
    target = pd.to_numeric(frame["target"], errors="coerce") if "target" in frame else None
    if target is None or target.isna().any():
        raise DataError("split: stratify_bins needs a numeric 'target' on every row")
    for n in range(bins, 1, -1):  # quantile bins too small to stratify: try fewer
        binned = frame.assign(_bin=pd.qcut(target, n, labels=False, duplicates="drop"))
        try:
            parts = _three_way(binned, val, test, seed, strata="_bin")
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
    return _assemble(
        {n: p.sort_index() for n, p in parts.items()}, group_column if grouped else None
    )
