"""A split's images as the per-image stages feed them: one call for train, val, test and the
INT8 calibration sample, so the data path, the cache check and the size travel together."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from visionpipe.core.cache import Images, cached_images
from visionpipe.core.params import Params


def split_images(params: Params, manifest: pd.DataFrame, size: int, desc: str) -> Images:
    """The manifest's images decoded at ``size`` px, through the shared decoded cache with
    the run's ``data.path`` and ``data.cache_check``."""
    return cached_images(
        Path(params.data.path),
        manifest["path"].tolist(),
        size,
        desc,
        check=params.data.cache_check,
    )
