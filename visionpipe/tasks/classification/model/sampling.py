"""How often each training image is drawn (``classification.sampling``).

The alternative to class weights in the loss: instead of scaling a rare class's loss, its
images are drawn more often, so every batch sees the rare grades while the loss stays a plain
average. ``balanced`` draws every class equally often; ``sqrt`` goes half way (each class in
proportion to the square root of its count); ``shuffle`` goes through every image once an
epoch, as without this setting.
"""

from __future__ import annotations

import torch


def sample_weights(setting: str, targets: torch.Tensor) -> torch.Tensor | None:
    """One draw weight per training sample (class index ``targets``), or None to shuffle.

    An image of a class with ``c`` training images weighs ``1 / c`` (``balanced``) or
    ``1 / sqrt(c)`` (``sqrt``), so a class's share of the draws is 1 / k or in proportion to
    ``sqrt(c)``; classes absent from the train split are never drawn.
    """
    if setting == "shuffle" or len(targets) == 0:
        return None
    counts = torch.bincount(targets).double()[targets]
    return 1.0 / (counts if setting == "balanced" else counts.sqrt())
