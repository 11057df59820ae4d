"""Images decoded once into memory at training resolution, normalization, batch indices.

Decoding and resizing PNGs every epoch is the slow part of a small model's epoch on a CPU, so
each split is decoded once into a uint8 tensor (cached on disk by visionpipe.core.cache) and
augmented as whole batches (visionpipe.core.augment).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from visionpipe.core.errors import DataError

if TYPE_CHECKING:  # torch is imported where tensors are made: predict on ONNX runs without it
    import torch

log = logging.getLogger(__name__)

#: the files every reader takes for images (by extension, any case)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode to RGB (grayscale replicated, so RGB-pretrained backbones apply) at size x size."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from exc


def load_images(
    root: str | Path,
    paths: Sequence[str],
    size: int,
    desc: str = "decoding",
    workers: int = 4,
) -> torch.Tensor:
    """All images of a split as a uint8 tensor (N, 3, size, size)."""
    import torch

    root = Path(root)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = pool.map(lambda p: decode_image(root / p, size), paths)
        for i, arr in enumerate(tqdm(arrays, total=len(paths), desc=desc, unit="img")):
            out[i] = torch.from_numpy(arr)
    return out


def fit_scale(width: int, height: int, min_size: int, max_size: int) -> float:
    """The factor torchvision's GeneralizedRCNNTransform resizes by, capped at 1."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return min(scale, 1.0)


def decode_scaled_array(source: Any, scale: float | Callable[[int, int], float]) -> np.ndarray:
    """RGB uint8 array (3 x H x W) of the image (a path or encoded bytes) resized by ``scale``,
    or by ``scale(width, height)`` when it depends on the image's size."""
    try:
        with Image.open(source) as img:
            img = img.convert("RGB")
            if callable(scale):
                scale = scale(img.width, img.height)
            if scale < 1.0:
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: cannot decode image ({exc})") from exc


def decode_scaled(path: Path, scale: float) -> torch.Tensor:
    """RGB uint8 tensor (3 x H x W) of the image resized by ``scale``."""
    import torch

    return torch.from_numpy(decode_scaled_array(path, scale))
