"""A split's images as the per-image stages feed them: one call for train, val, test and the
INT8 calibration sample, so the data path, the cache check and the size travel together."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from visionpipe.core.cache import Images, cached_images
from visionpipe.core.manifests import read_split
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


def calibration_images(params: Params, splits: str | Path, size: int) -> Images:
    """The INT8 calibration sample: ``export.calibration_samples`` train images drawn with seed
    0, so the export stage and benchmarks/int8_variants.py quantize from the same images."""
    train = read_split(splits, "train")
    sample = train.sample(min(params.export.calibration_samples, len(train)), random_state=0)
    return split_images(params, sample, size, "calibration")
