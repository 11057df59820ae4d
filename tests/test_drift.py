"""The conveyor's drift monitor: quiet on frames like the reference, flagged on foreign ones
(issue #17, point 5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import write_image
from visionpipe.deploy.drift import DriftMonitor, Reference, image_features, spread_sample
from visionpipe.deploy.simulate import main as simulate_main


def frames_like(rng: np.random.Generator, n: int, mean: float, colour: bool = False):
    """``n`` model inputs (1 x 3 x 16 x 16): gray cells around ``mean``, or coloured ones."""
    out = []
    for _ in range(n):
        level = rng.normal(mean, 15)
        gray = np.clip(rng.normal(level, 20, (16, 16)), 0, 255)
        image = np.stack([gray] * 3)
        if colour:
            image = np.clip(image * np.array([1.6, 0.6, 0.2])[:, None, None], 0, 255)
        out.append(image[None])
    return out


def test_the_monitor_is_quiet_on_like_frames_and_flags_foreign_ones():
    rng = np.random.default_rng(0)
    reference = Reference.from_frames(map(image_features, frames_like(rng, 100, 110)), [0] * 100)
    assert reference.images == 100 and reference.spread.min() >= 1.0
    quiet = DriftMonitor(reference, window=20)
    rows = [quiet.update(i, x, False) for i, x in enumerate(frames_like(rng, 60, 110))]
    assert rows[0]["image_distance"] is None and not any(r["drift"] for r in rows)
    assert quiet.summary()["flagged_frames"] == 0 and quiet.worst_distance < 0.7

    loud = DriftMonitor(reference, window=20)
    like, foreign = frames_like(rng, 30, 110), frames_like(rng, 40, 110, colour=True)
    rows = [loud.update(i, x, False) for i, x in enumerate(like + foreign)]
    assert not any(r["drift"] for r in rows[:30])
    assert all(r["drift"] for r in rows[45:])  # once the window is mostly foreign
    summary = loud.summary()
    assert 30 <= summary["first_flagged_frame"] < 45 and summary["max_image_distance"] > 1

    # the confidence side alone: same pictures, but far more low-confidence frames
    shy = DriftMonitor(reference, window=20, low_share_tolerance=0.25)
    rows = [shy.update(i, x, i >= 20) for i, x in enumerate(frames_like(rng, 60, 110))]
    assert not rows[19]["drift"] and rows[-1]["drift"] and rows[-1]["low_share"] == 1.0


def test_a_window_under_ten_frames_still_compares_once_full():
    rng = np.random.default_rng(2)
    reference = Reference.from_frames(map(image_features, frames_like(rng, 50, 110)), [0] * 50)
    small = DriftMonitor(reference, window=4)
    rows = [small.update(i, x, False) for i, x in enumerate(frames_like(rng, 8, 110, True))]
    assert rows[2]["image_distance"] is None and rows[3]["drift"] and small.flagged == 5
    never = DriftMonitor(reference, window=20)
    never.update(0, frames_like(rng, 1, 110)[0], False)
    assert never.summary()["max_image_distance"] is None  # never enough frames to compare


def test_spread_sample_takes_every_part_of_a_sorted_manifest():
    items = list(range(100))
    assert spread_sample(items, 5) == [0, 25, 50, 74, 99]
    assert spread_sample(items[:3], 5) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least two images"):
        Reference.from_frames([image_features(np.zeros((3, 4, 4)))], [False])


def test_simulate_flags_foreign_frames_and_stays_quiet_on_like_ones(exported, tmp_path):
    """The command with --reference: train-like frames pass, coloured foreign ones are
    flagged in the log and the summary."""
    rng = np.random.default_rng(0)
    for i in range(30):
        write_image(tmp_path / "train" / f"t{i:02d}.png", value=90 + i, size=(32, 32))
        # the same range of cells in another order, as a belt brings them
        write_image(tmp_path / "test" / f"s{i:02d}.png", value=90 + (7 * i) % 30, size=(32, 32))
        red = np.clip(rng.normal([200, 60, 30], 25, (32, 32, 3)), 0, 255).astype(np.uint8)
        (tmp_path / "foreign").mkdir(exist_ok=True)
        Image.fromarray(red).save(tmp_path / "foreign" / f"f{i:02d}.png")
    summaries = {}
    for frames in ("test", "foreign"):
        rc = simulate_main(
            [
                str(exported / "model.onnx"),
                str(tmp_path / frames),
                "--reference",
                str(tmp_path / "train"),
                "--interval-ms",
                "1",
                "--drift-window",
                "10",
                "--csv",
                str(tmp_path / f"{frames}.csv"),
                "--summary",
                str(tmp_path / f"{frames}.json"),
            ]
        )
        assert rc == 0
        summaries[frames] = json.loads((tmp_path / f"{frames}.json").read_text())["drift"]
    assert summaries["test"]["flagged_frames"] == 0
    assert summaries["foreign"]["flagged_frames"] >= 20
    assert summaries["foreign"]["reference"]["images"] == 30
    log = pd.read_csv(tmp_path / "foreign.csv")
    assert log["drift"].sum() == summaries["foreign"]["flagged_frames"]
    assert log["image_distance"].iloc[:9].isna().all()  # under min_frames: no figure yet

    # a log of another version (other columns) is not appended to
    old = tmp_path / "old.csv"
    old.write_text("frame,path,time_s,class\n0,a.png,0.0,x\n")
    args = [str(exported / "model.onnx"), str(tmp_path / "test"), "--interval-ms", "1"]
    rc = simulate_main([*args, "--csv", str(old), "--summary", str(tmp_path / "o.json")])
    assert rc == 2 and old.read_text().count("\n") == 2
