import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from visionpipe.core.errors import DataError
from visionpipe.tasks.regression.model.targets import (
    FlatRegressionLoss,
    TargetTransform,
    regression_loss,
    regression_metrics,
)

BIOMASS = torch.tensor([0.0, 0.5, 2.0, 3.5, 10.0, 40.0, 120.0], dtype=torch.float64)


@pytest.mark.parametrize("log1p", [False, True])
@pytest.mark.parametrize("standardize", [False, True])
def test_round_trip(log1p, standardize):
    tf = TargetTransform.fit(BIOMASS, log1p=log1p, standardize=standardize)
    z = tf.forward(BIOMASS)
    assert z.dtype == torch.float64
    torch.testing.assert_close(tf.inverse(z), BIOMASS)
    # and the other way round: any model output maps back and forth
    out = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(tf.forward(tf.inverse(out)), out)
    if not standardize:
        assert (tf.mean, tf.std) == (0.0, 1.0)
        expected = torch.log1p(BIOMASS) if log1p else BIOMASS
        torch.testing.assert_close(z, expected)


def test_float32_and_integer_inputs():
    tf = TargetTransform.fit(np.array([1, 2, 3, 4]), log1p=True, standardize=True)
    z = tf.forward(torch.tensor([1, 2, 3, 4]))
    assert z.dtype == torch.float32
    torch.testing.assert_close(tf.inverse(z), torch.tensor([1.0, 2.0, 3.0, 4.0]))


@pytest.mark.parametrize("log1p", [False, True])
def test_standardized_train_targets_have_mean_0_std_1(log1p):
    tf = TargetTransform.fit(BIOMASS, log1p=log1p, standardize=True)
    z = tf.forward(BIOMASS)
    assert abs(float(z.mean())) < 1e-12
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-12)


def test_fit_uses_only_the_given_values():
    train, test = np.array([1.0, 2.0, 3.0]), np.array([100.0, 200.0])
    tf = TargetTransform.fit(train, log1p=False, standardize=True)
    assert tf.mean == pytest.approx(2.0)
    assert tf.std == pytest.approx(np.std(train))
    # a numpy array and a tensor of the same values fit the same transform
    assert TargetTransform.fit(torch.tensor(train), False, True) == tf
    # test targets are transformed with the train statistics, not standardized on their own
    torch.testing.assert_close(
        tf.forward(torch.tensor(test, dtype=torch.float64)),
        torch.tensor((test - 2.0) / np.std(train), dtype=torch.float64),
    )


@pytest.mark.parametrize("value", [0.0, 0.1, 7.3, 1e6])
@pytest.mark.parametrize("log1p", [False, True])
def test_constant_target_keeps_std_1(value, log1p):
    tf = TargetTransform.fit(np.full(5, value), log1p=log1p, standardize=True)
    assert tf.std == 1.0
    z = tf.forward(torch.full((5,), value, dtype=torch.float64))
    assert torch.isfinite(z).all()
    assert float(z.abs().max()) < 1e-6
    torch.testing.assert_close(tf.inverse(z), torch.full((5,), value, dtype=torch.float64))


def test_log1p_rejects_values_at_or_below_minus_1():
    with pytest.raises(DataError, match=r"smallest target is -1\.5; log1p needs values > -1"):
        TargetTransform.fit(np.array([3.0, -1.5, 0.0]), log1p=True, standardize=False)
    with pytest.raises(DataError) as err:
        TargetTransform.fit(np.array([-3.0]), log1p=True, standardize=False)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"smallest target is -1;"):
        TargetTransform.fit(np.array([-1.0, 2.0]), log1p=True, standardize=True)
    # fine without log1p, and just above -1 with it
    TargetTransform.fit(np.array([-1.5, 2.0]), log1p=False, standardize=True)
    TargetTransform.fit(np.array([-0.5, 2.0]), log1p=True, standardize=True)
    # a test target out of the domain fails too instead of becoming a NaN loss
    tf = TargetTransform.fit(np.array([0.0, 2.0]), log1p=True, standardize=True)
    with pytest.raises(DataError, match="log1p needs values > -1"):
        tf.forward(torch.tensor([1.0, -2.0]))


def test_fit_rejects_empty_and_non_finite():
    with pytest.raises(DataError, match="no training targets"):
        TargetTransform.fit(np.array([]), log1p=False, standardize=True)
    with pytest.raises(DataError, match="1 training targets are missing or not finite"):
        TargetTransform.fit(np.array([1.0, np.nan, 2.0]), log1p=False, standardize=True)


def test_to_dict_from_dict():
    tf = TargetTransform.fit(BIOMASS, log1p=True, standardize=True)
    d = tf.to_dict()
    assert set(d) == {"log1p", "mean", "std"}
    assert TargetTransform.from_dict(d) == tf
    assert TargetTransform.from_dict(json.loads(json.dumps(d))) == tf  # survives JSON
    with pytest.raises(ValueError, match="missing std"):
        TargetTransform.from_dict({"log1p": False, "mean": 0.0})
    with pytest.raises(ValueError, match="std > 0"):
        TargetTransform.from_dict({"log1p": False, "mean": 0.0, "std": 0.0})


def test_metrics_against_hand_computed_numbers():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert m["num_samples"] == 3
    assert m["mse"] == pytest.approx(1 / 3)
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert m["r2"] == pytest.approx(0.5)  # 1 - 1 / 2
    # tensors, (N, 1) predictions
    t = regression_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1.0], [2.0], [4.0]]))
    assert t == pytest.approx(m)
    assert all(isinstance(v, float) for k, v in m.items() if k != "num_samples")
    json.dumps(m)


def test_metrics_r2_none_when_undefined():
    one = regression_metrics(np.array([2.0]), np.array([3.0]))
    assert one["r2"] is None
    assert (one["mse"], one["mae"], one["rmse"], one["num_samples"]) == (1.0, 1.0, 1.0, 1)
    constant = regression_metrics(np.array([5.0, 5.0, 5.0]), np.array([4.0, 5.0, 6.0]))
    assert constant["r2"] is None
    assert constant["mse"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 targets but 2 predictions"):
        regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="no samples"):
        regression_metrics(np.array([]), np.array([]))


@pytest.mark.parametrize(
    "name, inner, expected",
    [
        ("mse", nn.MSELoss, (0.25 + 4.0) / 2),
        ("huber", nn.HuberLoss, (0.5 * 0.25 + (2.0 - 0.5)) / 2),
        ("l1", nn.L1Loss, (0.5 + 2.0) / 2),
    ],
)
def test_each_loss(name, inner, expected):
    loss = regression_loss(name)
    assert isinstance(loss, FlatRegressionLoss)
    assert isinstance(loss.loss, inner)
    pred, target = torch.tensor([1.5, 0.0]), torch.tensor([1.0, 2.0])
    assert float(loss(pred, target)) == pytest.approx(expected)
    assert float(loss(pred[:, None], target)) == pytest.approx(expected)


def test_huber_delta_and_unknown_name():
    assert regression_loss("huber", huber_delta=3.0).loss.delta == 3.0
    pred, target = torch.tensor([0.0]), torch.tensor([2.0])
    assert float(regression_loss("huber", 3.0)(pred, target)) == pytest.approx(0.5 * 4.0)
    with pytest.raises(ValueError, match="'rmse' is not one of mse, huber, l1"):
        regression_loss("rmse")
    with pytest.raises(ValueError, match="huber delta must be > 0"):
        regression_loss("huber", huber_delta=0.0)


@pytest.mark.parametrize("name", ["mse", "huber", "l1"])
def test_no_silent_broadcasting(name):
    pred = torch.tensor([[1.0], [2.0], [3.0]])  # what a 1-output head returns
    target = torch.tensor([1.0, 2.0, 3.0])
    # the bug being guarded against: the plain loss compares every pair (N x N), not 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(regression_loss(name).loss(pred, target)) > 0
    assert float(regression_loss(name)(pred, target)) == 0.0
    # gradients reach the predictions element by element
    p = pred.clone().requires_grad_()
    regression_loss(name)(p, target + 1).backward()
    assert p.grad.shape == (3, 1)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        regression_loss(name)(torch.zeros(3, 2), target)
    with pytest.raises(ValueError, match="3 predictions but 2 targets"):
        regression_loss(name)(pred, target[:2])


def test_loss_casts_target_dtype():
    loss = regression_loss("mse")
    out = loss(torch.zeros(2, 1), torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert out.dtype == torch.float32
    assert float(out) == 1.0
