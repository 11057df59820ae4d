"""The low-confidence threshold: its params forms and how a target is resolved."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_params import with_change
from visionpipe.core.params import ParamsError, params_from_dict
from visionpipe.core.thresholds import resolve_threshold
from visionpipe.deploy.decode import model_threshold
from visionpipe.deploy.simulate import stage_threshold


def _params(threshold, task: str = "classification"):
    raw = with_change("simulate.threshold", threshold)
    raw["base"]["task"] = task
    return params_from_dict(raw)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (0.55, 0.55),
        (1, 1.0),
        ({"flag_share": 0.1}, {"flag_share": 0.1}),
        ({"precision": 1}, {"precision": 1.0}),
    ],
)
def test_threshold_forms(given, expected):
    assert _params(given).simulate.threshold == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (1.5, "out of range"),
        (True, "expected a confidence"),
        ({"recall": 0.9}, "simulate.threshold.recall: unknown target"),
        ({"flag_share": 1.0}, "0 < x < 1"),
        ({"precision": 0}, "0 < x <= 1"),
        ({"flag_share": 0.1, "precision": 0.9}, "two targets at once .* -S '~simulate.threshold'"),
        ({"flag_share": 0.1, "recall": 0.9}, "one target"),
        ("auto", "expected a confidence"),
        ({"flag_share": "0.1"}, "expected a number"),
        ({"precision": None}, "expected a number"),
        ({"flag_share": [1]}, "expected a number"),
    ],
)
def test_threshold_refused_in_one_line(given, message):
    with pytest.raises(ParamsError, match=message) as err:
        _params(given)
    assert "\n" not in str(err.value)


def test_regression_refuses_a_target():
    with pytest.raises(ParamsError, match="regression predictions have none"):
        _params({"flag_share": 0.1}, task="regression")
    assert _params(0.5, task="regression").simulate.threshold == 0.5


def test_flag_share_flags_that_share_of_val():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 1000)
    found = resolve_threshold({"flag_share": 0.1}, confidence, np.ones(1000, bool), "images")
    assert found["target"] == {"flag_share": 0.1} and found["reached"]
    assert found["resolved_on"]["flagged_share"] == pytest.approx(0.1, abs=0.002)
    assert (confidence < found["value"]).mean() == pytest.approx(0.1, abs=0.002)


@pytest.mark.parametrize("share", [0.29, 0.57, 0.58, 0.1])
def test_flag_share_flags_exactly_that_many(share):
    confidence = np.arange(100) / 100 + 0.001  # 100 distinct confidences
    found = resolve_threshold({"flag_share": share}, confidence, np.ones(100, bool), "images")
    assert (np.round(confidence, 6) < found["value"]).sum() == round(share * 100)


def test_precision_target_is_the_lowest_threshold_that_holds():
    # confident predictions right, the least confident third wrong
    confidence = np.round(np.linspace(0.35, 0.99, 300), 6)
    correct = confidence > 0.56
    found = resolve_threshold({"precision": 0.95}, confidence, correct, "images")
    accepted = confidence >= found["value"]
    assert correct[accepted].mean() >= 0.95
    # one step lower (the next confidence below) would break the target
    lower = confidence[confidence < found["value"]].max()
    assert correct[confidence >= lower].mean() < 0.95
    assert found["resolved_on"]["accepted_precision"] >= 0.95


def test_precision_cuts_only_between_distinct_confidences():
    confidence = np.array([0.9, 0.8, 0.8, 0.8, 0.5])
    correct = np.array([True, True, False, False, True])
    found = resolve_threshold({"precision": 0.7}, confidence, correct, "images")
    # cutting inside the 0.8 ties would claim 2/2; with ties it is 2/4 -> only 0.9 holds
    assert found["value"] == 0.9
    assert found["resolved_on"]["accepted_precision"] == 1.0


def test_unreachable_precision_flags_everything(caplog):
    confidence = np.array([0.9, 0.7, 0.6])
    found = resolve_threshold({"precision": 1.0}, confidence, np.zeros(3, bool), "detections")
    assert not found["reached"] and found["value"] > 1.0  # flags any confidence, on test too
    assert found["resolved_on"]["flagged_share"] == 1.0
    assert "not reached on 3 validation detections" in caplog.text


def test_fixed_threshold_reports_what_it_does_on_val():
    found = resolve_threshold(
        0.55, np.array([0.9, 0.5, 0.6, 0.4]), np.array([1, 0, 1, 1]), "images"
    )
    assert found["value"] == 0.55 and found["target"] == "fixed"
    assert found["resolved_on"] == {
        "split": "val",
        "unit": "images",
        "count": 4,
        "correct_share": 0.75,
        "flagged_share": 0.5,
        "accepted_precision": 1.0,
    }


def test_resolved_on_the_confidences_predict_reports():
    """predict rounds confidences to 6 digits: the prediction at the cut is accepted there too."""
    confidence = np.array([0.5, 0.6000004, 0.7, 0.9])
    found = resolve_threshold({"flag_share": 0.25}, confidence, np.ones(4, bool), "images")
    assert not round(0.6000004, 6) < found["value"]
    assert found["resolved_on"]["flagged_share"] == 0.25


def test_model_threshold_read_from_model_json():
    assert model_threshold({"threshold": {"value": 0.62, "target": {"flag_share": 0.1}}}) == 0.62
    assert model_threshold({}) is None
    with pytest.raises(Exception, match="expected a value >= 0"):
        model_threshold({"threshold": {"value": "high"}})


class _Predictor:
    path = "models/export/model.onnx"

    def __init__(self, meta):
        self.meta = meta


def test_simulate_stage_uses_the_resolved_threshold():
    assert stage_threshold(_Predictor({"threshold": {"value": 0.7}}), {"flag_share": 0.1}) == 0.7
    assert stage_threshold(_Predictor({}), 0.55) == 0.55  # regression: no confidence
    with pytest.raises(Exception, match="no resolved threshold .* rerun the export stage"):
        stage_threshold(_Predictor({}), {"flag_share": 0.1})
