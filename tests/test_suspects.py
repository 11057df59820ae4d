"""Suspect labels: planted label errors are found, on features and through the real stage code."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.test_params import with_change
from visionpipe.core import suspects
from visionpipe.core.errors import UserError
from visionpipe.core.params import params_from_dict
from visionpipe.tasks.detection.suspects import crop


def _items(labels, kind="class") -> suspects.LabelledItems:
    n = len(labels)
    table = pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(n)],
            "split": "train",
            "item": "image",
            "label": labels,
        }
    )
    return suspects.LabelledItems(
        table, torch.zeros((n, 3, 8, 8), dtype=torch.uint8), kind, "grade"
    )


def _clusters(per_class: int = 80, classes: int = 3, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(0, 1, (len(labels), dim))
    return features, labels, rng


def test_planted_label_flips_are_ranked_first():
    features, labels, rng = _clusters()
    flipped = rng.choice(len(labels), size=len(labels) // 20, replace=False)  # 5%
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    names = np.array(["a", "b", "c"])
    ranked, summary = suspects.rank_suspects(_items(names[noisy]), features, folds=5, seed=0)
    top = set(ranked["position"].head(len(flipped)))
    assert len(top & set(flipped)) >= len(flipped) / 2  # at least half in the top-ranked
    found = set(ranked["position"]) & set(flipped)
    assert len(found) >= len(flipped) / 2
    # suggested: the class the flip came from
    by_position = ranked.set_index("position")
    for i in found:
        assert by_position.loc[i, "suggested"] == names[labels[i]]
        assert by_position.loc[i, "given"] == names[noisy[i]]
    assert summary["label_issues"] == len(ranked) and summary["items"] == len(labels)
    assert summary["out_of_sample_accuracy"] > 0.8
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert ranked["score"].is_monotonic_increasing


def test_clean_labels_raise_few_suspects():
    features, labels, _ = _clusters(seed=1)
    ranked, summary = suspects.rank_suspects(
        _items(np.array(["a", "b", "c"])[labels]), features, 5, 0
    )
    assert summary["label_issue_share"] < 0.05


def test_planted_regression_errors_are_found():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (200, 8))
    values = features @ rng.normal(0, 1, 8) + rng.normal(0, 0.1, 200)
    planted = rng.choice(200, size=10, replace=False)
    noisy = values.copy()
    noisy[planted] += rng.choice([-1, 1], 10) * 6 * values.std()
    ranked, summary = suspects.rank_suspects(_items(noisy, kind="value"), features, 5, 0)
    top = set(ranked["position"].head(10))
    assert len(top & set(planted)) >= 5
    assert summary["out_of_sample_rmse"] > 0 and "out_of_sample_accuracy" not in summary


def test_one_class_or_no_items_is_one_line():
    with pytest.raises(suspects.TooFewLabels, match="fewer than two grade values"):
        suspects.rank_suspects(_items(["a"] * 10), np.zeros((10, 3)), 5, 0)
    with pytest.raises(suspects.TooFewLabels, match="no labelled items"):
        suspects.rank_suspects(_items([]), np.zeros((0, 3)), 5, 0)
    with pytest.raises(suspects.TooFewLabels, match="fewer than twice suspects.folds"):
        suspects.rank_suspects(_items(list(np.arange(6.0)), kind="value"), np.zeros((6, 3)), 5, 0)
    assert issubclass(suspects.TooFewLabels, UserError)


def test_a_class_with_fewer_items_than_folds_is_left_unranked():
    features, labels, _ = _clusters(per_class=30, seed=2)
    names = np.array(["a", "b", "c"])[labels].tolist() + ["rare", "rare"]
    features = np.vstack([features, features[:2]])
    ranked, summary = suspects.rank_suspects(_items(names), features, 5, 0)
    assert summary["unscored"] == {"fewer_items_than_folds": {"rare": 2}}
    assert summary["ranked"] == 90 and summary["items"] == 92
    assert "rare" not in set(ranked["given"]) | set(ranked["suggested"])
    assert (ranked["position"] < 90).all()


def _colour_dataset(root, per_class: int = 12):
    """Three classes that differ by colour, as class folders and split manifests."""
    rng = np.random.default_rng(0)
    rows = []
    for c, name in enumerate(["red", "green", "blue"]):
        for j in range(per_class):
            pixels = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
            pixels[..., c] += 180
            path = f"{name}/{name}_{j}.png"
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / path)
            rows.append({"path": path, "label": name})
    return pd.DataFrame(rows)


def test_the_stage_finds_planted_flips_in_real_images(tmp_path):
    """Frozen Lite0 features of real files, through the classification stage's code: the
    two relabelled images come first, and the files are written."""
    from visionpipe.tasks.classification.suspects import suspects as stage

    data = tmp_path / "data"
    frame = _colour_dataset(data)
    planted = {"red/red_3.png": "blue", "green/green_5.png": "red"}
    frame["label"] = [
        planted.get(p, label) for p, label in zip(frame["path"], frame["label"], strict=True)
    ]
    splits = tmp_path / "splits"
    splits.mkdir()
    order = np.random.default_rng(1).permutation(len(frame))
    for name, part in zip(("train", "val", "test"), np.array_split(order, [24, 30]), strict=True):
        frame.iloc[part].to_csv(splits / f"{name}.csv", index=False)
    raw = with_change("data.path", str(data))
    raw["data"]["table"] = ""
    raw["suspects"].update(image_size=64, folds=3, top=4)
    args = argparse.Namespace(
        splits=str(splits), out=str(tmp_path / "out"), figures=str(tmp_path / "fig")
    )
    stage(params_from_dict(raw), args)
    table = pd.read_csv(tmp_path / "out/suspects.csv")
    assert set(table["path"].head(2)) == set(planted)
    assert dict(zip(table["path"], table["suggested"], strict=True))["red/red_3.png"] == "red"
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary == {"label_issues": len(table), "label_issue_share": round(len(table) / 36, 4)}
    details = json.loads((tmp_path / "out/details.json").read_text())
    assert (
        details["features"]["arch"] == "efficientnet_lite0"
        and "lite0" in details["features"]["weights"]
    )
    assert details["label"] == "class" and details["items"] == 36
    assert (tmp_path / "fig/top_suspects.png").stat().st_size > 0


def test_off_writes_empty_outputs(tmp_path):
    suspects.off(tmp_path / "out", tmp_path / "fig", "suspects.enabled: false")
    assert list(pd.read_csv(tmp_path / "out/suspects.csv").columns) == suspects.COLUMNS
    assert json.loads((tmp_path / "out/details.json").read_text())["enabled"] is False
    assert (tmp_path / "fig").is_dir()


def test_box_crop_keeps_a_margin_and_stays_inside():
    image = Image.new("RGB", (100, 50), (0, 0, 0))
    image.paste((255, 255, 255), (40, 10, 60, 30))  # the "part"
    out = crop(image, [40, 10, 20, 20], 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert out[:, 16, 16].min() == 255 and out[:, 0, 0].max() == 0  # margin of background
    edge = crop(image, [90, 40, 30, 30], 16)  # runs off the image: clipped, not padded
    assert edge.shape == (3, 16, 16)
    assert crop(image, [10, 10, 0, 0], 8).shape == (3, 8, 8)  # a degenerate box


def test_params_suspects_key_checked():
    with pytest.raises(Exception, match="suspects.arch: 'small_cnn' is not one of"):
        params_from_dict(with_change("suspects.arch", "small_cnn"))
    with pytest.raises(Exception, match="suspects.folds"):
        params_from_dict(with_change("suspects.folds", 1))


def _args(tmp_path):
    return argparse.Namespace(out=str(tmp_path / "out"), figures=str(tmp_path / "fig"))


def test_a_missing_suspects_weights_file_names_the_suspects_key(tmp_path):
    raw = with_change("suspects.weights", str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match=r"^suspects\.weights: .*nope\.pt: file not found$"):
        suspects.find_suspects(_items(["a", "b"]), params_from_dict(raw), _args(tmp_path))


def test_one_label_data_writes_empty_outputs_with_the_reason(tmp_path, monkeypatch):
    """The stage does not fail the pipeline on data it cannot rank: it says why."""
    flat = torch.nn.Flatten()
    monkeypatch.setattr(suspects, "feature_extractor", lambda *_: (flat, "test"))
    raw = with_change("suspects.folds", 2)
    found = suspects.find_suspects(_items(["a"] * 6), params_from_dict(raw), _args(tmp_path))
    assert found["enabled"] is False and "fewer than two grade values" in found["reason"]
    details = json.loads((tmp_path / "out/details.json").read_text())
    assert details == {"enabled": False, "reason": found["reason"]}
    assert pd.read_csv(tmp_path / "out/suspects.csv").empty
