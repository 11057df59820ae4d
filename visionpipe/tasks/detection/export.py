"""Detection's export stage: TorchScript and ONNX of the detector, with parity against PyTorch
and latency (the exported files are run through visionpipe.core.runtimes).

Both formats wrap the detector in ``SingleImageDetector``: one ``1 x 3 x H x W`` float RGB
tensor in 0..255 in, the five ``DETECTION_OUTPUTS`` tensors out (one image's detections; a
plain detector, without states, has ``PlainSingleImageDetector`` and the first three). The
wrapper runs the detector's parts (transform, backbone, RPN, RoI heads, postprocess) itself
rather than
``GeneralizedRCNN.forward``, whose return type differs between eager and scripted code.

TorchScript is scripted (torch.jit.script), not traced: detection has data-dependent control
flow (NMS, score thresholds, a variable number of boxes) that a trace would freeze, and a
scripted module also accepts any image size. ONNX uses the legacy (TorchScript-based) exporter
with batch 1 and the example's image size, as torchvision supports for Faster R-CNN.
"""

from __future__ import annotations

import argparse
import functools
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from visionpipe.core.coco import read_split_coco
from visionpipe.core.errors import WriteFailed
from visionpipe.core.images import DECODING
from visionpipe.core.io import atomic_path, write_csv, write_json
from visionpipe.core.onnx import save_scripted
from visionpipe.core.params import Params
from visionpipe.core.runtime import set_threads
from visionpipe.core.runtimes import (
    DETECTION_OUTPUTS,
    INPUT_NAME,
    PLAIN_DETECTION_OUTPUTS,
    SIDECAR,
    onnx_session,
    run_onnx_detector,
    run_torchscript_detector,
)
from visionpipe.core.thresholds import resolve_threshold
from visionpipe.core.timing import WARMUP, latency
from visionpipe.tasks.detection.model import load_detector, split_set, test_set
from visionpipe.tasks.detection.model.dataset import to_coco_results
from visionpipe.tasks.detection.model.hooks import predict
from visionpipe.tasks.detection.model.metrics import match_detections
from visionpipe.tasks.detection.model.state_heads import StateRoIHeads, with_image

log = logging.getLogger(__name__)


class SingleImageDetector(nn.Module):
    """One image (``1 x 3 x H x W``, 0..255) -> (boxes, labels, scores, states, state_scores)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.transform = detector.transform
        self.backbone = detector.backbone
        self.rpn = detector.rpn
        self.roi_heads = detector.roi_heads

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """The detections of the one image in ``image``, in its pixels."""
        original_size: list[tuple[int, int]] = [(image.shape[-2], image.shape[-1])]
        images, _ = self.transform([image[0]])
        features = self.backbone(images.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = self.rpn(images, features)
        detections, _ = self.roi_heads(
            with_image(features, images.tensors), proposals, images.image_sizes
        )
        detections = self.transform.postprocess(detections, images.image_sizes, original_size)
        return detections[0]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        found = self.detect(image)
        return (
            found["boxes"],
            found["labels"],
            found["scores"],
            found["states"],
            found["state_scores"],
        )


class PlainSingleImageDetector(SingleImageDetector):
    """A plain detector's one image -> (boxes, labels, scores): no state head, no states."""

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        found = self.detect(image)
        return found["boxes"], found["labels"], found["scores"]


def has_states(model: nn.Module) -> bool:
    return isinstance(model.roi_heads, StateRoIHeads)


def output_names(model: nn.Module) -> list[str]:
    return list(DETECTION_OUTPUTS if has_states(model) else PLAIN_DETECTION_OUTPUTS)


def _single_image(model: nn.Module) -> SingleImageDetector:
    wrapper = SingleImageDetector if has_states(model) else PlainSingleImageDetector
    return wrapper(model).eval()


def export_torchscript(model: nn.Module, example: Tensor, path: str | Path) -> None:
    """Script the detector (``example`` is checked to run, ``1 x 3 x H x W`` in 0..255)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        scripted = torch.jit.script(_single_image(model))
        with torch.no_grad():
            scripted(example.float())
    save_scripted(scripted, path)


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
            output_names=output_names(model),
        )
        onnx.checker.check_model(str(tmp))


def try_export(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
    """Run an export; None when it worked, else why not (one line, for the metrics file), so
    a format that cannot be exported is recorded instead of failing the pipeline."""
    try:
        fn(*args, **kwargs)
    except WriteFailed:  # a full disk is no property of the format: the stage stops
        raise
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
    states = "states" in ref
    if k == 0:
        box_diff = score_diff = 0.0
        same_state = same_label = 0
    else:
        box_diff = float((ref["boxes"][a].float() - other["boxes"][b].float()).abs().max())
        score_diff = float((ref["scores"][a].float() - other["scores"][b].float()).abs().max())
        same_state = (
            int((ref["states"][a].long() == other["states"][b].long()).sum()) if states else 0
        )
        same_label = int((ref["labels"][a].long() == other["labels"][b].long()).sum())
    return {
        "detections": len(ref_order),
        "other_detections": len(other_order),
        "count_equal": len(ref_order) == len(other_order),
        "compared": k,
        "max_box_abs_diff": box_diff,
        "max_score_abs_diff": score_diff,
        "state_agreement": same_state / k if k and states else None,
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
    Agreements are None when nothing was compared; a plain detector's results have no
    state_agreement.
    """
    if len(reference) != len(other):
        raise ValueError(f"parity: {len(reference)} reference images but {len(other)} others")
    per_image = [_image_parity(r, o) for r, o in zip(reference, other, strict=True)]
    compared = sum(p["compared"] for p in per_image)
    same_state = sum(p.pop("_same_state") for p in per_image)
    same_label = sum(p.pop("_same_label") for p in per_image)
    result = {
        "images": len(per_image),
        "count_mismatches": sum(not p["count_equal"] for p in per_image),
        "detections_compared": compared,
        "max_box_abs_diff": max((p["max_box_abs_diff"] for p in per_image), default=0.0),
        "max_score_abs_diff": max((p["max_score_abs_diff"] for p in per_image), default=0.0),
        "state_agreement": same_state / compared if compared else None,
        "label_agreement": same_label / compared if compared else None,
        "per_image": per_image,
    }
    if reference and "states" not in reference[0]:
        del result["state_agreement"]
        for p in per_image:
            del p["state_agreement"]
    return result


def sidecar(meta: dict, files: dict[str, Path], input_hw: tuple[int, int]) -> dict:
    """What a consumer of the exported detector needs besides the files (a plain detector's
    ``states`` is [] and its outputs end at scores)."""
    outputs = {
        "boxes": "x1, y1, x2, y2 in input pixels",
        "labels": "index into labels, plus 1 (0 is background)",
        "scores": "probability of the part",
    }
    names = list(PLAIN_DETECTION_OUTPUTS)
    if meta["states"]:
        outputs["states"] = "index into states"
        outputs["state_scores"] = "probability of the predicted state"
        names = list(DETECTION_OUTPUTS)
    return {
        "task": meta["task"],
        "arch": meta["arch"],
        "labels": meta["labels"],
        "states": meta["states"],
        "min_size": meta["min_size"],
        "max_size": meta["max_size"],
        "score_threshold": meta["score_threshold"],
        "image_size": list(input_hw),
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW, batch 1",
            "dtype": "float32",
            "color": "RGB",
            "range": [0, 255],
            "decode": DECODING,
            "size": "ONNX: fixed at image_size (height, width); resize with the aspect kept",
        },
        "output": {"names": names, **outputs},
        "files": {fmt: path.name for fmt, path in files.items()},
    }


def export(params: Params, args: argparse.Namespace) -> None:
    """TorchScript and ONNX (legacy exporter, batch 1) with parity on boxes, scores and states
    against PyTorch and latency per image; a format that cannot be exported is recorded with
    the reason instead of failing the stage."""
    cfg = params.export
    model, meta = load_detector(args.model)
    threads = set_threads(params.train.num_threads)
    test = test_set(params, meta, read_split_coco(args.splits, "test"))
    example = test.images[0][None].float()
    parity_x = []  # the first test images of the example's size (batch 1, a fixed graph)
    for img in test.images:
        if len(parity_x) == cfg.parity_samples:
            break
        if img.shape == example.shape[1:]:
            parity_x.append(img[None].float())
    out = Path(args.out)
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    exporters = {
        "torchscript": lambda path: export_torchscript(model, example, path),
        "onnx": lambda path: export_onnx(model, example, path, cfg.opset),
    }
    loaders = {
        "torchscript": lambda path: functools.partial(
            run_torchscript_detector, torch.jit.load(path)
        ),
        "onnx": lambda path: functools.partial(run_onnx_detector, onnx_session(path, threads)),
    }

    @torch.no_grad()
    def run_pytorch(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return model([image[0]])[0]

    runners = {"pytorch": run_pytorch}
    results: dict[str, Any] = {
        "num_parity_images": len(parity_x),
        "opset": cfg.opset,
        "quantization": "not applied: INT8 is for the classification and regression models",
    }
    reference = [run_pytorch(x) for x in parity_x]
    for fmt, path in files.items():
        error = try_export(exporters[fmt], path)
        if error is None:
            try:
                runners[fmt] = loaders[fmt](path)
                parity = detection_parity(reference, [runners[fmt](x) for x in parity_x])
                results[fmt] = {**parity, "size_mb": round(path.stat().st_size / 2**20, 3)}
            except Exception as exc:  # noqa: BLE001 - recorded: the other format may still work
                error = f"exported, but running it failed: {type(exc).__name__}: {exc}"
        if error is not None:
            path.unlink(missing_ok=True)
            log.warning("%s export not available: %s", fmt, error)
            results[fmt] = {"error": error}
        else:
            log.info("%s: %s", fmt, results[fmt])
    exported = {fmt: path for fmt, path in files.items() if path.is_file()}
    model_json = sidecar(meta, exported, tuple(example.shape[-2:]))
    model_json["threshold"] = results["threshold"] = resolve_on_val(model, params, args, meta)
    write_json(out / SIDECAR, model_json)

    rows = []
    for fmt, fn in runners.items():
        timing = latency(fn, example, WARMUP, cfg.latency_runs)
        rows.append({"runtime": f"{fmt} (batch 1)", "format": fmt, "batch": 1, **timing})
        log.info("latency %s batch 1: %s", fmt, timing)
    results["latency"] = {
        "device": "cpu",
        "threads": threads,
        "warmup": WARMUP,
        "ms_per_sample": {
            f"{r['format']}_batch_1": {k: r[k] for k in ("median_ms", "p95_ms")} for r in rows
        },
    }
    write_csv(args.latency, pd.DataFrame(rows))
    write_json(Path(args.metrics).with_name("details.json"), results)
    write_json(args.metrics, headline(results))


def val_confidences(
    model: nn.Module, params: Params, splits: str | Path, meta: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection kept on the validation split: the confidence predict reports (the box
    score, or the lower of it and the state's probability) and whether it is right (matched
    to a box of its part at the training run's ``detection.iou_threshold``, with its state)."""
    gt = read_split_coco(Path(splits), "val")
    if not gt["images"]:
        return np.zeros(0), np.zeros(0, dtype=bool)
    data = split_set(params, meta, gt, "val")
    outputs = predict(model, data, params.train.batch_size, torch.device("cpu"))
    records = to_coco_results(outputs, data.image_ids, data.scales, gt, meta["states"])
    iou = float(meta.get("iou_threshold", 0.5))  # a checkpoint from before it was recorded
    matches = match_detections(gt, records, iou, float(meta["score_threshold"]))
    kept = matches[matches["det_index"] >= 0]
    confidence = kept["score"].to_numpy(dtype=np.float64)
    correct = (kept["part_true"] == kept["part_pred"]).to_numpy()
    if meta["states"]:
        confidence = np.minimum(confidence, kept["state_score"].to_numpy(dtype=np.float64))
        correct = correct & (kept["state_true"] == kept["state_pred"]).to_numpy()
    return confidence, correct


def resolve_on_val(
    model: nn.Module, params: Params, args: argparse.Namespace, meta: dict
) -> dict[str, Any]:
    """``simulate.threshold`` resolved on the validation split's detections."""
    found = val_confidences(model, params, args.splits, meta)
    resolved = resolve_threshold(params.simulate.threshold, *found, unit="detections")
    log.info("low-confidence threshold: %s", resolved)
    return resolved


#: the parity figures ``dvc metrics show`` compares (the rest is in details.json)
HEADLINE_PARITY = ("count_mismatches", "max_box_abs_diff", "max_score_abs_diff", "state_agreement")


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Parity per format (or its error) and the batch-1 latency per runtime."""
    out: dict[str, Any] = {}
    for fmt in ("torchscript", "onnx"):
        found = results.get(fmt, {})
        out[fmt] = {k: found[k] for k in HEADLINE_PARITY if k in found} or {
            "error": found.get("error", "not exported")
        }
    out["latency_ms_batch_1"] = {
        name.removesuffix("_batch_1"): value["median_ms"]
        for name, value in results["latency"]["ms_per_sample"].items()
    }
    if "threshold" in results:  # what a swept simulate.threshold target resolved to
        out["low_confidence_threshold"] = results["threshold"]["value"]
    return out
