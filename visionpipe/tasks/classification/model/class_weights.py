"""Per-class loss weights: none, balanced from the train split, or given per class in params.

Rare classes (e.g. the "likely defective" grade, 4% of the cells) are otherwise nearly ignored
by a plain cross-entropy; ``balanced`` weighs each class by n / (k * n_class) as scikit-learn does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from visionpipe.core.errors import UserError


def class_weights(setting: Any, labels: list[str], targets: torch.Tensor) -> torch.Tensor | None:
    """Weights in class-index order, or None for an unweighted loss.

    A mapping names classes by their label; classes it leaves out keep weight 1.
    """
    if setting == "none":
        return None
    ids = np.arange(len(labels))
    if setting == "balanced":
        present = np.unique(targets.numpy())
        missing = [labels[i] for i in ids if i not in present]
        if missing:
            raise UserError(
                f"classification.class_weights: balanced needs every class in the train split; "
                f"{missing[0]!r} has no training images"
            )
        weights = compute_class_weight("balanced", classes=ids, y=targets.numpy())
        return torch.tensor(weights, dtype=torch.float32)
    unknown = sorted(set(setting) - set(labels))
    if unknown:
        raise UserError(
            f"classification.class_weights: {', '.join(map(repr, unknown))} not a class; "
            f"classes: {', '.join(labels)}"
        )
    return torch.tensor([float(setting.get(name, 1.0)) for name in labels], dtype=torch.float32)
