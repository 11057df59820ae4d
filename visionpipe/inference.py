"""Loading an exported model (ONNX, TorchScript) or a checkpoint, and predicting on image files.

Shared by the `predict` and `simulate` commands. A model is used with the metadata written next
to it (model.json from the export stage, or the checkpoint's own), so the consumer never has to
know the class index, input size or normalization.
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
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from visionpipe import export
from visionpipe.checkpoint import load_checkpoint
from visionpipe.data import decode_image
from visionpipe.errors import DataError, UserError
from visionpipe.sources.folder import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from visionpipe.tasks import Task

SIDECAR = "model.json"
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


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
    path: Path
    meta: dict[str, Any]
    task: Task
    run: Callable[[torch.Tensor], torch.Tensor]

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])


def read_sidecar(path: Path) -> dict[str, Any]:
    side = path.parent / SIDECAR
    if not side.is_file():
        raise UserError(f"{side}: missing; an exported model needs the {SIDECAR} written with it")
    return json.loads(side.read_text())


def load_predictor(path: str | Path, threads: int, expect_task: str | None = None) -> Predictor:
    """A ready-to-run model from a .onnx, .ts or .pt (checkpoint, loaded weights_only) file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        model, meta = load_checkpoint(path)
        run = torch.no_grad()(model)
    elif suffix == ".ts":
        meta = read_sidecar(path)
        run = functools.partial(export.run_torchscript, export.load_torchscript(path))
    elif suffix == ".onnx":
        meta = read_sidecar(path)
        session = export.onnx_session(path, threads)
        fixed = export.onnx_input_size(session)
        if fixed is not None and fixed != meta["image_size"]:
            raise UserError(
                f"{path}: the model takes {fixed}x{fixed} images but {SIDECAR} says "
                f"{meta['image_size']}; export them together"
            )
        run = functools.partial(export.run_onnx, session)
    else:
        raise UserError(f"{path}: unknown model format {suffix!r}; expected .onnx, .ts or .pt")
    from visionpipe.tasks import TASKS, get_task  # the tasks' stage code imports this module
    from visionpipe.tasks.image import ImageTask

    task_name = meta.get("task")
    if task_name not in TASKS:
        raise UserError(f"{path}: a {task_name!r} model; this version handles {', '.join(TASKS)}")
    if expect_task and task_name != expect_task:
        raise UserError(f"{path}: a {task_name} model, but base.task is {expect_task}")
    task = get_task(task_name)
    if not isinstance(task, ImageTask):
        raise UserError(
            f"{path}: a {task_name} model; these commands take one-output-per-image models "
            "(classification, regression); a detector runs in the simulate stage"
        )
    task.load_meta(meta)
    size = int(meta["image_size"])
    run(torch.zeros(1, 3, size, size))  # warm-up: the first call pays for allocation and setup
    return Predictor(path, meta, task, run)


def list_images(source: str | Path, root: str | Path = ".") -> list[Path]:
    """One image file, every image file (by extension) under a folder (sorted), or the ``path``
    column of a manifest CSV (relative to ``root``)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
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
    """One input to predict on: a decoded image, or why it could not be decoded."""

    name: str
    image: torch.Tensor | None  # (1, 3, size, size) float, RGB 0..255
    error: str | None = None


def _decode(source: Path | io.BytesIO, size: int, name: str) -> Frame:
    try:
        return Frame(name, torch.from_numpy(decode_image(source, size))[None].float())
    except DataError as exc:
        return Frame(name, None, f"{name}: cannot decode image ({exc.__cause__})")


def image_frames(paths: Iterable[Path], size: int) -> Iterator[Frame]:
    for path in paths:
        yield _decode(path, size, str(path))


def video_frames(path: Path, size: int) -> Iterator[Frame]:
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
                yield _decode(io.BytesIO(buffer.tobytes()), size, name)
            else:
                yield Frame(name, None, f"{name}: cannot decode image (frame not encodable)")
            index += 1
    finally:
        capture.release()


def open_frames(source: str | Path, size: int, root: str | Path = ".") -> Iterator[Frame]:
    """Frames from a video file, or from the images :func:`list_images` finds."""
    source = Path(source)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        if not source.is_file():
            raise UserError(f"{source}: no such video file")
        return video_frames(source, size)
    return image_frames(list_images(source, root), size)


def predict_frame(predictor: Predictor, frame: Frame, threshold: float) -> dict[str, Any]:
    """One JSON-ready record: the prediction and its latency, or the reason it failed."""
    record: dict[str, Any] = {"path": frame.name}
    if frame.image is None:
        record["error"] = frame.error
        return record
    start = time.perf_counter()
    outputs = predictor.run(frame.image)
    record["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
    record.update(predictor.task.prediction_records(outputs, predictor.meta["labels"])[0])
    if "confidence" in record:
        record["low_confidence"] = bool(record["confidence"] < threshold)
    return record
