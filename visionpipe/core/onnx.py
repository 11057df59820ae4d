"""TorchScript and ONNX export, INT8 quantization and the parity check (running the exported
files is visionpipe.core.runtimes, shared with deploy).

All exported models take RGB pixels in 0..255 as float32 ``N x 3 x H x W`` (normalization is
inside the model), with a dynamic batch dimension.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from visionpipe.core.errors import UserError
from visionpipe.core.io import atomic_file, atomic_path

if TYPE_CHECKING:
    from visionpipe.core.cache import Images
from visionpipe.core.runtimes import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace the model (input: float RGB 0..255, N x 3 x H x W)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from library models are expected
        traced = torch.jit.trace(model.eval(), example)
    save_scripted(traced, path)


def save_scripted(module: torch.jit.ScriptModule, path: Path) -> None:
    """Write a traced or scripted module atomically, through a file object (see
    :func:`~visionpipe.core.io.atomic_file`)."""
    with atomic_file(path) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.save(module, handle)


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


# x86 instruction sets whose 8-bit dot products do not saturate (ONNX Runtime's quantization
# docs: without them, u8 x s8 products overflow int16 and 7-bit weights are the remedy)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def resolve_reduce_range(setting: str | bool, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """``export.reduce_range``: ``auto`` reduces on an x86 CPU without VNNI (and on an x86 CPU
    whose flags cannot be read, where 7-bit weights cost little and 8-bit ones may cost much)."""
    if isinstance(setting, bool):
        return setting
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM's int8 kernels have no such saturation
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return True
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        None,
    )
    if flags is None:
        return True
    return not any(flag in flags for flag in VNNI_FLAGS)


def weight_bits(reduce_range: bool) -> int:
    """The bits an INT8 weight keeps: 7 with ``reduce_range``, else 8."""
    return 7 if reduce_range else 8


def quantize_onnx(
    src: Path,
    dst: Path,
    mode: str,
    calibration: Images | None,
    reduce_range: bool = False,
    **static_options: Any,
) -> None:
    """INT8 ONNX: ``static`` (QDQ, per-channel, calibrated; 7-bit weights when
    ``reduce_range``; ``static_options`` go to ONNX Runtime's ``quantize_static``, e.g. a
    calibration method for benchmarks/int8_variants.py) or ``dynamic`` (weights only)."""
    from onnxruntime.quantization import CalibrationDataReader

    class CalibrationImages(CalibrationDataReader):
        """Calibration images, one at a time, as the quantizer asks for them."""

        def __init__(self, images: Images):
            self._items = iter(images[i : i + 1].float().numpy() for i in range(len(images)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {INPUT_NAME: batch}

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantizer logs every rescaled bias at INFO
    try:
        _quantize(src, dst, mode, calibration, CalibrationImages, reduce_range, static_options)
    finally:
        root.setLevel(level)


def _quantize(
    src: Path,
    dst: Path,
    mode: str,
    calibration: Images | None,
    reader_cls: type,
    reduce_range: bool,
    options: dict[str, Any],
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_path(dst) as tmp:
        if mode == "dynamic":
            quantize_dynamic(
                str(src), str(tmp), weight_type=QuantType.QInt8, reduce_range=reduce_range
            )
            return
        with tempfile.TemporaryDirectory(dir=dst.parent) as work:
            pre = Path(work) / "preprocessed.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(tmp),
                reader_cls(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                **options,
            )


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: Images, batch: int = 64):
    """Outputs of ``fn`` over ``x`` (images, read a batch at a time) as float, concatenated."""
    return torch.cat([fn(x[i : i + batch].float()) for i in range(0, len(x), batch)])


def check_parity(name: str, parity: dict[str, float], tolerance: float) -> None:
    """Fail the export when an exported model drifts from PyTorch beyond the tolerance."""
    if parity["max_abs_diff"] > tolerance:
        raise UserError(
            f"export: {name} differs from PyTorch by {parity['max_abs_diff']:.3g} "
            f"(export.parity_tolerance is {tolerance:g})"
        )
