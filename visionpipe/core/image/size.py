"""The pixels a per-image model trains at: ``model.image_size``, or with ``auto`` the train
images' own size, so small images are not upscaled (48 px images at 160 px cost about ten
times the compute and gain nothing)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from visionpipe.core.errors import UserError

#: auto sizes are rounded down to a multiple of this (never above the median)
STEP = 8


def auto_image_size(manifest: pd.DataFrame, smallest: int, largest: int) -> int:
    """The median of the images' shorter sides, rounded down to a multiple of 8 and clamped
    to ``[smallest, largest]``; from the manifest's ``width`` and ``height`` (prepare records
    them), so no image is opened."""
    if manifest.empty or not {"width", "height"} <= set(manifest.columns):
        raise UserError(
            "model.image_size: auto needs the train split's image sizes (width, height in "
            "its manifest); rerun prepare and split, or give a number of pixels"
        )
    short = pd.concat([manifest["width"], manifest["height"]], axis=1).min(axis=1)
    median = int(short.astype(float).median())
    return max(smallest, min(largest, median // STEP * STEP))


def image_size(model: Any, train_manifest: pd.DataFrame) -> int:
    """``model.image_size`` resolved against the train split (see :func:`auto_image_size`)."""
    if model.image_size != "auto":
        return int(model.image_size)
    smallest, largest = model.auto_size_range
    return auto_image_size(train_manifest, smallest, largest)


def progressive_size(epoch: int, epochs: int, start: int, final: int) -> int:
    """The pixels epoch ``epoch`` (0-based) of ``epochs`` trains at when training starts at
    ``start`` px and rises linearly to ``final`` (``model.image_size``) at the last epoch,
    in steps of 8 (``start`` 0: ``final`` throughout). Small images early are cheap and
    learn the coarse patterns; the last epochs, at a low learning rate, adapt to the size
    evaluate and export run at (validation always runs there)."""
    if start <= 0 or start >= final or epochs <= 1 or epoch >= epochs - 1:
        return final
    size = start + (final - start) * epoch / (epochs - 1)
    return min(final, max(start, int(size) // STEP * STEP))


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 N x C x H x W batch resized to ``size`` x ``size`` (bilinear, antialiased, as
    the decoded cache resizes), still uint8 so the augmentations see what they always do."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)
