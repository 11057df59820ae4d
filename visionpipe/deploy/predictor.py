"""Loading an exported model (ONNX, TorchScript) or a checkpoint, and predicting on image files.

Shared by the `predict` and `simulate` commands and the simulate stage. A model is used with the
metadata written next to it (model.json from the export stage, or the checkpoint's own), so the
consumer never has to know the class index, input size, normalization or output meaning.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from visionpipe.core.errors import DataError, UserError
from visionpipe.core.images import IMAGE_EXTENSIONS, decode_image, fit_scale
from visionpipe.core.runtimes import (
    SIDECAR,
    load_torchscript,
    onnx_input_size,
    onnx_session,
    run_onnx,
    run_onnx_detector,
    run_torchscript,
    run_torchscript_detector,
)
from visionpipe.deploy.decode import DECODERS

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}

#: what loads each format of each kind of model: (path, threads) -> run(image batch)
Loader = Callable[[Path, int], Callable[[torch.Tensor], Any]]
IMAGE_LOADERS: dict[str, Loader] = {
    ".ts": lambda path, _: functools.partial(run_torchscript, load_torchscript(path)),
    ".onnx": lambda path, threads: functools.partial(run_onnx, onnx_session(path, threads)),
}
DETECTOR_LOADERS: dict[str, Loader] = {
    ".ts": lambda path, _: functools.partial(run_torchscript_detector, load_torchscript(path)),
    ".onnx": lambda path, threads: functools.partial(
        run_onnx_detector, onnx_session(path, threads)
    ),
}


def cli_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The arguments the predict and simulate commands share: the model and the threads."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="model.onnx, model.ts (with model.json beside) or model.pt")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    return parser


@dataclass
class Predictor:
    """A loaded model: ``run`` maps one prepared image (1 x 3 x H x W float) to raw outputs,
    ``decode`` those to prediction records, ``prepare`` a decoded file to the model's input."""

    path: Path
    meta: dict[str, Any]
    run: Callable[[torch.Tensor], Any]

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def detector(self) -> bool:
        return self.task == "detection"

    def decode(self, outputs: Any) -> list[dict[str, Any]]:
        return DECODERS[self.task](outputs, self.meta)

    def prepare(self, source: Path | io.BytesIO) -> torch.Tensor:
        """A file (or encoded bytes) as the model's input: square resize for a per-image
        model, aspect-kept resize into the exported size and zero padding for a detector."""
        if not self.detector:
            size = int(self.meta["image_size"])
            return torch.from_numpy(decode_image(source, size))[None].float()
        height, width = self.meta["image_size"]
        return letterbox(source, height, width)[None].float()


def letterbox(source: Path | io.BytesIO, height: int, width: int) -> torch.Tensor:
    """RGB uint8 ``3 x height x width``: the image scaled (aspect kept) to fit, padded with 0
    on the right and bottom, as the detector was exported for."""
    try:
        with Image.open(source) as img:
            img = img.convert("RGB")
            scale = fit_scale(img.width, img.height, height, width)
            if scale < 1.0 or img.size != (width, height):
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(size, Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: cannot decode image ({exc})") from exc
    out = torch.zeros((3, height, width), dtype=torch.uint8)
    h, w = min(height, arr.shape[1]), min(width, arr.shape[2])
    out[:, :h, :w] = torch.from_numpy(arr[:, :h, :w].copy())
    return out


def read_sidecar(path: Path) -> dict[str, Any]:
    side = path.parent / SIDECAR
    if not side.is_file():
        raise UserError(f"{side}: missing; an exported model needs the {SIDECAR} written with it")
    return json.loads(side.read_text())


def _checkpoint(path: Path) -> tuple[Callable[[torch.Tensor], Any], dict[str, Any]]:
    from visionpipe.core.checkpoint import load_checkpoint  # builds the network: timm, torchvision

    model, meta = load_checkpoint(path)
    return torch.no_grad()(model), meta


def load_predictor(path: str | Path, threads: int, expect_task: str | None = None) -> Predictor:
    """A ready-to-run model from a .onnx, .ts or .pt (a per-image checkpoint, weights only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        run, meta = _checkpoint(path)
    elif suffix in IMAGE_LOADERS:
        meta = read_sidecar(path)
        loaders = DETECTOR_LOADERS if meta.get("task") == "detection" else IMAGE_LOADERS
        run = loaders[suffix](path, threads)
    else:
        raise UserError(f"{path}: unknown model format {suffix!r}; expected .onnx, .ts or .pt")
    task = meta.get("task")
    if task not in DECODERS:
        raise UserError(f"{path}: a {task!r} model; this version handles {', '.join(DECODERS)}")
    if expect_task and task != expect_task:
        raise UserError(f"{path}: a {task} model, but base.task is {expect_task}")
    predictor = Predictor(path, meta, run)
    if suffix == ".onnx" and not predictor.detector:
        fixed = onnx_input_size(run.args[0])
        if fixed is not None and fixed != meta["image_size"]:
            raise UserError(
                f"{path}: the model takes {fixed}x{fixed} images but {SIDECAR} says "
                f"{meta['image_size']}; export them together"
            )
    if predictor.detector:
        height, width = meta["image_size"]
        run(torch.zeros(1, 3, height, width))  # warm-up: allocation and setup
    else:
        size = int(meta["image_size"])
        run(torch.zeros(1, 3, size, size))
    return predictor


def list_images(source: str | Path, root: str | Path = ".") -> list[Path]:
    """One image file, every image file (by extension) under a folder (sorted), or the ``path``
    column of a manifest CSV (relative to ``root``)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        import pandas as pd  # only for a manifest: predict on images starts without it

        paths = pd.read_csv(source, keep_default_na=False).get("path")
        if paths is None or paths.empty:
            raise UserError(f"{source}: a frames manifest needs a non-empty 'path' column")
        return [Path(root) / p for p in paths]
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UserError(f"{source}: no such file or folder")
    files = sorted(
        p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise UserError(f"{source}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


@dataclass
class Frame:
    """One input to predict on: a prepared image, or why it could not be decoded."""

    name: str
    image: torch.Tensor | None  # (1, 3, H, W) float, RGB 0..255
    error: str | None = None


def _decode(predictor: Predictor, source: Path | io.BytesIO, name: str) -> Frame:
    try:
        return Frame(name, predictor.prepare(source))
    except DataError as exc:
        return Frame(name, None, f"{name}: cannot decode image ({exc.__cause__})")


def image_frames(paths: Iterable[Path], predictor: Predictor) -> Iterator[Frame]:
    for path in paths:
        yield _decode(predictor, path, str(path))


def video_frames(path: Path, predictor: Predictor) -> Iterator[Frame]:
    """Frames of a video file through OpenCV, decoded and resized like image files."""
    try:
        import cv2
    except ImportError as exc:
        raise UserError(
            f"{path}: reading video needs OpenCV: pip install opencv-python-headless"
        ) from exc
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"{path}: cannot open the video")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            name = f"{path}#{index}"
            encoded, buffer = cv2.imencode(".bmp", bgr)  # lossless; reuses the one decode path
            if encoded:
                yield _decode(predictor, io.BytesIO(buffer.tobytes()), name)
            else:
                yield Frame(name, None, f"{name}: cannot decode image (frame not encodable)")
            index += 1
    finally:
        capture.release()


def open_frames(
    source: str | Path, predictor: Predictor, root: str | Path = "."
) -> Iterator[Frame]:
    """Frames from a video file, or from the images :func:`list_images` finds."""
    source = Path(source)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        if not source.is_file():
            raise UserError(f"{source}: no such video file")
        return video_frames(source, predictor)
    return image_frames(list_images(source, root), predictor)


def predict_frame(predictor: Predictor, frame: Frame, threshold: float) -> dict[str, Any]:
    """One JSON-ready record: the prediction and its latency, or the reason it failed."""
    record: dict[str, Any] = {"path": frame.name}
    if frame.image is None:
        record["error"] = frame.error
        return record
    start = time.perf_counter()
    outputs = predictor.run(frame.image)
    record["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
    record.update(predictor.decode(outputs)[0])
    if "confidence" in record:
        record["low_confidence"] = bool(record["confidence"] < threshold)
    return record
