"""The train, evaluate, export and simulate stages of tasks with one output per image.

Classification and regression share these; what differs (targets, loss, metrics, artifacts) is
asked of the task. The stage scripts in stages/ only parse their arguments and call the task.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from dvclive import Live

import visionpipe
from visionpipe import distributed, resume
from visionpipe import export as onnx_export
from visionpipe.cache import cached_images
from visionpipe.checkpoint import load_checkpoint, save_checkpoint
from visionpipe.data import IMAGENET_MEAN, IMAGENET_STD
from visionpipe.errors import UserError
from visionpipe.evaluation import predict
from visionpipe.io import write_csv, write_json
from visionpipe.manifests import fingerprint, read_split
from visionpipe.models import build_model, count_parameters
from visionpipe.params import Params, as_dict
from visionpipe.runtime import choose_device, cpu_count, seed_everything, set_threads
from visionpipe.timing import WARMUP, latency, model_latency, tile_batch
from visionpipe.tracking import epoch_logger
from visionpipe.training import fit

if TYPE_CHECKING:  # the task module imports this one
    from visionpipe.tasks.image import ImageTask

log = logging.getLogger("visionpipe.stages")


def state_key(params: Params, dataset: str, labels: list[str]) -> str:
    """What a saved training state must match to be resumed: every param that shapes training
    (not ``train.resume`` itself), the split manifests' hash, the labels and the code (the
    visionpipe package and this script)."""
    train = {k: v for k, v in as_dict(params.train).items() if k != "resume"}
    sections = [as_dict(s) for s in (params.base, params.model, params.augment, params.regression)]
    package = Path(visionpipe.__file__).parent
    code = resume.code_fingerprint(package, package.parent / "stages" / "train.py")
    return resume.fingerprint(train, sections, params.data.target_column, dataset, labels, code)


def train(task: ImageTask, params: Params, args: argparse.Namespace) -> None:
    """The train stage: fit on the train split, keep the best epoch by the monitor; resumes
    from ``args.state``, and with ``train.nproc > 1`` reruns itself under torchrun."""
    monitor = task.monitor(params)
    nproc = params.train.nproc
    if nproc > 1 and not distributed.launched():
        distributed.check_nproc(nproc, choose_device(params.train.device))
        code = distributed.relaunch(nproc, "stages.train", sys.argv[1:])
        if code:
            raise UserError(f"train: the {nproc} training processes failed (exit {code})")
        return
    dist = distributed.init()
    train_m, val_m = read_split(args.splits, "train"), read_split(args.splits, "val")
    labels = task.labels(train_m, params)
    target_meta = task.fit_targets(train_m, params)
    train_y, val_y = task.targets(train_m, labels), task.targets(val_m, labels)
    criterion = task.criterion(params, labels, train_y)
    gen = seed_everything(params.base.seed)
    # the cores are shared between the processes
    threads = set_threads(max(1, (params.train.num_threads or cpu_count()) // dist.world))
    device = choose_device(params.train.device, dist.local_rank)
    m, hidden = params.model, task.head_hidden(params)
    built = build_model(m.arch, len(labels), m.pretrained, m.dropout, m.weights, hidden)
    log.info(
        "%s model %s, %d output(s) (%s), initial weights: %s",
        task.name,
        m.arch,
        len(labels),
        ", ".join(labels) if len(labels) <= 8 else f"{len(labels)} classes",
        built.weights_source,
    )

    root, size = Path(params.data.path), m.image_size
    num_parameters = count_parameters(built.model)
    train_x = cached_images(root, train_m["path"].tolist(), size, desc="decoding train")
    val_x = cached_images(root, val_m["path"].tolist(), size, desc="decoding val")
    summary = {
        "dataset": {
            "fingerprint": fingerprint(args.splits),
            "train_images": len(train_m),
            "val_images": len(val_m),
        },
        "model": {
            "arch": m.arch,
            "parameters": num_parameters,
            "input_size": size,
            "initial_weights": built.weights_source,
        },
    }

    summary["distributed"] = {
        "processes": dist.world,
        "backend": distributed.backend() if dist.active else None,
    }
    live_context = (
        Live(args.live, dvcyaml=False, save_dvc_exp=False, report=None)
        if dist.is_main
        else contextlib.nullcontext()
    )
    key = state_key(params, summary["dataset"]["fingerprint"], labels)
    with live_context as live:
        log_epoch = epoch_logger(live)  # not rank 0 (live is None): only one process writes
        result = fit(
            built.model,
            task,
            params,
            criterion,
            train_x,
            train_y,
            val_x,
            val_y,
            device,
            gen,
            log_epoch,
            args.state if params.train.resume else None,
            key,
            dist,
        )
        if live is None:
            distributed.finish(dist)
            return
        live.summary["best"] = {
            "step": result.best_epoch,
            monitor: result.best_value,
        }
        live.summary.update(summary)
        live.summary["epochs_run"] = len(result.history)
        live.summary["stopped_early"] = result.stopped_early

    built.model.load_state_dict(result.best_state)
    meta = {
        "task": task.name,
        "arch": m.arch,
        "num_outputs": len(labels),
        "labels": labels,
        "image_size": size,
        "dropout": m.dropout,
        "head_hidden": hidden,
        **target_meta,
        "input": "RGB float or uint8, 0..255, N x 3 x H x W (normalization is inside the model)",
        "initial_weights": built.weights_source,
        "num_parameters": num_parameters,
        "dataset_fingerprint": summary["dataset"]["fingerprint"],
        "best_epoch": result.best_epoch,
        "history": result.history,
        "monitor": {monitor: result.best_value},
        "device": str(device),
        "threads": threads,
        "train_params": as_dict(params.train),
        "augment_params": as_dict(params.augment),
    }
    save_checkpoint(args.model, built.model, meta)
    write_json(args.class_index, {str(i): name for i, name in enumerate(labels)})
    distributed.finish(dist)
    log.info(
        "best epoch %d of %d (%s=%.4f) saved to %s",
        result.best_epoch + 1,
        params.train.epochs,
        monitor,
        result.best_value,
        args.model,
    )


def evaluate(task: ImageTask, params: Params, args: argparse.Namespace) -> None:
    """The evaluate stage: test metrics, predictions, curves, figures and latency."""
    model, meta = load_checkpoint(args.model)
    labels = meta["labels"]
    task.load_meta(meta)
    task.validate(params, labels)
    test_m = read_split(args.splits, "test")
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    x = cached_images(
        Path(params.data.path),
        test_m["path"].tolist(),
        meta["image_size"],
        desc="decoding test",
    )
    y = task.targets(test_m, labels)
    model.to(device).to(memory_format=torch.channels_last)
    start = time.perf_counter()
    outputs = predict(model, x, params.evaluate.batch_size, device, desc="test")
    seconds = time.perf_counter() - start
    metrics = task.evaluate(
        outputs, y, test_m, x, labels, params, Path(args.results), Path(args.figures)
    )
    metrics["inference"] = {
        "ms_per_sample": 1000 * seconds / max(len(x), 1),
        "batch_size": params.evaluate.batch_size,
        "device": str(device),
        "threads": threads,
        **model_latency(
            model,
            x,
            device,
            {"batch_1": 1, "batch_train": params.train.batch_size},
            params.evaluate.latency_runs,
        ),
    }
    write_json(Path(args.results) / "metrics.json", metrics)
    log.info("test: %s", {k: v for k, v in metrics.items() if isinstance(v, float)})


def sidecar(meta: dict, files: dict[str, Path], output: dict) -> dict:
    """What a consumer of the exported files needs besides the files (``output``: the task's
    description of the model's output)."""
    return {
        "task": meta["task"],
        "arch": meta["arch"],
        "labels": meta["labels"],
        "image_size": meta["image_size"],
        "input": {
            "name": onnx_export.INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "range": [0, 255],
            "resize": "bilinear to image_size x image_size",
        },
        "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "inside_model": True},
        "output": {"name": onnx_export.OUTPUT_NAME, **output},
        "files": {fmt: path.name for fmt, path in files.items()},
    }


def export(task: ImageTask, params: Params, args: argparse.Namespace) -> None:
    """The export stage: TorchScript, ONNX and INT8 ONNX with parity, accuracy and latency."""
    from visionpipe.inference import SIDECAR, load_predictor

    cfg = params.export
    model, meta = load_checkpoint(args.model)
    task.load_meta(meta)
    threads = set_threads(params.train.num_threads)
    root, size = Path(params.data.path), meta["image_size"]
    test_m = read_split(args.splits, "test")
    test_x = cached_images(root, test_m["path"].tolist(), size, desc="decoding test").float()
    parity_x = test_x[: cfg.parity_samples]

    out = Path(args.out)
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    onnx_export.export_torchscript(model, parity_x[:1], files["torchscript"])
    onnx_export.export_onnx(model, parity_x[:1], files["onnx"], cfg.opset)
    if cfg.quantize != "none":
        files["onnx_int8"] = out / "model.int8.onnx"
        calib_m = read_split(args.splits, "train")
        calib_m = calib_m.sample(min(cfg.calibration_samples, len(calib_m)), random_state=0)
        calib = cached_images(root, calib_m["path"].tolist(), size, desc="calibration")
        onnx_export.quantize_onnx(files["onnx"], files["onnx_int8"], cfg.quantize, calib)

    # model.json first: the exported files are then loaded exactly as predict/simulate load them
    write_json(out / SIDECAR, sidecar(meta, files, task.output_description()))
    runners = {"pytorch": torch.no_grad()(model)}
    runners.update({fmt: load_predictor(path, threads).run for fmt, path in files.items()})

    reference = runners["pytorch"](parity_x)
    results: dict = {"num_parity_images": int(len(parity_x)), "opset": cfg.opset}
    for fmt, path in files.items():
        parity = task.parity(reference, runners[fmt](parity_x))
        if fmt != "onnx_int8":  # quantization is lossy by design: judged by its accuracy change
            onnx_export.check_parity(fmt, parity, cfg.parity_tolerance)
        results[fmt] = {**parity, "size_mb": round(path.stat().st_size / 2**20, 3)}
        log.info("%s: %s", fmt, results[fmt])

    if "onnx_int8" in files:
        targets = task.targets(test_m, meta["labels"])
        fp32 = task.epoch_metrics(onnx_export.run_batched(runners["onnx"], test_x), targets)
        int8 = task.epoch_metrics(onnx_export.run_batched(runners["onnx_int8"], test_x), targets)
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


def simulate(task: ImageTask, params: Params, args: argparse.Namespace) -> None:
    """The simulate stage: the conveyor loop over test frames with the exported model."""
    from visionpipe.inference import load_predictor, open_frames
    from visionpipe.simulate import simulate as conveyor

    cfg = params.simulate
    predictor = load_predictor(
        args.model, set_threads(params.train.num_threads), expect_task=params.base.task
    )
    frames = open_frames(args.frames, predictor.image_size, root=params.data.path)
    frames = itertools.islice(frames, cfg.max_frames or None)
    csv_path = Path(args.csv)
    csv_path.unlink(missing_ok=True)  # the stage's log is this run's frames only
    summary = conveyor(predictor, frames, cfg.interval_ms, cfg.threshold, csv_path)
    write_json(args.summary, summary)
    log.info("summary: %s", summary)
