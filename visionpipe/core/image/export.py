"""The export stage of the tasks with one output per image: TorchScript, ONNX and INT8 ONNX,
with parity against PyTorch, the INT8 accuracy change on the test split and latency."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from visionpipe.core import onnx as onnx_export
from visionpipe.core.checkpoint import load_checkpoint
from visionpipe.core.errors import UserError
from visionpipe.core.image.split_images import calibration_images, split_images
from visionpipe.core.image.task import ImageTask
from visionpipe.core.images import DECODING, IMAGENET_MEAN, IMAGENET_STD
from visionpipe.core.io import write_csv, write_json
from visionpipe.core.manifests import read_split
from visionpipe.core.models import TTA_VIEWS
from visionpipe.core.params import Params
from visionpipe.core.runtime import set_threads
from visionpipe.core.runtimes import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIDECAR,
    load_torchscript,
    onnx_session,
    run_onnx,
    run_torchscript,
)
from visionpipe.core.thresholds import resolve_threshold
from visionpipe.core.timing import WARMUP, latency, tile_batch

log = logging.getLogger("visionpipe.export")

#: beside the stage's metrics file: every figure of the export (sizes, p95s, batch-N latency)
DETAILS = "details.json"


def sidecar(meta: dict, files: dict[str, Path], output: dict) -> dict:
    """What a consumer of the exported files needs besides the files (``output``: the task's
    description of the model's output)."""
    return {
        "task": meta["task"],
        "arch": meta["arch"],
        "labels": meta["labels"],
        "image_size": meta["image_size"],
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "range": [0, 255],
            "decode": DECODING,
            "resize": "bilinear to image_size x image_size",
        },
        "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "inside_model": True},
        # the flips and turns averaged inside the model (model.tta): nothing to do outside
        "test_time_augmentation": {
            "mode": meta.get("tta", "none"),
            "views": TTA_VIEWS[meta.get("tta", "none")],
            "inside_model": True,
        },
        "output": {"name": OUTPUT_NAME, **output},
        "files": {fmt: path.name for fmt, path in files.items()},
    }


def export(task: ImageTask, params: Params, args: argparse.Namespace) -> None:
    """The export stage: TorchScript, ONNX and INT8 ONNX with parity, accuracy and latency."""
    cfg = params.export
    model, meta = load_checkpoint(args.model)
    task.load_meta(meta)
    threads = set_threads(params.train.num_threads)
    size = meta["image_size"]
    test_m = read_split(args.splits, "test")
    test_x = split_images(params, test_m, size, "decoding test")
    parity_x = test_x[: cfg.parity_samples].float()

    out = Path(args.out)
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    onnx_export.export_torchscript(model, parity_x[:1], files["torchscript"])
    onnx_export.export_onnx(model, parity_x[:1], files["onnx"], cfg.opset)
    if cfg.quantize != "none":
        files["onnx_int8"] = out / "model.int8.onnx"
        calib = calibration_images(params, args.splits, size)
        reduce_range = onnx_export.resolve_reduce_range(cfg.reduce_range)
        weight_bits = onnx_export.weight_bits(reduce_range)
        log.info("INT8 weights in %d bits (export.reduce_range: %s)", weight_bits, cfg.reduce_range)
        onnx_export.quantize_onnx(
            files["onnx"], files["onnx_int8"], cfg.quantize, calib, reduce_range
        )

    # run as predict and simulate run them (visionpipe.core.runtimes)
    runners = {"pytorch": torch.no_grad()(model)}
    runners.update({fmt: load_runner(path, threads) for fmt, path in files.items()})

    reference = runners["pytorch"](parity_x)
    results: dict = {"num_parity_images": int(len(parity_x)), "opset": cfg.opset}
    for fmt, path in files.items():
        parity = task.parity(reference, runners[fmt](parity_x))
        if fmt != "onnx_int8":  # quantization is lossy by design: judged by its accuracy change
            try:
                onnx_export.check_parity(fmt, parity, cfg.parity_tolerance)
            except UserError:  # a rejected model is not left where predict would use it
                for rejected in [*files.values(), out / SIDECAR]:
                    rejected.unlink(missing_ok=True)
                raise
        results[fmt] = {**parity, "size_mb": round(path.stat().st_size / 2**20, 3)}
        log.info("%s: %s", fmt, results[fmt])
    # written once every format passed: without it, no consumer loads the files
    model_json = sidecar(meta, files, task.output_description())
    threshold = resolve_on_val(task, params, args.splits, meta, runners["onnx"])
    if threshold is not None:
        model_json["threshold"] = results["threshold"] = threshold
    write_json(out / SIDECAR, model_json)

    if "onnx_int8" in files:
        targets, labels = task.targets(test_m, meta["labels"]), meta["labels"]
        outputs = {
            fmt: onnx_export.run_batched(runners[fmt], test_x) for fmt in ("onnx", "onnx_int8")
        }
        fp32, int8 = (task.epoch_metrics(outputs[f], targets) for f in ("onnx", "onnx_int8"))
        fp32_labels, int8_labels = (
            task.per_label_metrics(outputs[f], targets, labels) for f in ("onnx", "onnx_int8")
        )
        results["quantization"] = {
            "mode": cfg.quantize,
            "calibration_images": 0 if cfg.quantize == "dynamic" else int(len(calib)),
            # the exporting CPU decides auto: the figures below hold for CPUs like it
            "reduce_range": {"setting": cfg.reduce_range, "weight_bits": weight_bits},
            "test_images": int(len(test_x)),
            "fp32": fp32,
            "int8": int8,
            "change": {k: int8[k] - fp32[k] for k in fp32},
            "per_label": {k: {"fp32": fp32_labels[k], "int8": int8_labels[k]} for k in fp32_labels},
            "agreement": float(
                (outputs["onnx"].argmax(1) == outputs["onnx_int8"].argmax(1)).float().mean()
            )
            if outputs["onnx"].shape[1] > 1
            else None,
        }
        log.info("INT8 on the test split: %s -> %s", fp32, int8)

    rows = []
    for batch in sorted({1, cfg.latency_batch}):
        x = tile_batch(test_x, batch).float()  # as before: the cast is not timed
        for fmt, fn in runners.items():
            timing = latency(fn, x, WARMUP, cfg.latency_runs)
            rows.append(
                {"runtime": f"{fmt} (batch {batch})", "format": fmt, "batch": batch, **timing}
            )
            log.info("latency %s batch %d: %s", fmt, batch, timing)
    results["latency"] = {
        "device": "cpu",
        "threads": threads,
        "warmup": WARMUP,
        "ms_per_sample": {
            f"{r['format']}_batch_{r['batch']}": {k: r[k] for k in ("median_ms", "p95_ms")}
            for r in rows
        },
    }
    write_csv(args.latency, pd.DataFrame(rows))
    write_json(Path(args.metrics).with_name(DETAILS), results)
    write_json(args.metrics, headline(results))


def resolve_on_val(
    task: ImageTask,
    params: Params,
    splits: str | Path,
    meta: dict[str, Any],
    run: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, Any] | None:
    """``simulate.threshold`` resolved on the validation split with the exported ONNX
    model's calibrated confidences (what predict and simulate will see); None for a task
    whose predictions carry no confidence."""
    if not task.reports_confidence:
        return None
    val_m = read_split(splits, "val")
    outputs = torch.zeros(0, len(meta["labels"]))  # no val images: resolved on none (0.5)
    if len(val_m):
        val_x = split_images(params, val_m, meta["image_size"], "decoding val")
        outputs = onnx_export.run_batched(run, val_x)
    found = task.confidences(outputs, task.targets(val_m, meta["labels"]))
    resolved = resolve_threshold(params.simulate.threshold, *found, unit="images")
    log.info("low-confidence threshold: %s", resolved)
    return resolved


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """What ``dvc metrics show`` compares: parity per format, the INT8 accuracy change and the
    batch-1 latency per runtime (sizes, INT8 parity, p95s and batch-N latencies stay in
    details.json)."""
    latency = results["latency"]["ms_per_sample"]
    out: dict[str, Any] = {
        fmt: {k: v for k, v in results[fmt].items() if k != "size_mb"}
        for fmt in ("torchscript", "onnx")  # INT8 is lossy by design: judged by int8_change
    }
    if "quantization" in results:
        out["int8_change"] = results["quantization"]["change"]
    out["latency_ms_batch_1"] = {
        name.removesuffix("_batch_1"): value["median_ms"]
        for name, value in latency.items()
        if name.endswith("_batch_1")
    }
    if "threshold" in results:  # what a swept simulate.threshold target resolved to
        out["low_confidence_threshold"] = results["threshold"]["value"]
    return out


def load_runner(path: Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """An exported file as a function of a float image batch."""
    if path.suffix == ".ts":
        return functools.partial(run_torchscript, load_torchscript(path))
    return functools.partial(run_onnx, onnx_session(path, threads))
