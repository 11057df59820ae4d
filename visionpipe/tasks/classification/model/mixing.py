"""MixUp and CutMix (``classification.mixup_alpha`` / ``cutmix_alpha``): each training batch
blended with itself shifted by one sample, its labels turned into the matching soft targets.

torchvision's v2 transforms do the blending; they draw from the global RNG, so each call runs
seeded from the run's generator (visionpipe.core.runtime.global_rng_from).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from visionpipe.core.image.task import BatchMixer
from visionpipe.core.runtime import global_rng_from


def batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> BatchMixer | None:
    """The mixer (class indices in, soft targets B x ``num_classes`` out) for these
    Beta(alpha, alpha) parameters (0: that one off); with both on, each batch takes one of them
    at random (the torchvision and timm reference recipes). None when both are off, so training
    sees the hard labels as before."""
    transforms = []
    if mixup_alpha > 0:
        transforms.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        transforms.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not transforms:
        return None
    mix = transforms[0] if len(transforms) == 1 else v2.RandomChoice(transforms)

    def apply(
        x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with global_rng_from(gen):
            return mix(x.float(), y)

    return apply
