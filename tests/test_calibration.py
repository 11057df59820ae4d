"""Temperature scaling and the expected calibration error (issue #17, point 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionpipe.core.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
    softmax,
)
from visionpipe.core.errors import UserError
from visionpipe.deploy.decode import classification as decode_classification
from visionpipe.tasks.classification.model import ClassificationTask


def overconfident(n: int = 4000, classes: int = 4, seed: int = 0):
    """Labels drawn from calibrated probabilities, and logits three times too sharp."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, size=(n, classes))
    probs = softmax(true_logits)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return torch.tensor(3.0 * true_logits), torch.tensor(labels)


def test_temperature_lowers_ece_and_keeps_the_argmax():
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    assert 2.5 < temperature < 3.5  # the sharpening it undoes
    before = expected_calibration_error(softmax(logits), labels.numpy())
    after = expected_calibration_error(softmax(logits, temperature), labels.numpy())
    assert after < before / 3 and after < 0.03
    assert (softmax(logits).argmax(1) == softmax(logits, temperature).argmax(1)).all()


def test_a_calibrated_model_keeps_a_temperature_near_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, size=(4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_a_temperature_that_raises_the_val_ece_is_not_applied(monkeypatch):
    """Calibrated logits, and a fitted temperature (forced here) that would flatten them: the
    classifier keeps temperature 1 and records what it rejected."""
    import visionpipe.core.calibration as calibration_module

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2.0, size=(2000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    monkeypatch.setattr(calibration_module, "fit_temperature", lambda *_: 4.0)
    meta = ClassificationTask().calibrate(torch.tensor(logits), torch.tensor(labels))
    calibration = meta["calibration"]
    assert calibration["val_ece_with_fitted"] > calibration["val_ece_before"]
    assert meta["temperature"] == 1.0 and not calibration["applied"]
    assert calibration["fitted_temperature"] == 4.0


def test_no_temperature_from_a_val_split_without_mistakes():
    """Every val image right: the NLL falls as T shrinks to its bound, which would make every
    confidence 1; the classifier keeps temperature 1 instead."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=200)
    logits = rng.normal(0, 1, size=(200, 3))
    logits[np.arange(200), labels] += 10.0  # always the right class first
    meta = ClassificationTask().calibrate(torch.tensor(logits), torch.tensor(labels))
    assert meta["temperature"] == 1.0 and not meta["calibration"]["applied"]
    assert meta["calibration"]["not_applied_because"] == "no mistakes on val to calibrate against"


def test_reliability_bins():
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    table = reliability(probs, labels, bins=10)
    assert table["count"].sum() == 4
    top = table[table["bin"] == 9].iloc[0]  # 0.95 and 0.92: one right, one wrong
    assert top["count"] == 2 and top["accuracy"] == 0.5 and top["confidence"] == 0.935
    ece = expected_calibration_error(probs, labels, bins=10)
    assert ece == pytest.approx((2 * 0.435 + 0.45 + 0.4) / 4)


def test_the_classifier_records_its_temperature_and_predict_applies_it():
    logits, labels = overconfident(n=800)
    task = ClassificationTask()
    meta = task.calibrate(logits, labels)
    assert meta["temperature"] > 1 and meta["calibration"]["val_images"] == 800
    assert (
        meta["calibration"]["applied"]
        and meta["temperature"] == meta["calibration"]["fitted_temperature"]
    )
    assert meta["calibration"]["val_ece_with_fitted"] < meta["calibration"]["val_ece_before"]
    task.load_meta(meta)
    assert task.output_description()["temperature"] == meta["temperature"]

    row = torch.tensor([[4.0, 0.0]])
    labels_meta = {"labels": ["a", "b"]}
    (raw,) = decode_classification(row, labels_meta)
    sidecar = {**labels_meta, "output": {"temperature": 2.0}}
    (calibrated,) = decode_classification(row, sidecar)
    assert raw["class"] == calibrated["class"] == "a"
    assert calibrated["confidence"] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    (checkpoint,) = decode_classification(row, {**labels_meta, "temperature": 2.0})
    assert checkpoint == calibrated
    with pytest.raises(UserError, match=r"temperature 0 in the model's metadata"):
        decode_classification(row, {**labels_meta, "temperature": 0})
