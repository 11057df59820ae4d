"""Batched, seeded training augmentation on uint8 image batches.

Training keeps each split decoded once in memory as a uint8 (N, 3, H, W) tensor, so
augmentation works on whole batches: per-sample randomness is drawn as vectors and applied
with broadcasting, coordinate masks or one batched ``grid_sample``. Loops over samples are
left only where they are cheaper (flips and rot90: one small copy per image) or unavoidable
(torchvision's AutoAugment and TrivialAugment). Every random number comes from the caller's
generator, so a run is reproducible from its seed and the global RNG is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from visionpipe.core.params import Augment
from visionpipe.core.runtime import global_rng_from

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_CROP_RATIO = (3 / 4, 4 / 3)
_ERASE_AREA = (0.02, 0.2)
_ERASE_RATIO = (0.3, 3.3)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _log_uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return _uniform(n, math.log(lo), math.log(hi), gen).exp()


def _dihedral(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """hflip / vflip (p=0.5 each) and rot90 (k uniform in 0..3, square images only) per sample.

    They only move pixels, so they are composed per sample into one copy of each image. With
    B=32 this loop of small copies is several times faster than masked gathers and scatters
    over the batch, and does not stall on a busy intra-op thread pool.
    """
    n = x.shape[0]
    hflip = (torch.rand(n, generator=gen) < 0.5).tolist() if "hflip" in cfg.ops else [0] * n
    vflip = (torch.rand(n, generator=gen) < 0.5).tolist() if "vflip" in cfg.ops else [0] * n
    turns = [0] * n
    if "rot90" in cfg.ops and x.shape[-1] == x.shape[-2]:
        turns = torch.randint(0, 4, (n,), generator=gen).tolist()
    out = torch.empty_like(x)
    for i in range(n):
        img = x[i]
        if hflip[i]:
            img = img.flip(-1)
        if vflip[i]:
            img = img.flip(-2)
        out[i] = torch.rot90(img, turns[i], dims=(-2, -1)) if turns[i] else img
    return out


def _affine(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """Random rotation and/or resized crop as ONE resampling (one interpolation blur, not two).

    The theta of ``affine_grid`` maps output to input in normalized coordinates: the output is
    rotated about its center (in pixel units, so non-square images are not sheared), then placed
    into the crop box ``center + scale * q``. Outside pixels are reflected, so no black corners.
    """
    n, _, h, w = x.shape
    angle = torch.zeros(n)
    if "rotate" in cfg.ops:
        angle = _uniform(n, -cfg.rotate_degrees, cfg.rotate_degrees, gen).deg2rad()
    sx, sy, cx, cy = torch.ones(n), torch.ones(n), torch.zeros(n), torch.zeros(n)
    if "resized_crop" in cfg.ops:
        area = _uniform(n, cfg.crop_min_scale, 1.0, gen)
        # Pixel aspect (crop w / crop h) for which the box still fits: w/h in [area, 1/area] * W/H.
        fit_lo, fit_hi = (area * w / h).log(), (w / (h * area)).log()
        lo = fit_lo.clamp(min=math.log(_CROP_RATIO[0]))
        hi = fit_hi.clamp(max=math.log(_CROP_RATIO[1]))
        ratio = (lo + (hi - lo) * torch.rand(n, generator=gen)).clamp(fit_lo, fit_hi).exp()
        sx = (area * ratio * h / w).sqrt().clamp(max=1.0)
        sy = (area / ratio * w / h).sqrt().clamp(max=1.0)
        cx = (1 - sx) * (2 * torch.rand(n, generator=gen) - 1)
        cy = (1 - sy) * (2 * torch.rand(n, generator=gen) - 1)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([sx * cos, -sx * sin * h / w, cx], dim=1),
            torch.stack([sy * sin * w / h, sy * cos, cy], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    out = F.grid_sample(
        x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _color_jitter(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation factors in [1 - jitter, 1 + jitter] per sample.

    Each step clamps to 0..255 like torchvision. Saturation blends with the grayscale image,
    so gray images (R == G == B) stay gray.
    """
    n = x.shape[0]
    j = cfg.jitter
    bright, contrast, sat = (_uniform(n, 1 - j, 1 + j, gen).view(n, 1, 1, 1) for _ in range(3))
    y = x.float().mul_(bright).clamp_(0, 255)
    mean = _gray(y).mean(dim=(-2, -1), keepdim=True)
    y.sub_(mean).mul_(contrast).add_(mean).clamp_(0, 255)
    gray = _gray(y)
    y.sub_(gray).mul_(sat).add_(gray).clamp_(0, 255)
    return y.round_().to(torch.uint8)


def _per_sample_policy(policy: v2.Transform) -> Callable[..., torch.Tensor]:
    """Run a torchvision policy per sample; it draws from the global RNG, seeded from ``gen``
    (visionpipe.core.runtime.global_rng_from)."""

    def apply(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
        with global_rng_from(gen):
            return torch.stack([policy(img) for img in x])

    return apply


def _erasing(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """With p=erasing_p per sample, fill one random box (2-20 % of the area) with noise."""
    n, c, h, w = x.shape
    chosen = torch.rand(n, generator=gen) < cfg.erasing_p
    k = int(chosen.sum())
    if k == 0:
        return x
    area = _uniform(k, *_ERASE_AREA, gen) * h * w
    ratio = _log_uniform(k, *_ERASE_RATIO, gen)
    bh = (area * ratio).sqrt().round().clamp(1, h)
    bw = (area / ratio).sqrt().round().clamp(1, w)
    top = (torch.rand(k, generator=gen) * (h - bh + 1)).floor()
    left = (torch.rand(k, generator=gen) * (w - bw + 1)).floor()
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= top.view(k, 1, 1))
        & (rows < (top + bh).view(k, 1, 1))
        & (cols >= left.view(k, 1, 1))
        & (cols < (left + bw).view(k, 1, 1))
    ).unsqueeze(1)
    noise = torch.randint(0, 256, (k, c, h, w), generator=gen, dtype=torch.uint8)
    out = x.clone()
    out[chosen] = torch.where(inside, noise, x[chosen])
    return out


# Each step returns a new tensor or its input unchanged, never writing into its input.
# Application order is this table's order (geometric, color, policy, erasing), whatever the
# order in params. Flips and rot90 share one copy per image, rotate and resized_crop one
# resampling step.
OPS: dict[str, Callable[[torch.Tensor, Augment, torch.Generator], torch.Tensor]] = {
    "hflip": _dihedral,
    "vflip": _dihedral,
    "rot90": _dihedral,
    "rotate": _affine,
    "resized_crop": _affine,
    "color_jitter": _color_jitter,
    "autoaugment": _per_sample_policy(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)),
    "trivialaugment": _per_sample_policy(v2.TrivialAugmentWide()),
    "erasing": _erasing,
}


def augment_batch(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """Randomly augment a uint8 (B, 3, H, W) batch per sample with the ops in ``cfg.ops``.

    Returns a new tensor (``x`` is the in-memory dataset and must stay pristine); an empty
    batch or empty op list returns ``x`` itself. All randomness comes from ``gen``.
    """
    unknown = [name for name in cfg.ops if name not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}, allowed: {', '.join(OPS)}")
    if not cfg.ops or x.shape[0] == 0:
        return x
    out = x
    for step in dict.fromkeys(fn for name, fn in OPS.items() if name in cfg.ops):
        out = step(out, cfg, gen)
    return x.clone() if out is x else out
