"""TorchScript and ONNX export, and parity of their outputs against the PyTorch model."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from visionpipe.io import atomic_path

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "output"


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace the model (input: float RGB 0..255, N x 3 x H x W)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from library models are expected
        traced = torch.jit.trace(model.eval(), example)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """ONNX with a dynamic batch dimension, checked with the ONNX checker."""
    import onnx

    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        onnx.checker.check_model(str(tmp))


def run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return module(x.float()).float()


def run_onnx(path: Path, x: torch.Tensor, threads: int) -> torch.Tensor:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = session.run(None, {INPUT_NAME: x.float().numpy()})[0]
    return torch.from_numpy(np.asarray(out)).float()
