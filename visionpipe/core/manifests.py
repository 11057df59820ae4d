"""Reading the split manifests written by the split stage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from visionpipe.core.errors import UserError

SPLITS = ("train", "val", "test")


def read_split(splits_dir: str | Path, name: str) -> pd.DataFrame:
    path = Path(splits_dir) / f"{name}.csv"
    if not path.is_file():
        raise UserError(f"{path}: split manifest not found (run the split stage)")
    return pd.read_csv(path, keep_default_na=False)


def read_splits(splits_dir: str | Path) -> pd.DataFrame:
    """All splits in one frame with a ``split`` column."""
    parts = [read_split(splits_dir, name).assign(split=name) for name in SPLITS]
    return pd.concat(parts, ignore_index=True)


def fingerprint(splits_dir: str | Path) -> str:
    """Short hash of the split manifests: which images, labels and splits a model saw."""
    digest = hashlib.sha256()
    for name in SPLITS:
        path = Path(splits_dir) / f"{name}.csv"
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()[:16]
