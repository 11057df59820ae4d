"""Class-balanced sampling (classification.sampling): the draw weights, the epoch's batches
drawn from them with the run's generator, and a fit that draws the rare class as often."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.test_accuracy_levers import _raw
from tests.test_training import params as train_params
from tests.test_training import synthetic
from visionpipe.core.engine import Dist, _epoch_batches, fit
from visionpipe.core.image.train import ImageHooks
from visionpipe.core.models import build_model
from visionpipe.core.params import Classification, ParamsError, params_from_dict
from visionpipe.core.runtime import seed_everything
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.model.sampling import sample_weights

# 90 images of class 0, 9 of class 1, 1 of class 3 (class 2 has none)
TARGETS = torch.tensor([0] * 90 + [1] * 9 + [3])


def class_shares(weights: torch.Tensor, targets: torch.Tensor = TARGETS) -> list[float]:
    total = torch.zeros(4, dtype=torch.float64).index_add_(0, targets, weights.double())
    return (total / total.sum()).tolist()


def test_shuffle_is_no_weights_and_the_default():
    assert sample_weights("shuffle", TARGETS) is None
    assert params_from_dict(_raw()).classification.sampling == "shuffle"
    assert get_task("regression").sample_weights(params_from_dict(_raw()), TARGETS) is None


def test_balanced_gives_every_present_class_the_same_share():
    shares = class_shares(sample_weights("balanced", TARGETS))
    assert shares == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])


def test_sqrt_gives_each_class_a_share_in_proportion_to_the_root_of_its_count():
    shares = class_shares(sample_weights("sqrt", TARGETS))
    roots = torch.tensor([90.0, 9.0, 0.0, 1.0]).sqrt()
    assert shares == pytest.approx((roots / roots.sum()).tolist())


def test_an_unknown_setting_is_a_params_error_naming_the_key():
    with pytest.raises(ParamsError, match="classification.sampling"):
        params_from_dict(_raw(classification={"sampling": "oversample"}))


def test_weighted_batches_draw_n_samples_by_weight_from_the_generator():
    weights = sample_weights("balanced", TARGETS)
    draw = _epoch_batches(100, 32, torch.Generator().manual_seed(0), Dist(), weights)
    again = _epoch_batches(100, 32, torch.Generator().manual_seed(0), Dist(), weights)
    assert [len(b) for b in draw] == [32, 32, 32, 4]
    assert all(torch.equal(a, b) for a, b in zip(draw, again, strict=True))
    many = torch.cat(_epoch_batches(30000, 1000, torch.Generator().manual_seed(1), Dist(), weights))
    counts = torch.bincount(TARGETS[many], minlength=4) / len(many)
    assert counts.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3], abs=0.02)
    plain = torch.cat(_epoch_batches(100, 32, torch.Generator().manual_seed(0), Dist()))
    assert sorted(plain.tolist()) == list(range(100))  # unweighted: each sample once


class Recording(ImageHooks):
    """ImageHooks that remember which training samples each batch drew."""

    drawn: list[torch.Tensor]

    def batch_loss(self, model, idx, gen):
        self.drawn.append(idx)
        return super().batch_loss(model, idx, gen)


@pytest.mark.parametrize(
    "sampling, rare_share", [("shuffle", (0.09, 0.11)), ("balanced", (0.4, 0.6))]
)
def test_a_fit_draws_the_rare_class_as_the_setting_says(sampling, rare_share):
    gen = seed_everything(0)
    x, _ = synthetic(200, gen)
    y = (torch.arange(200) % 10 == 0).long()  # class 1: one image in ten
    p = dataclasses.replace(
        train_params(epochs=2), classification=Classification(sampling=sampling)
    )
    model = build_model("resnet18", 2, pretrained=False, dropout=0.0).model
    task = get_task("classification")
    hooks = Recording(
        model, task, p, torch.nn.CrossEntropyLoss(), x, y, x[:32], y[:32], torch.device("cpu")
    )
    hooks.drawn = []
    fit(hooks, task, p, torch.device("cpu"), gen, lambda e, m: None)
    drawn = torch.cat(hooks.drawn)
    assert len(drawn) == 2 * 200
    lo, hi = rare_share
    assert lo <= float(y[drawn].float().mean()) <= hi
