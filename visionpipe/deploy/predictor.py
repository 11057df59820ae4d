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

from visionpipe.core import runtimes
from visionpipe.core.errors import DataError, UserError, first_line
from visionpipe.core.images import IMAGE_EXTENSIONS, decode_image, decode_scaled_array, fit_scale
from visionpipe.core.runtimes import SIDECAR, onnx_input_size, onnx_session
from visionpipe.deploy.decode import DECODERS, DEFAULT_THRESHOLD, model_threshold

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}

#: a loaded model as a function of one float32 image batch (a NumPy array)
Run = Callable[[np.ndarray], Any]


def _torch_runner(run: Callable[[Any], Any]) -> Run:
    """A TorchScript or PyTorch model behind the same array interface (torch loads only here)."""
    import torch

    return lambda x: run(torch.from_numpy(np.ascontiguousarray(x)))


#: what loads each format of each kind of model: (path, threads) -> run(image batch)
Loader = Callable[[Path, int], Run]
IMAGE_LOADERS: dict[str, Loader] = {
    ".ts": lambda path, _: _torch_runner(
        functools.partial(runtimes.run_torchscript, runtimes.load_torchscript(path))
    ),
    ".onnx": lambda path, threads: functools.partial(
        runtimes.run_onnx_array, onnx_session(path, threads)
    ),
}
DETECTOR_LOADERS: dict[str, Loader] = {
    ".ts": lambda path, _: _torch_runner(
        functools.partial(
            runtimes.run_torchscript_detector, runtimes.load_torchscript(path, detector=True)
        )
    ),
    ".onnx": lambda path, threads: functools.partial(
        runtimes.run_onnx_detector_array, onnx_session(path, threads)
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
    run: Run

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def detector(self) -> bool:
        return self.task == "detection"

    @property
    def threshold(self) -> float:
        """Confidence below which a prediction is flagged low: model.json's resolved
        ``threshold`` (a target such as "flag the least confident 10%", resolved on the
        validation split), else :data:`DEFAULT_THRESHOLD`."""
        found = model_threshold(self.meta)
        return DEFAULT_THRESHOLD if found is None else found

    def decode(self, outputs: Any, scale: float = 1.0) -> list[dict[str, Any]]:
        return DECODERS[self.task](outputs, self.meta, scale)

    def prepare(self, source: Path | io.BytesIO) -> tuple[np.ndarray, float]:
        """A file (or encoded bytes) as the model's input, ``1 x 3 x H x W`` float32 RGB
        0..255, and the factor it was resized by: square resize for a per-image model; for a
        detector the aspect-kept resize into the exported size, zero-padded on the right and
        bottom (boxes divided by the factor are in the file's pixels)."""
        if not self.detector:
            size = int(self.meta["image_size"])
            return decode_image(source, size)[None].astype(np.float32), 1.0
        height, width = self.meta["image_size"]
        image, scale = letterbox(source, height, width)
        return image[None].astype(np.float32), scale


def letterbox(source: Path | io.BytesIO, height: int, width: int) -> tuple[np.ndarray, float]:
    """RGB uint8 ``3 x height x width``: the image scaled (aspect kept) to fit, padded with 0
    on the right and bottom, as the detector was exported for; and the scale factor."""
    used: list[float] = []

    def scale(w: int, h: int) -> float:
        used.append(fit_scale(w, h, height, width))
        return used[-1]

    image = decode_scaled_array(source, scale)
    out = np.zeros((3, height, width), dtype=np.uint8)
    h, w = min(height, image.shape[1]), min(width, image.shape[2])
    out[:, :h, :w] = image[:, :h, :w]
    return out, used[-1]


#: what every model.json holds, whatever the task
SIDECAR_KEYS = ("task", "labels", "image_size")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The model.json beside an exported model; one line naming it when missing or unusable."""
    side = path.parent / SIDECAR
    if not side.is_file():
        raise UserError(f"{side}: missing; an exported model needs the {SIDECAR} written with it")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{side}: not readable JSON ({exc}); export the model again") from None
    missing = [k for k in SIDECAR_KEYS if k not in meta] if isinstance(meta, dict) else SIDECAR_KEYS
    if missing:
        raise UserError(f"{side}: not an export's {SIDECAR} (no {', '.join(missing)})")
    return meta


def _load(loader: Loader, path: Path, threads: int) -> Run:
    """``loader(path, threads)``; a file that is cut short or not a model is one line."""
    try:
        return loader(path, threads)
    except Exception as exc:  # noqa: BLE001 - whatever the runtime says, the file is unusable
        raise UserError(
            f"{path}: cannot load the model ({first_line(exc)}); export it again"
        ) from None


def _check_outputs(path: Path, run: Run, meta: dict[str, Any]) -> None:
    """An ONNX file and its model.json describe the same kind of model (a detector's five
    outputs or a plain detector's three, or one output per image), else the size and output
    errors that follow mislead."""
    names = tuple(o.name for o in run.args[0].get_outputs())
    detector = meta["task"] == "detection"
    if detector and names in (runtimes.DETECTION_OUTPUTS, runtimes.PLAIN_DETECTION_OUTPUTS):
        with_states = names == runtimes.DETECTION_OUTPUTS
        if with_states != bool(meta.get("states")):
            said = "states" if meta.get("states") else "no states (a plain detector)"
            raise UserError(
                f"{path}: {SIDECAR} describes a detector with {said}, but the model's outputs "
                f"are {', '.join(names)}; keep each model with the {SIDECAR} exported with it"
            )
        return
    if detector != (names in (runtimes.DETECTION_OUTPUTS, runtimes.PLAIN_DETECTION_OUTPUTS)):
        said = "a detector" if detector else "a one-output model"
        raise UserError(
            f"{path}: {SIDECAR} describes {said}, but the model's outputs are "
            f"{', '.join(names)}; keep each model with the {SIDECAR} exported with it"
        )


def _checkpoint(path: Path) -> tuple[Run, dict[str, Any]]:
    import torch

    from visionpipe.core.checkpoint import load_checkpoint  # builds the network: timm, torchvision

    model, meta = load_checkpoint(path)
    return _torch_runner(torch.no_grad()(model)), meta


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
        loaders = DETECTOR_LOADERS if meta["task"] == "detection" else IMAGE_LOADERS
        run = _load(loaders[suffix], path, threads)
        if suffix == ".onnx":
            _check_outputs(path, run, meta)
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
    size = meta["image_size"]
    height, width = size if predictor.detector else (int(size), int(size))
    try:  # warm-up: allocation and setup
        run(np.zeros((1, 3, height, width), dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - a model that cannot run what model.json says
        raise UserError(
            f"{path}: does not run on the input {SIDECAR} describes ({first_line(exc)})"
        ) from None
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
    files = sorted(_walk_images(source))
    if not files:
        raise UserError(f"{source}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _walk_images(folder: Path) -> Iterator[Path]:
    """Image files (by extension) under ``folder``; a folder that cannot be listed is one
    line naming it, not a silent "no images"."""

    def refuse(exc: OSError) -> None:
        raise UserError(f"{exc.filename}: cannot read the folder ({exc.strerror})")

    for parent, _, names in os.walk(folder, onerror=refuse):
        for name in names:
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(parent) / name


@dataclass
class Frame:
    """One input to predict on: a prepared image, or why it could not be decoded."""

    name: str
    image: np.ndarray | None  # (1, 3, H, W) float32, RGB 0..255
    error: str | None = None
    scale: float = 1.0  # what the file was resized by (a detector's boxes are divided by it)


def _decode(predictor: Predictor, source: Path | io.BytesIO, name: str) -> Frame:
    try:
        image, scale = predictor.prepare(source)
        return Frame(name, image, scale=scale)
    except DataError as exc:  # broken or too large: its reason, named by the frame
        return Frame(name, None, f"{name}: {str(exc).removeprefix(f'{source}: ')}")


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
    record.update(predictor.decode(outputs, frame.scale)[0])
    if "confidence" in record:
        record["low_confidence"] = bool(record["confidence"] < threshold)
    for obj in record.get("objects", ()):  # a detector's: each detection flagged too
        obj["low_confidence"] = bool(obj["confidence"] < threshold)
    return record
