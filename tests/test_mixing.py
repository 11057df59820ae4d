"""MixUp and CutMix (classification.mixup_alpha / cutmix_alpha): the images and soft targets
agree, the draws come from the run's generator, and a fit trains on the soft targets."""

from __future__ import annotations

import pytest
import torch

from tests.test_accuracy_levers import _raw
from tests.test_training import params as train_params
from tests.test_training import run_fit
from visionpipe.core.models import build_model
from visionpipe.core.params import ParamsError, params_from_dict
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.model.mixing import batch_mixer


def batch(n: int = 8, size: int = 16, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    return x, torch.arange(n) % classes


def test_both_off_is_no_mixer_and_the_params_say_so():
    assert batch_mixer(0.0, 0.0, 4) is None
    task = get_task("classification")
    assert task.batch_mixer(params_from_dict(_raw()), ["a", "b"]) is None
    assert get_task("regression").batch_mixer(params_from_dict(_raw()), ["t"]) is None


def test_mixup_blends_each_image_with_the_previous_one_at_the_targets_share():
    x, y = batch()
    mixed, soft = batch_mixer(0.4, 0.0, 4)(x, y, torch.Generator().manual_seed(0))
    assert mixed.dtype == torch.float32 and soft.shape == (8, 4)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    lam = float(soft[0, y[0]])  # sample 0 keeps lam of itself, 1 - lam of sample 7
    assert 0.0 < lam < 1.0
    expected = lam * x.float() + (1 - lam) * x.float().roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-3)
    partner = soft[torch.arange(8), y.roll(1, 0)]
    assert torch.allclose(partner, torch.full((8,), 1 - lam))


def test_cutmix_pastes_one_box_from_the_previous_image_and_its_share_is_the_area():
    x, y = batch(size=32)
    mixed, soft = batch_mixer(0.0, 1.0, 4)(x, y, torch.Generator().manual_seed(3))
    own = (mixed == x.float()).all(1)  # pixels kept from the image itself
    pasted = (mixed == x.float().roll(1, 0)).all(1) & ~own
    assert bool((own | pasted).all())  # nothing blended: every pixel is one image's
    area_share = pasted.float().mean((1, 2))
    assert 0.05 < float(area_share[0]) < 0.95  # this seed's box: neither empty nor everything
    assert bool((area_share == area_share[0]).all())  # one box for the whole batch
    partner = soft[torch.arange(8), y.roll(1, 0)]
    assert torch.allclose(partner, area_share, atol=0.02)  # random images rarely tie a pixel


def test_the_draws_come_from_the_generator_and_leave_the_global_rng_alone():
    x, y = batch()
    mix = batch_mixer(1.0, 1.0, 4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = [mix(x, y, gen) for gen in [torch.Generator().manual_seed(5)] for _ in range(4)]
    assert torch.equal(torch.get_rng_state(), before)
    again = [mix(x, y, gen) for gen in [torch.Generator().manual_seed(5)] for _ in range(4)]
    for (a, sa), (b, sb) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(sa, sb)

    # both on: the batches do not all take the same one (CutMix pastes pixels, MixUp blends)
    def pasted(m: torch.Tensor) -> bool:
        return bool(((m == x.float()) | (m == x.float().roll(1, 0))).all())

    others = [mix(x, y, torch.Generator().manual_seed(s))[0] for s in range(12)]
    assert {pasted(m) for m in others + [m for m, _ in first]} == {True, False}


@pytest.mark.parametrize("key", ["mixup_alpha", "cutmix_alpha"])
def test_a_negative_alpha_is_one_line(key):
    with pytest.raises(ParamsError, match=f"classification.{key}"):
        params_from_dict(_raw(classification={key: -0.2}))


def test_a_fit_with_mixup_trains_on_soft_targets_with_class_weights():
    seen = []

    class Recording(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            seen.append(target.dtype)
            return super().forward(logits, target)

    model = build_model("small_cnn", 2, pretrained=False, dropout=0.0).model
    weighted = Recording(weight=torch.tensor([0.7, 1.3]))
    mixer = batch_mixer(0.4, 0.0, 2)
    result, _ = run_fit(model, train_params(epochs=6), criterion=weighted, mixer=mixer)
    assert torch.float32 in seen  # training batches: soft targets
    assert torch.int64 in seen  # validation: the hard labels
    assert all(h["train_loss"] == h["train_loss"] for h in result.history)  # no NaN
    assert result.best_value >= 0.9  # the blended images still teach the two classes
