"""Leaks between splits: the same, or nearly the same, image in train and in test.

A photo saved twice, a burst of frames or a crop of another image inflates the test score when
the copies land in different splits, and nothing in the scores shows it. Each image gets a
64-bit perceptual hash (the ``imagehash`` package's pHash: the signs of the low frequencies of
the image's DCT, robust to resizing, recompression and small edits); two images whose hashes
differ in at most ``max_distance`` bits are duplicates (0: the same picture up to such edits).
Duplicates are joined into groups (with union-find, so a chain of near copies is one group),
and a group with members in more than one split is a leak.

With ``split.dedupe``, each leaking group is moved whole into the split holding most of its
members (ties: train, then val), which moves the fewest images. When the task keeps groups
together (``data.group_column``), that group moves with it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from visionpipe.core.errors import DataError
from visionpipe.core.images import open_rgb
from visionpipe.core.manifests import SPLITS

log = logging.getLogger(__name__)

MAX_LISTED = 200  # leaking groups listed in the report; the counts are always complete
_CELLS = 16_000_000  # pairwise distances computed at once (128 MB of uint64): rows per chunk


def perceptual_hash(path: Path) -> int:
    """The 64-bit pHash of the image as every reader decodes it (orientation applied, RGB)."""
    import imagehash

    bits = imagehash.phash(open_rgb(path)).hash.flatten()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def perceptual_hashes(root: Path, paths: Sequence[str], workers: int = 4) -> np.ndarray:
    """pHashes of ``root / path`` for every path, as uint64, in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(lambda p: perceptual_hash(Path(root) / p), paths)
        hashes = list(tqdm(found, total=len(paths), desc="hashing images", unit="img"))
    return np.asarray(hashes, dtype=np.uint64)


class _Groups:
    """Union-find over row indices."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicate_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """Every pair (i < j) whose hashes differ in at most ``max_distance`` bits, with the
    distance; the pairwise comparison runs in chunks of rows (N^2 / 2 popcounts)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    rows_at_once = max(1, _CELLS // max(len(hashes), 1))
    pairs = []
    for start in range(0, len(hashes), rows_at_once):
        block = hashes[start : start + rows_at_once, None] ^ hashes[None, :]
        distance = np.bitwise_count(block)
        rows, cols = np.nonzero(distance <= max_distance)
        for i, j in zip(rows + start, cols, strict=True):
            if i < j:
                pairs.append((int(i), int(j), int(distance[i - start, j])))
    return pairs


def leaks(
    frame: pd.DataFrame, hashes: np.ndarray, max_distance: int, group: str | None = None
) -> tuple[pd.Series, list[dict[str, Any]]]:
    """(a group label per row, -1 for rows with no duplicate; the leaking groups: their rows'
    paths and splits). ``group`` names a column whose values also tie rows together."""
    pairs = duplicate_pairs(hashes, max_distance)
    groups = _Groups(len(frame))
    for i, j, _ in pairs:
        groups.join(i, j)
    duplicated = {i for pair in pairs for i in pair[:2]}
    if group:
        first: dict[Any, int] = {}
        for i, value in enumerate(frame[group].tolist()):
            if not pd.isna(value) and value != "":
                groups.join(i, first.setdefault(value, i))
    roots = [groups.find(i) for i in range(len(frame))]
    members: dict[int, list[int]] = {}
    for i, root in enumerate(roots):
        members.setdefault(root, []).append(i)
    with_copies = {roots[i] for i in duplicated}
    label = pd.Series(-1, index=frame.index)
    leaking = []
    splits = frame["split"].tolist()
    paths = frame["path"].tolist()
    for number, root in enumerate(sorted(with_copies)):
        rows = members[root]
        label.iloc[rows] = number
        if len({splits[i] for i in rows}) > 1:
            leaking.append(
                {"group": number, "rows": rows, "members": [[paths[i], splits[i]] for i in rows]}
            )
    label.attrs["duplicated"] = len(duplicated)  # rows with a copy (not their group mates)
    return label, leaking


def dedupe(frame: pd.DataFrame, leaking: list[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """``frame`` with every leaking group moved into one split (see the module docstring),
    and how many rows moved."""
    split = frame["split"].copy()
    moved = 0
    for item in leaking:
        rows = item["rows"]
        current = split.iloc[rows].tolist()
        counts = Counter(current)
        # the split holding most of the group; ties go to train, then val, never to test
        target = max(SPLITS, key=lambda s: (counts[s], -SPLITS.index(s)))
        moved += sum(s != target for s in current)
        split.iloc[rows] = target
    return frame.assign(split=split), moved


def report(
    frame: pd.DataFrame,
    label: pd.Series,
    leaking: list[dict[str, Any]],
    max_distance: int,
    moved: int | None,
) -> dict[str, Any]:
    """The counts of the duplicate search and the first ``MAX_LISTED`` leaking groups."""
    in_groups = label[label >= 0]
    joined = Counter(
        tuple(sorted({s for _, s in item["members"]}, key=SPLITS.index)) for item in leaking
    )
    return {
        "method": "pHash (imagehash, 64 bits)",
        "max_distance": max_distance,
        "images": int(len(frame)),
        "images_with_a_duplicate": int(label.attrs.get("duplicated", len(in_groups))),
        "groups": int(in_groups.nunique()),
        # as the split made them; with dedupe, every one of them is then in one split
        "groups_across_splits": len(leaking),
        "images_in_groups_across_splits": sum(len(item["rows"]) for item in leaking),
        "splits_joined": {"+".join(k): v for k, v in sorted(joined.items())},
        "dedupe": moved is not None,
        "moved": moved or 0,
        "groups_across_splits_after": 0 if moved is not None else len(leaking),
        "leaking_groups": [item["members"] for item in leaking[:MAX_LISTED]],
        "leaking_groups_not_listed": max(0, len(leaking) - MAX_LISTED),
    }


def check_splits(
    frame: pd.DataFrame, root: Path, max_distance: int, dedupe_splits: bool
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The split stage's search (``split.duplicate_distance`` < 0: none): the frame (moved
    with ``split.dedupe``) and the report for results/split/duplicates.json."""
    if max_distance < 0:
        return frame, {"method": "none (split.duplicate_distance: -1)"}
    group = "group" if "group" in frame and frame["group"].astype(str).ne("").any() else None
    hashes = perceptual_hashes(root, frame["path"].tolist())
    label, leaking = leaks(frame, hashes, max_distance, group)
    moved = None
    if dedupe_splits:
        frame, moved = dedupe(frame, leaking)
        if empty := [name for name in SPLITS if not (frame["split"] == name).any()]:
            raise DataError(
                f"split.dedupe: keeping the duplicate groups together leaves the {empty[0]} "
                "split empty; lower split.duplicate_distance or turn split.dedupe off"
            )
    found = report(frame, label, leaking, max_distance, moved)
    if leaking:
        log.warning(
            "%d group(s) of duplicate images (%d images) span more than one split%s",
            len(leaking),
            found["images_in_groups_across_splits"],
            f"; {moved} image(s) moved (split.dedupe)"
            if dedupe_splits
            else " (split.dedupe: true keeps each group in one split)",
        )
    return frame, found
