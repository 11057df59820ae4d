"""Images decoded once into memory at training resolution, normalization, batch indices.

Decoding and resizing PNGs every epoch is the slow part of a small model's epoch on a CPU, so
each split is decoded once into a uint8 tensor (cached on disk by visionpipe.cache) and
augmented as whole batches (visionpipe.augment).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from visionpipe.errors import DataError

log = logging.getLogger(__name__)

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
    root = Path(root)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = pool.map(lambda p: decode_image(root / p, size), paths)
        for i, arr in enumerate(tqdm(arrays, total=len(paths), desc=desc, unit="img")):
            out[i] = torch.from_numpy(arr)
    return out


class Normalizer(torch.nn.Module):
    """uint8 (or float 0..255) batch -> normalized float, as the exported models expect."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def batches(
    n: int, batch_size: int, shuffle: bool = False, gen: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples (a permutation from ``gen`` when shuffling)."""
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
