"""Decoded images cached on disk at training resolution, keyed by the files' content.

Decoding and resizing every image is the slowest part of starting a stage on a CPU, and train,
evaluate and export all need the same tensors. The cache key hashes the decoder version, the
image size and each file's relative path and bytes, so a changed split, image or size misses the
cache and nothing stale is ever read. Experiment workspaces (``dvc exp run --temp``, the queue)
share it because the key does not depend on where the data folder lives.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from visionpipe.core.images import load_images
from visionpipe.core.io import atomic_path

log = logging.getLogger(__name__)

# bump when decode_image's output changes (2: EXIF orientation, 16-bit scaling, alpha)
DECODER_VERSION = "rgb-bilinear-2"
KEEP_ENTRIES = 16  # oldest entries beyond this are removed


def cache_dir() -> Path:
    """``$VISIONPIPE_CACHE``, else ``$XDG_CACHE_HOME/visionpipe``, else ``~/.cache/visionpipe``."""
    if os.environ.get("VISIONPIPE_CACHE"):
        return Path(os.environ["VISIONPIPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "visionpipe"


def cache_key(root: Path, paths: Sequence[str], size: int) -> str:
    digest = hashlib.sha256(f"{DECODER_VERSION}\n{size}\n".encode())
    for rel in paths:
        digest.update(rel.encode() + b"\0")
        try:
            digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
        except OSError:
            digest.update(b"missing")  # load_images reports it with the path
    return digest.hexdigest()[:32]


def cached_images(
    root: str | Path,
    paths: Sequence[str],
    size: int,
    desc: str = "decoding",
    directory: Path | None = None,
) -> torch.Tensor:
    """``load_images(root, paths, size)``, read from the cache when the same files were seen."""
    root, directory = Path(root), directory or cache_dir()
    path = directory / f"{cache_key(root, paths, size)}.npy"
    if path.is_file():
        try:
            array = np.load(path)
            if array.shape == (len(paths), 3, size, size) and array.dtype == np.uint8:
                os.utime(path)  # most recently used
                log.info("%s: %d images from the cache %s", desc, len(paths), path)
                return torch.from_numpy(array)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
    images = load_images(root, paths, size, desc=desc)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images.numpy())
        _prune(directory)
    except OSError as exc:  # a read-only or full disk only costs speed
        log.warning("cannot write the image cache in %s (%s)", directory, exc)
    return images


def _prune(directory: Path, keep: int = KEEP_ENTRIES) -> None:
    entries = sorted(directory.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        old.unlink(missing_ok=True)
