"""Batched augmentation: shapes, purity, seeding, and that the geometric paths are exact."""

from __future__ import annotations

import pytest
import torch

from visionpipe.core.augment import OPS, augment_batch
from visionpipe.core.params import AUGMENTATIONS, Augment


def _cfg(*ops: str, **kw) -> Augment:
    kw = {"rotate_degrees": 30.0, "crop_min_scale": 0.3, "jitter": 0.4, "erasing_p": 1.0} | kw
    return Augment(ops=list(ops), **kw)


def _images(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def _run(x: torch.Tensor, cfg: Augment, seed: int = 1) -> torch.Tensor:
    return augment_batch(x, cfg, torch.Generator().manual_seed(seed))


def test_dispatch_table_matches_params():
    assert set(OPS) == set(AUGMENTATIONS)


@pytest.mark.parametrize("ops", [(op,) for op in AUGMENTATIONS] + [AUGMENTATIONS])
def test_shape_dtype_purity_and_effect(ops):
    x = _images()
    before = x.clone()
    y = _run(x, _cfg(*ops))
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(x, before)
    assert y.data_ptr() != x.data_ptr()
    assert not torch.equal(y, x)


def test_empty_batch_and_no_ops_return_input():
    x = _images()
    assert augment_batch(x, _cfg(), torch.Generator()) is x
    empty = x[:0]
    assert augment_batch(empty, _cfg(*AUGMENTATIONS), torch.Generator()) is empty


def test_seeded_reproducible():
    x = _images()
    cfg = _cfg(*AUGMENTATIONS)
    assert torch.equal(_run(x, cfg, seed=3), _run(x, cfg, seed=3))
    assert not torch.equal(_run(x, cfg, seed=3), _run(x, cfg, seed=4))


def test_global_rng_untouched():
    x = _images()
    state = torch.get_rng_state()
    _run(x, _cfg("autoaugment", "trivialaugment"))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("ops", [("hflip",), ("vflip",), ("rot90",), ("hflip", "vflip", "rot90")])
def test_flips_and_rot90_only_move_pixels(ops):
    x = _images(16)
    y = _run(x, _cfg(*ops))
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (24, 40)])
def test_affine_identity_does_not_shift(h, w):
    x = _images(h=h, w=w)
    for cfg in (_cfg("rotate", rotate_degrees=0.0), _cfg("resized_crop", crop_min_scale=1.0)):
        diff = (_run(x, cfg).int() - x.int()).abs().max()
        assert diff <= 1


def test_color_jitter_zero_is_identity_and_gray_stays_gray():
    x = _images()
    assert (_run(x, _cfg("color_jitter", jitter=0.0)).int() - x.int()).abs().max() <= 1
    gray = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    y = _run(gray, _cfg("color_jitter", jitter=0.5))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    assert not torch.equal(y, gray)


def test_rot90_non_square_keeps_shape():
    x = _images(h=24, w=40)
    assert _run(x, _cfg("rot90", "hflip")).shape == x.shape
    y = _run(x, _cfg("rot90"))  # skipped, yet still a new tensor
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


def test_unknown_op_raises():
    with pytest.raises(ValueError, match="nope"):
        _run(_images(), _cfg("hflip", "nope"))
