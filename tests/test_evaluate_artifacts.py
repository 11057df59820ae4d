"""The evaluate stage's files for classification, on synthetic model outputs; the latency helper."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from visionpipe.core.timing import latency, model_latency, tile_batch
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.evaluate import write_results

LABELS = ["apple", "banana", "cherry"]  # no cherry in the test split


def params(confident_threshold=0.9, draw_images=16):
    return SimpleNamespace(
        evaluate=SimpleNamespace(
            binary_positive=[],
            confident_threshold=confident_threshold,
            draw_images=draw_images,
        )
    )


def synthetic(n=30, seed=0):
    """Apples and bananas only; every 5th sample wrong, alternately with high and low confidence."""
    gen = torch.Generator().manual_seed(seed)
    true = torch.arange(n) % 2
    pred = true.clone()
    wrong = torch.arange(0, n, 5)
    pred[wrong] = 1 - true[wrong]
    outputs = torch.randn(n, 3, generator=gen) * 0.1
    strength = torch.full((n,), 2.0)
    strength[wrong[::2]] = 6.0  # softmax ~0.995: confident mistakes
    strength[wrong[1::2]] = 0.5  # softmax ~0.45: unsure mistakes
    outputs[torch.arange(n), pred] += strength
    manifest = pd.DataFrame({"path": [f"img{i:02d}.png" for i in range(n)]})
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=gen)
    return outputs, true, manifest, images, pred


def run(tmp_path, outputs, true, manifest, images, **kw):
    task = get_task("classification")
    headline, metrics = write_results(
        task,
        outputs,
        true,
        manifest,
        images,
        LABELS,
        params(**kw),
        tmp_path / "res",
        tmp_path / "fig",
    )
    # metrics.json and details.json must stay strict JSON (None, not NaN)
    json.dumps([headline, metrics], allow_nan=False)
    assert set(headline) <= set(metrics) and len(headline) <= 12
    return metrics


def test_every_artifact_with_a_class_absent_from_the_test_split(tmp_path):
    outputs, true, manifest, images, pred = synthetic()
    metrics = run(tmp_path, outputs, true, manifest, images)
    res, fig = tmp_path / "res", tmp_path / "fig"

    frame = pd.read_csv(res / "predictions.csv")
    assert list(frame.columns) == [
        "path",
        "true",
        "predicted",
        "confidence",
        "correct",
        "p_apple",
        "p_banana",
        "p_cherry",
    ]
    assert len(frame) == 30 and frame["path"].tolist() == manifest["path"].tolist()
    assert frame["predicted"].tolist() == [LABELS[i] for i in pred]
    assert frame["correct"].tolist() == (pred == true).int().tolist()
    probs = frame[["p_apple", "p_banana", "p_cherry"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(probs.max(1), frame["confidence"])

    wrong = pd.read_csv(res / "tables" / "wrong.csv")
    assert list(wrong.columns) == list(frame.columns)
    assert len(wrong) == (pred != true).sum() == 6 == metrics["num_wrong"]
    assert (wrong["correct"] == 0).all()
    assert wrong["confidence"].is_monotonic_decreasing
    confident = pd.read_csv(res / "tables" / "confident_wrong.csv")
    assert len(confident) == 3 == metrics["num_confident_wrong"]
    assert (confident["confidence"] >= 0.9).all()
    assert confident["path"].tolist() == wrong["path"].head(3).tolist()
    assert metrics["confident_threshold"] == 0.9

    report = pd.read_csv(res / "tables" / "classification_report.csv")
    assert list(report.columns) == ["class", "precision", "recall", "f1", "support"]
    assert report["class"].tolist() == [*LABELS, "macro avg", "weighted avg"]
    assert report["support"].tolist() == [15, 15, 0, 30, 30]
    assert set(metrics["per_class"]) == set(LABELS)
    assert set(metrics["per_class"]["apple"]) == {"precision", "recall", "f1", "support"}
    apple = report.set_index("class").loc["apple"]
    assert metrics["per_class"]["apple"]["recall"] == pytest.approx(apple["recall"])
    assert metrics["f1_macro"] == pytest.approx(report.set_index("class").loc["macro avg", "f1"])

    curves = pd.read_csv(res / "curves.csv")  # long: ROC, PR, reliability: one DVC template
    assert list(curves.columns) == ["curve", "class", "point", "x", "y", "threshold"]
    assert curves["curve"].unique().tolist() == ["roc", "pr", "reliability"]
    bins = curves[curves["curve"] == "reliability"]
    assert set(bins["class"]) == {"uncalibrated", "calibrated"}  # the same at temperature 1
    assert metrics["ece"] == metrics["calibration"]["ece_before"] > 0
    for _, curve in curves[curves["curve"] != "reliability"].groupby("curve"):
        assert set(curve["class"]) == {"apple", "banana"}  # no positives, no curve
        assert curve[["x", "y"]].to_numpy().min() >= 0 and curve[["x", "y"]].to_numpy().max() <= 1
        for _, points in curve.groupby("class"):
            assert points["point"].tolist() == list(range(len(points)))
    assert metrics["roc_auc"]["cherry"] is None and metrics["average_precision"]["cherry"] is None
    for key in ("roc_auc", "average_precision"):
        assert 0.5 < metrics[key]["apple"] <= 1
        assert metrics[f"{key}_macro"] == pytest.approx(
            (metrics[key]["apple"] + metrics[key]["banana"]) / 2
        )

    for png in (
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "roc.png",
        "pr.png",
        "mistakes.png",
        "reliability.png",
    ):
        assert (fig / png).stat().st_size > 1000, png


def test_no_mistakes_and_empty_grid_still_write_the_figure(tmp_path):
    outputs, true, manifest, images, _ = synthetic()
    perfect = torch.nn.functional.one_hot(true, 3).float() * 5
    metrics = run(tmp_path / "a", perfect, true, manifest, images)
    assert metrics["num_wrong"] == metrics["num_confident_wrong"] == 0
    assert len(pd.read_csv(tmp_path / "a/res/tables/wrong.csv")) == 0
    assert (tmp_path / "a/fig/mistakes.png").stat().st_size > 1000
    assert metrics["roc_auc"]["apple"] == 1.0

    metrics = run(tmp_path / "b", outputs, true, manifest, images, draw_images=0)
    assert metrics["num_wrong"] == 6
    assert (tmp_path / "b/fig/mistakes.png").stat().st_size > 1000


def test_latency_fields():
    timing = latency(lambda x: x * 2, torch.ones(4, 3), warmup=2, runs=5)
    assert set(timing) == {"median_ms", "p95_ms", "runs"} and timing["runs"] == 5
    assert 0 <= timing["median_ms"] <= timing["p95_ms"]
    assert tile_batch(torch.arange(3), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]


class Tiny(torch.nn.Module):
    """Takes uint8 images, as the pipeline's models do."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255).mean((2, 3))


def test_model_latency_on_a_tiny_model():
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    out = model_latency(Tiny(), images, torch.device("cpu"), {"batch_1": 1, "batch_8": 8}, 3)
    assert out["warmup"] >= 1 and set(out["latency"]) == {"batch_1", "batch_8"}
    for key, size in (("batch_1", 1), ("batch_8", 8)):
        timing = out["latency"][key]
        assert timing["batch_size"] == size and timing["runs"] == 3
        assert 0 < timing["median_ms"] <= timing["p95_ms"]
