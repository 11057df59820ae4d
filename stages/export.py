"""Stage export: TorchScript, ONNX and INT8 ONNX, with parity, accuracy change and latency."""

import argparse
import logging
from pathlib import Path

import pandas as pd
import torch

from visionpipe import export
from visionpipe.cache import cached_images
from visionpipe.checkpoint import load_checkpoint
from visionpipe.data import IMAGENET_MEAN, IMAGENET_STD
from visionpipe.inference import SIDECAR, load_predictor
from visionpipe.io import write_csv, write_json
from visionpipe.manifests import read_split
from visionpipe.params import Params
from visionpipe.runtime import set_threads
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task
from visionpipe.timing import WARMUP, latency, tile_batch

log = logging.getLogger("visionpipe.export")


def sidecar(meta: dict, files: dict[str, Path], output: dict) -> dict:
    """What a consumer of the exported files needs besides the files (``output``: the task's
    description of the model's output)."""
    return {
        "task": meta["task"],
        "arch": meta["arch"],
        "labels": meta["labels"],
        "image_size": meta["image_size"],
        "input": {
            "name": export.INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "range": [0, 255],
            "resize": "bilinear to image_size x image_size",
        },
        "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "inside_model": True},
        "output": {"name": export.OUTPUT_NAME, **output},
        "files": {fmt: path.name for fmt, path in files.items()},
    }


def main(params: Params, args: argparse.Namespace) -> None:
    cfg = params.export
    task = get_task(params.base.task)
    model, meta = load_checkpoint(args.model)
    task.load_meta(meta)
    threads = set_threads(params.train.num_threads)
    root, size = Path(params.data.path), meta["image_size"]
    test_m = read_split(args.splits, "test")
    test_x = cached_images(root, test_m["path"].tolist(), size, desc="decoding test").float()
    parity_x = test_x[: cfg.parity_samples]

    out = Path(args.out)
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    export.export_torchscript(model, parity_x[:1], files["torchscript"])
    export.export_onnx(model, parity_x[:1], files["onnx"], cfg.opset)
    if cfg.quantize != "none":
        files["onnx_int8"] = out / "model.int8.onnx"
        calib_m = read_split(args.splits, "train")
        calib_m = calib_m.sample(min(cfg.calibration_samples, len(calib_m)), random_state=0)
        calib = cached_images(root, calib_m["path"].tolist(), size, desc="calibration")
        export.quantize_onnx(files["onnx"], files["onnx_int8"], cfg.quantize, calib)

    # model.json first: the exported files are then loaded exactly as predict/simulate load them
    write_json(out / SIDECAR, sidecar(meta, files, task.output_description()))
    runners = {"pytorch": torch.no_grad()(model)}
    runners.update({fmt: load_predictor(path, threads).run for fmt, path in files.items()})

    reference = runners["pytorch"](parity_x)
    results: dict = {"num_parity_images": int(len(parity_x)), "opset": cfg.opset}
    for fmt, path in files.items():
        parity = task.parity(reference, runners[fmt](parity_x))
        if fmt != "onnx_int8":  # quantization is lossy by design: judged by its accuracy change
            export.check_parity(fmt, parity, cfg.parity_tolerance)
        results[fmt] = {**parity, "size_mb": round(path.stat().st_size / 2**20, 3)}
        log.info("%s: %s", fmt, results[fmt])

    if "onnx_int8" in files:
        targets = task.targets(test_m, meta["labels"])
        fp32 = task.epoch_metrics(export.run_batched(runners["onnx"], test_x), targets)
        int8 = task.epoch_metrics(export.run_batched(runners["onnx_int8"], test_x), targets)
        results["quantization"] = {
            "mode": cfg.quantize,
            "calibration_images": 0 if cfg.quantize == "dynamic" else int(len(calib)),
            "test_images": int(len(test_x)),
            "fp32": fp32,
            "int8": int8,
            "change": {k: int8[k] - fp32[k] for k in fp32},
        }
        log.info("INT8 on the test split: %s -> %s", fp32, int8)

    rows = []
    for batch in sorted({1, cfg.latency_batch}):
        x = tile_batch(test_x, batch)
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
    write_json(args.metrics, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="folder for the exported models")
    parser.add_argument("--metrics", required=True, help="export metrics JSON")
    parser.add_argument("--latency", required=True, help="latency table CSV (a DVC bar plot)")
    run_stage("export", main, parser)
