"""Near-duplicate images across the splits: found by perceptual hash, reported, and with
split.dedupe kept in one split (issue #17, point 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionpipe.core.duplicates import check_splits, duplicate_pairs, perceptual_hashes
from visionpipe.core.errors import DataError


def textured(path: Path, seed: int) -> Path:
    """A 64 x 64 picture with its own large-scale structure (so each has its own pHash)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def copy_edited(src: Path, dst: Path) -> Path:
    """The same picture as another file: resized, brightened a little, saved as JPEG."""
    with Image.open(src) as img:
        edited = img.resize((80, 80)).point(lambda v: min(255, v + 6))
    dst.parent.mkdir(parents=True, exist_ok=True)
    edited.save(dst, quality=85)
    return dst


def planted(root: Path) -> pd.DataFrame:
    """30 distinct images split 20/5/5, and 3 of the train images copied (edited) into val
    and test: the leaks to find."""
    rows = []
    for i in range(30):
        split = "train" if i < 20 else "val" if i < 25 else "test"
        rows.append((f"img{i:02d}.png", split))
        textured(root / f"img{i:02d}.png", seed=i)
    for i, split in ((0, "test"), (1, "test"), (2, "val")):
        copy_edited(root / f"img{i:02d}.png", root / f"copy{i:02d}.jpg")
        rows.append((f"copy{i:02d}.jpg", split))
    return pd.DataFrame(rows, columns=["path", "split"])


def test_planted_copies_across_splits_are_found(tmp_path):
    frame = planted(tmp_path)
    hashes = perceptual_hashes(tmp_path, frame["path"].tolist())
    pairs = {(frame["path"][i], frame["path"][j]) for i, j, _ in duplicate_pairs(hashes, 0)}
    assert pairs == {(f"img{i:02d}.png", f"copy{i:02d}.jpg") for i in range(3)}

    same, found = check_splits(frame, tmp_path, 0, dedupe_splits=False)
    assert same["split"].tolist() == frame["split"].tolist()  # reported, not moved
    assert found["groups_across_splits"] == 3 and found["images_in_groups_across_splits"] == 6
    assert found["splits_joined"] == {"train+test": 2, "train+val": 1}
    assert sorted(map(sorted, found["leaking_groups"]))[0] == [
        ["copy00.jpg", "test"],
        ["img00.png", "train"],
    ]


def test_dedupe_keeps_each_group_in_one_split_ties_going_to_train(tmp_path):
    frame = planted(tmp_path)
    moved, found = check_splits(frame, tmp_path, 0, dedupe_splits=True)
    assert found["dedupe"] and found["moved"] == 3
    by_path = dict(zip(moved["path"], moved["split"], strict=True))
    for i in range(3):  # one train member and one other: the tie goes to train
        assert by_path[f"img{i:02d}.png"] == by_path[f"copy{i:02d}.jpg"] == "train"
    untouched = moved[~moved["path"].str.startswith("copy")]
    assert untouched["split"].tolist() == frame["split"][: len(untouched)].tolist()


def test_dedupe_that_would_empty_a_split_is_one_line(tmp_path):
    frame = planted(tmp_path)
    splits = {"img00.png": "train", "img01.png": "train", "img02.png": "test", "copy00.jpg": "val"}
    frame = frame[frame["path"].isin(list(splits))]
    frame = frame.assign(split=frame["path"].map(splits))  # val holds only a copy
    with pytest.raises(DataError, match=r"split.dedupe: .* leaves the val split empty"):
        check_splits(frame.reset_index(drop=True), tmp_path, 0, dedupe_splits=True)


def test_a_group_moves_with_its_duplicates_and_the_search_can_be_off(tmp_path):
    """Regression keeps a group (a plant) in one split: moving a duplicate moves its group."""
    frame = planted(tmp_path)
    frame["group"] = ""
    frame.loc[frame["path"].isin(["copy00.jpg", "img20.png"]), "group"] = "plant7"
    frame.loc[frame["path"] == "img20.png", "split"] = "test"
    moved, found = check_splits(frame, tmp_path, 0, dedupe_splits=True)
    by_path = dict(zip(moved["path"], moved["split"], strict=True))
    # two of the three in test: the group joins them there, one image moved
    assert by_path["img00.png"] == by_path["copy00.jpg"] == by_path["img20.png"] == "test"
    assert found["images_with_a_duplicate"] == 6  # img20 is in the group, but no copy
    assert found["groups_across_splits_after"] == 0 and found["moved"] == 3

    off, report = check_splits(frame, tmp_path, -1, dedupe_splits=True)
    assert off is frame and report == {"method": "none (split.duplicate_distance: -1)"}
