"""TorchScript and ONNX export of the state detector, running the exported files, and parity.

Both formats wrap the detector in ``SingleImageDetector``: one ``1 x 3 x H x W`` float RGB
tensor in 0..255 in, the five tensors ``OUTPUT_NAMES`` out (one image's detections). The wrapper
runs the detector's parts (transform, backbone, RPN, RoI heads, postprocess) itself rather than
``GeneralizedRCNN.forward``, whose return type differs between eager and scripted code.

TorchScript is scripted (torch.jit.script), not traced: detection has data-dependent control
flow (NMS, score thresholds, a variable number of boxes) that a trace would freeze, and a
scripted module also accepts any image size. ONNX uses the legacy (TorchScript-based) exporter
with batch 1 and the example's image size, as torchvision supports for Faster R-CNN.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visionpipe.export import onnx_session  # noqa: F401 - re-exported for the stages
from visionpipe.io import atomic_path

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "labels", "scores", "states", "state_scores")


class SingleImageDetector(nn.Module):
    """One image (``1 x 3 x H x W``, 0..255) -> (boxes, labels, scores, states, state_scores)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.transform = detector.transform
        self.backbone = detector.backbone
        self.rpn = detector.rpn
        self.roi_heads = detector.roi_heads

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        original_size: list[tuple[int, int]] = [(image.shape[-2], image.shape[-1])]
        images, _ = self.transform([image[0]])
        features = self.backbone(images.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = self.rpn(images, features)
        detections, _ = self.roi_heads(features, proposals, images.image_sizes)
        detections = self.transform.postprocess(detections, images.image_sizes, original_size)
        found = detections[0]
        return (
            found["boxes"],
            found["labels"],
            found["scores"],
            found["states"],
            found["state_scores"],
        )


def _single_image(model: nn.Module) -> SingleImageDetector:
    return SingleImageDetector(model).eval()


def export_torchscript(model: nn.Module, example: Tensor, path: str | Path) -> None:
    """Script the detector (``example`` is checked to run, ``1 x 3 x H x W`` in 0..255)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        scripted = torch.jit.script(_single_image(model))
        with torch.no_grad():
            scripted(example.float())
    with atomic_path(path) as tmp:
        scripted.save(str(tmp))


def export_onnx(model: nn.Module, example: Tensor, path: str | Path, opset: int) -> None:
    """Legacy ONNX export, batch 1 at ``example``'s size, checked with the ONNX checker."""
    import onnx

    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of torchvision's detection code
        torch.onnx.export(
            _single_image(model),
            (example.float(),),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
        )
        onnx.checker.check_model(str(tmp))


def _as_dict(outputs: Sequence[Any]) -> dict[str, Tensor]:
    return {
        name: torch.as_tensor(np.asarray(v)) for name, v in zip(OUTPUT_NAMES, outputs, strict=True)
    }


def run_torchscript(module: torch.jit.ScriptModule, image: Tensor) -> dict[str, Tensor]:
    """Detections of one ``1 x 3 x H x W`` image by a scripted detector."""
    with torch.no_grad():
        return dict(zip(OUTPUT_NAMES, module(image.float()), strict=True))


def run_onnx(session: Any, image: Tensor) -> dict[str, Tensor]:
    """Detections of one ``1 x 3 x H x W`` image by an onnxruntime session."""
    return _as_dict(session.run(list(OUTPUT_NAMES), {INPUT_NAME: image.float().numpy()}))


def try_export(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
    """Run an export; None when it worked, else why not (one line, for the metrics file), so
    a format that cannot be exported is recorded instead of failing the pipeline."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported, not raised
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        log.warning("export failed: %s", reason)
        log.debug("export failure", exc_info=True)
        return reason
    return None


def _image_parity(ref: dict[str, Tensor], other: dict[str, Tensor]) -> dict[str, Any]:
    """Compare the top-k detections of both in score order (k = the smaller count)."""
    ref_order = torch.argsort(ref["scores"].float(), descending=True, stable=True)
    other_order = torch.argsort(other["scores"].float(), descending=True, stable=True)
    k = min(len(ref_order), len(other_order))
    a, b = ref_order[:k], other_order[:k]
    if k == 0:
        box_diff = score_diff = 0.0
        same_state = same_label = 0
    else:
        box_diff = float((ref["boxes"][a].float() - other["boxes"][b].float()).abs().max())
        score_diff = float((ref["scores"][a].float() - other["scores"][b].float()).abs().max())
        same_state = int((ref["states"][a].long() == other["states"][b].long()).sum())
        same_label = int((ref["labels"][a].long() == other["labels"][b].long()).sum())
    return {
        "detections": len(ref_order),
        "other_detections": len(other_order),
        "count_equal": len(ref_order) == len(other_order),
        "compared": k,
        "max_box_abs_diff": box_diff,
        "max_score_abs_diff": score_diff,
        "state_agreement": same_state / k if k else None,
        "label_agreement": same_label / k if k else None,
        "_same_state": same_state,
        "_same_label": same_label,
    }


def detection_parity(
    reference: list[dict[str, Tensor]], other: list[dict[str, Tensor]]
) -> dict[str, Any]:
    """How far ``other``'s detections are from ``reference``'s, image by image.

    Per image: counts (equal or not), then over the common top-k in score order the max abs
    box difference (pixels), max abs score difference and the fraction of equal states and
    labels. Aggregated: worst differences, pooled agreements, images whose counts differ.
    Agreements are None when nothing was compared.
    """
    if len(reference) != len(other):
        raise ValueError(f"parity: {len(reference)} reference images but {len(other)} others")
    per_image = [_image_parity(r, o) for r, o in zip(reference, other, strict=True)]
    compared = sum(p["compared"] for p in per_image)
    same_state = sum(p.pop("_same_state") for p in per_image)
    same_label = sum(p.pop("_same_label") for p in per_image)
    return {
        "images": len(per_image),
        "count_mismatches": sum(not p["count_equal"] for p in per_image),
        "detections_compared": compared,
        "max_box_abs_diff": max((p["max_box_abs_diff"] for p in per_image), default=0.0),
        "max_score_abs_diff": max((p["max_score_abs_diff"] for p in per_image), default=0.0),
        "state_agreement": same_state / compared if compared else None,
        "label_agreement": same_label / compared if compared else None,
        "per_image": per_image,
    }
