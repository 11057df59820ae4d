"""Shared fixtures: tiny image folders written on the fly (no data is committed)."""

from __future__ import annotations

import json
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


LABELS = ["a", "b", "c"]
SIZE = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny untrained classifier (3 labels, 32 px) as model.pt, model.ts, model.onnx and
    model.json, for the tests of predict and simulate."""
    import torch

    from visionpipe.core import onnx as export
    from visionpipe.core.checkpoint import save_checkpoint
    from visionpipe.core.image.export import sidecar
    from visionpipe.core.models import build_model

    out = tmp_path_factory.mktemp("export")
    model = build_model("mobilenet_v3_small", 3, pretrained=False).model.eval()
    meta = {
        "task": "classification",
        "arch": "mobilenet_v3_small",
        "num_outputs": 3,
        "labels": LABELS,
        "image_size": SIZE,
        "dropout": 0.2,
    }
    save_checkpoint(out / "model.pt", model, meta)
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    export.export_torchscript(model, x, files["torchscript"])
    export.export_onnx(model, x, files["onnx"], opset=17)
    (out / "model.json").write_text(json.dumps(sidecar(meta, files, {"meaning": "logits"})))
    return out


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


def write_huge_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A small PNG file whose header claims ``width`` x ``height`` pixels: beyond Pillow's
    decompression-bomb limit, so opening it fails the way a real huge image does."""
    import struct
    import zlib

    write_image(path, size=(4, 4))
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")  # length (4) | "IHDR" | width, height, ... (13) | crc (4)
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path
