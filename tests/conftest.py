"""Shared fixtures: tiny image folders written on the fly (no data is committed)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# decoded-image cache of every test run (and the dvc runs they start) kept out of ~/.cache
os.environ["VISIONPIPE_CACHE"] = tempfile.mkdtemp(prefix="visionpipe-test-cache-")


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (24, 20), mode: str = "L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    arr = np.clip(rng.normal(value, 10, shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr, mode=None).convert(mode).save(path)
    return path


def make_class_folders(root: Path, counts: dict[str, int], prefix: str = "") -> Path:
    for i, (label, n) in enumerate(counts.items()):
        for j in range(n):
            write_image(root / prefix / label / f"{label}_{j:03d}.png", value=40 + 60 * i + j)
    return root


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "flat", {"cat": 10, "dog": 10, "owl": 10})


@pytest.fixture
def python_bin() -> Path:
    return Path(sys.executable).parent


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory) -> Path:
    """The tiny classification pipeline (tests/e2e.py TINY) built once by the real `dvc repro`
    and committed. Tests only read it; a test that changes anything works on a copy
    (tests.e2e.copy_built), where DVC reruns only what the change reaches."""
    from tests.e2e import TINY, build

    return build(tmp_path_factory.mktemp("built"), TINY)
