"""Images decoded once into memory at training resolution, normalization, batch indices.

Decoding and resizing PNGs every epoch is the slow part of a small model's epoch on a CPU, so
each split is decoded once into a uint8 tensor (cached on disk by visionpipe.core.cache) and
augmented as whole batches (visionpipe.core.augment).
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from visionpipe.core import shards
from visionpipe.core.errors import DataError

if TYPE_CHECKING:  # torch is imported where tensors are made: predict on ONNX runs without it
    import torch

log = logging.getLogger(__name__)

#: the files every reader takes for images (by extension, any case)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


ORIENTATION_TAG = 0x0112  # EXIF
#: the reason given for an image beyond ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb)
TOO_LARGE = "too large to decode"
#: what transparent pixels are composited on (stated in the export's model.json)
BACKGROUND = (0, 0, 0)
#: how files become the model's input, as the export's model.json states it for consumers
DECODING = {
    "orientation": "EXIF orientation applied",
    "bit_depth": "16-bit samples scaled to 8 bits",
    "alpha": f"composited on RGB {list(BACKGROUND)}",
}
#: modes holding more than 8 bits per sample (16-bit PNG and TIFF, float TIFF): scaled down
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit or float image as 8-bit grayscale (PIL's own conversion clips, so a 16-bit
    photo would turn almost all white): integers 0..65535 mapped linearly onto 0..255; floats
    taken as 0..1 when none exceeds 1, else as 0..255."""
    wide = np.asarray(img, dtype=np.float64)
    if img.mode != "F":
        wide = wide / 257.0
    elif wide.size and np.nanmax(wide) <= 1.0:
        wide = wide * 255.0
    eight = np.clip(np.rint(np.nan_to_num(wide)), 0, 255).astype(np.uint8)
    return Image.fromarray(eight, mode="L")


def as_rgb(img: Image.Image) -> Image.Image:
    """The picture as displayed, in 8-bit RGB: EXIF orientation applied (as CVAT and COCO
    annotate it), 16-bit samples scaled to 8 bits, transparency (an alpha channel, or a
    transparent colour or palette entry) composited on :data:`BACKGROUND` (what would
    otherwise lie under it is arbitrary)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_MODES:
        img = _eight_bit(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def displayed_size(img: Image.Image) -> tuple[int, int]:
    """Width and height after the EXIF orientation, from the header (nothing decoded). Pillow's
    TIFF reader already reports the oriented size."""
    orientation = img.getexif().get(ORIENTATION_TAG, 1)
    if img.format == "TIFF" or orientation not in (5, 6, 7, 8):
        return img.width, img.height
    return img.height, img.width


# open_checked refuses such an image itself (one line, a counted skip): no second warning
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class TooLarge(DataError):
    """An image beyond the decoder's pixel limit: skipped and counted, like a broken file."""


def open_checked(source: Any) -> tuple[Image.Image, str]:
    """The image (a path or encoded bytes) decoded by :func:`as_rgb`, and the file's own mode.

    DataError naming the file when it cannot be decoded; :class:`TooLarge` when it has more
    pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 million; a guard against decompression
    bombs, checked on the header before anything is decoded)."""
    try:
        # a path, or for a member of a tar shard its bytes
        opened = shards.open_file(source) if isinstance(source, str | Path) else source
        with Image.open(opened) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise TooLarge(
                    f"{source}: {TOO_LARGE} ({img.width} x {img.height} pixels; "
                    f"PIL.Image.MAX_IMAGE_PIXELS is {limit})"
                )
            return as_rgb(img), img.mode
    except Image.DecompressionBombError as exc:  # over twice the limit: refused by Image.open
        raise TooLarge(f"{source}: {TOO_LARGE} ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{source}: cannot decode image ({exc})") from exc


def open_rgb(source: Any) -> Image.Image:
    """:func:`open_checked`'s decoded image: what every reader of images uses."""
    return open_checked(source)[0]


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode to RGB (grayscale replicated, so RGB-pretrained backbones apply) at size x size."""
    img = open_rgb(path).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def iter_mapped(
    fn: Callable[..., np.ndarray],
    items: Sequence[tuple],
    desc: str = "decoding",
    workers: int = 4,
    window: int = 64,
) -> Iterator[np.ndarray]:
    """``fn(*item)`` for each item, in order, by a thread pool that runs at most ``window``
    items ahead, so only that many decoded images are ever held."""
    pending: deque = deque()
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(items), desc=desc, unit="img") as bar,
    ):
        for item in items:
            pending.append(pool.submit(fn, *item))
            if len(pending) >= window:
                bar.update()
                yield pending.popleft().result()
        while pending:
            bar.update()
            yield pending.popleft().result()


def iter_decoded(
    root: str | Path,
    paths: Sequence[str],
    size: int,
    desc: str = "decoding",
    workers: int = 4,
) -> Iterator[np.ndarray]:
    """Each image decoded at size x size (3 x size x size uint8), in order."""
    root = Path(root)
    items = [(root / rel, size) for rel in paths]
    return iter_mapped(lambda path, size: decode_image(path, size), items, desc, workers)


def load_images(
    root: str | Path,
    paths: Sequence[str],
    size: int,
    desc: str = "decoding",
    workers: int = 4,
) -> torch.Tensor:
    """All images of a split as a uint8 tensor (N, 3, size, size) in memory."""
    import torch

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, arr in enumerate(iter_decoded(root, paths, size, desc=desc, workers=workers)):
        out[i] = torch.from_numpy(arr)
    return out


def fit_scale(width: int, height: int, min_size: int, max_size: int) -> float:
    """The factor torchvision's GeneralizedRCNNTransform resizes by, capped at 1."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return min(scale, 1.0)


def decode_scaled_array(source: Any, scale: float | Callable[[int, int], float]) -> np.ndarray:
    """RGB uint8 array (3 x H x W) of the image (a path or encoded bytes) resized by ``scale``,
    or by ``scale(width, height)`` when it depends on the image's (displayed) size."""
    img = open_rgb(source)
    if callable(scale):
        scale = scale(img.width, img.height)
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_scaled(path: Path, scale: float) -> torch.Tensor:
    """RGB uint8 tensor (3 x H x W) of the image resized by ``scale``."""
    import torch

    return torch.from_numpy(decode_scaled_array(path, scale))
