"""Running exported models: ONNX Runtime sessions and TorchScript modules, for per-image models
(one output tensor) and detectors (boxes, labels, scores, states, state_scores).

Shared by export (parity and latency on the files it wrote) and deploy (predict, simulate), so
the exported files are checked exactly as they are used. onnxruntime is imported only when a
session is opened.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: written beside the exported files: what a consumer needs besides them (labels, input size,
#: normalization, output meaning)
SIDECAR = "model.json"
INPUT_NAME, OUTPUT_NAME = "image", "output"
DETECTION_OUTPUTS = ("boxes", "labels", "scores", "states", "state_scores")


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


def run_onnx(session: Any, x: torch.Tensor) -> torch.Tensor:
    out = session.run(None, {INPUT_NAME: x.float().numpy()})[0]
    return torch.from_numpy(np.asarray(out)).float()


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def run_torchscript(module: torch.jit.ScriptModule, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x.float()).float()


def _detections(outputs: Sequence[Any]) -> dict[str, torch.Tensor]:
    return {
        name: torch.as_tensor(np.asarray(v))
        for name, v in zip(DETECTION_OUTPUTS, outputs, strict=True)
    }


def run_torchscript_detector(module: torch.jit.ScriptModule, image: torch.Tensor) -> dict:
    """Detections of one ``1 x 3 x H x W`` image by a scripted detector."""
    with torch.no_grad():
        return dict(zip(DETECTION_OUTPUTS, module(image.float()), strict=True))


def run_onnx_detector(session: Any, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detections of one ``1 x 3 x H x W`` image by an onnxruntime session."""
    return _detections(session.run(list(DETECTION_OUTPUTS), {INPUT_NAME: image.float().numpy()}))
