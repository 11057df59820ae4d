"""Running exported models: ONNX Runtime sessions and TorchScript modules, for per-image models
(one output tensor) and detectors (boxes, labels, scores, states, state_scores).

Shared by export (parity and latency on the files it wrote) and deploy (predict, simulate), so
the exported files are checked exactly as they are used. The ONNX functions on arrays need
neither torch nor the rest of the pipeline, so predicting with an ONNX file starts in well under
a second; torch and onnxruntime are imported only when a function needs them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: written beside the exported files: what a consumer needs besides them (labels, input size,
#: normalization, output meaning)
SIDECAR = "model.json"
INPUT_NAME, OUTPUT_NAME = "image", "output"
DETECTION_OUTPUTS = ("boxes", "labels", "scores", "states", "state_scores")
#: a plain detector's (data.states: []): the first three, no state head
PLAIN_DETECTION_OUTPUTS = DETECTION_OUTPUTS[:3]


def onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_input_size(session: Any) -> int | None:
    """The fixed square input size an ONNX session expects (None when it is dynamic)."""
    shape = session.get_inputs()[0].shape
    return shape[-1] if isinstance(shape[-1], int) else None


def run_onnx_array(session: Any, x: np.ndarray) -> np.ndarray:
    """One float32 batch through a per-image model's session, as an array."""
    return np.asarray(session.run(None, {INPUT_NAME: np.asarray(x, dtype=np.float32)})[0])


def run_onnx_detector_array(session: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    """Detections of one ``1 x 3 x H x W`` float32 image, as arrays (a plain detector's have
    no states)."""
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, {INPUT_NAME: np.asarray(image, np.float32)})
    return {name: np.asarray(v) for name, v in zip(names, outputs, strict=True)}


def run_onnx(session: Any, x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.from_numpy(run_onnx_array(session, x.float().numpy())).float()


def load_torchscript(path: Path, detector: bool = False) -> torch.jit.ScriptModule:
    """A TorchScript file on the CPU; a detector's needs torchvision's ops (nms) registered."""
    import torch

    if detector:
        import torchvision  # noqa: F401 - registers torchvision::nms and roi_align

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def run_torchscript(module: torch.jit.ScriptModule, x: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return module(x.float()).float()


def _tensors(outputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.as_tensor(v) for name, v in outputs.items()}


def run_torchscript_detector(module: torch.jit.ScriptModule, image: torch.Tensor) -> dict:
    """Detections of one ``1 x 3 x H x W`` image by a scripted detector."""
    import torch

    with torch.no_grad():
        found = module(image.float())
    return dict(zip(DETECTION_OUTPUTS[: len(found)], found, strict=True))


def run_onnx_detector(session: Any, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detections of one ``1 x 3 x H x W`` image by an onnxruntime session."""
    return _tensors(run_onnx_detector_array(session, image.float().numpy()))


def as_array(value: Any) -> np.ndarray:
    """A tensor (detached, on the CPU) or anything array-like, as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
