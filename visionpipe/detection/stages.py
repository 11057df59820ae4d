"""The train, evaluate, export and simulate stages of the detection task.

Same stage scripts, arguments and outputs as the per-image tasks (checkpoint, class index,
dvclive folder, metrics, predictions.csv and curves.csv, exported models, conveyor log), so
dvc.yaml, `dvc metrics show` and `dvc plots` work unchanged; only what is inside differs.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from dvclive import Live

import visionpipe
from visionpipe import resume
from visionpipe.checkpoint import read_checkpoint, save_checkpoint
from visionpipe.detection import export as detection_export
from visionpipe.detection.data import (
    DetectionSet,
    decode_scaled,
    fit_scale,
    load_split,
    part_names,
    to_coco_results,
)
from visionpipe.detection.draw import save_prediction_images
from visionpipe.detection.metrics import (
    evaluate_coco,
    match_detections,
    pr_figure,
    state_confusion_figure,
    state_metrics,
)
from visionpipe.detection.model import build_detector, detector_from_checkpoint
from visionpipe.detection.training import fit_detector, predict
from visionpipe.errors import DataError, UserError
from visionpipe.io import write_csv, write_json
from visionpipe.manifests import fingerprint
from visionpipe.models import count_parameters
from visionpipe.params import Params, as_dict
from visionpipe.runtime import choose_device, seed_everything, set_threads
from visionpipe.timing import WARMUP, latency
from visionpipe.tracking import epoch_logger

if TYPE_CHECKING:  # the task module imports this one
    from visionpipe.tasks.detection import DetectionTask

log = logging.getLogger("visionpipe.detection")


def _split_coco(args: argparse.Namespace, name: str) -> dict:
    from visionpipe.tasks.detection import read_split_coco  # the task module imports this one

    return read_split_coco(Path(args.splits), name)


def load_detector(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The detector saved by the train stage (eval mode) and its metadata."""
    state_dict, meta = read_checkpoint(path)
    if meta.get("task") != "detection":
        raise UserError(f"{path}: a {meta.get('task')} model, but base.task is detection")
    return detector_from_checkpoint(state_dict, meta).eval(), meta


def state_key(params: Params, dataset: str, parts: list[str]) -> str:
    """What a saved training state must match to be resumed (see visionpipe.resume)."""
    sections = {k: as_dict(v) for k, v in (("base", params.base), ("detection", params.detection))}
    train = {k: v for k, v in as_dict(params.train).items() if k != "resume"}
    package = Path(visionpipe.__file__).parent
    code = resume.code_fingerprint(package, package.parent / "stages" / "train.py")
    return resume.fingerprint(train, sections, dataset, parts, code)


def train(task: DetectionTask, params: Params, args: argparse.Namespace) -> None:
    """Fit the detector on the train split; keep the best epoch by the monitor on val."""
    cfg = params.detection
    if params.train.nproc > 1:
        raise UserError(
            f"train.nproc: {params.train.nproc}, but detection trains in one process "
            "(DistributedDataParallel is for classification and regression); use 1"
        )
    monitor = task.monitor(params)
    name = monitor.removeprefix("val_")
    train_gt, val_gt = _split_coco(args, "train"), _split_coco(args, "val")
    parts = part_names(train_gt)
    gen = seed_everything(params.base.seed)
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    built = build_detector(
        cfg.arch,
        len(parts),
        len(cfg.states),
        cfg.pretrained,
        cfg.min_size,
        cfg.max_size,
        cfg.trainable_layers,
    )
    log.info(
        "detector %s, parts %s, states %s, initial weights: %s",
        built.arch,
        ", ".join(parts),
        ", ".join(cfg.states),
        built.weights_source,
    )
    root = Path(params.data.path)
    train_set = load_split(
        root, train_gt, cfg.states, cfg.min_size, cfg.max_size, desc="decoding train"
    )
    val_set = load_split(root, val_gt, cfg.states, cfg.min_size, cfg.max_size, desc="decoding val")
    dataset = fingerprint(args.splits)
    with Live(args.live, dvcyaml=False, save_dvc_exp=False, report=None) as live:
        result = fit_detector(
            built.model,
            train_set,
            val_set,
            val_gt,
            params,
            (name, task.monitor_modes[name]),
            device,
            gen,
            epoch_logger(live),
            args.state if params.train.resume else None,
            state_key(params, dataset, parts),
        )
        live.summary["best"] = {"step": result.best_epoch, monitor: result.best_value}
        live.summary["dataset"] = {
            "fingerprint": dataset,
            "train_images": len(train_set),
            "val_images": len(val_set),
            "train_boxes": len(train_gt["annotations"]),
            "val_boxes": len(val_gt["annotations"]),
        }
        live.summary["model"] = {
            "arch": built.arch,
            "parameters": count_parameters(built.model),
            "initial_weights": built.weights_source,
        }
        live.summary["epochs_run"] = len(result.history)
        live.summary["stopped_early"] = result.stopped_early

    built.model.load_state_dict(result.best_state)
    meta = {
        "task": task.name,
        "arch": built.arch,
        "labels": parts,
        "num_parts": len(parts),
        "states": list(cfg.states),
        "num_states": len(cfg.states),
        "min_size": cfg.min_size,
        "max_size": cfg.max_size,
        "trainable_layers": cfg.trainable_layers,
        "score_threshold": cfg.score_threshold,
        "input": "list of RGB float images 3 x H x W, 0..255 (normalization is inside the model)",
        "initial_weights": built.weights_source,
        "num_parameters": count_parameters(built.model),
        "dataset_fingerprint": dataset,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "monitor": {monitor: result.best_value},
        "device": str(device),
        "threads": threads,
        "detection_params": as_dict(cfg),
    }
    save_checkpoint(args.model, built.model, meta)
    write_json(args.class_index, {str(i + 1): part for i, part in enumerate(parts)})
    log.info(
        "best epoch %d of %d (%s=%.4f) saved to %s",
        result.best_epoch + 1,
        cfg.epochs,
        monitor,
        result.best_value,
        args.model,
    )


def _test_set(params: Params, meta: dict, gt: dict) -> DetectionSet:
    return load_split(
        Path(params.data.path),
        gt,
        meta["states"],
        meta["min_size"],
        meta["max_size"],
        desc="decoding test",
    )


def evaluate(task: DetectionTask, params: Params, args: argparse.Namespace) -> None:
    """COCO mAP, per-part AP and PR curves, state accuracy and confusion on matched boxes, the
    predictions, drawn test images and latency per image at batch 1."""
    cfg = params.detection
    model, meta = load_detector(args.model)
    gt = _split_coco(args, "test")
    if meta["states"] != gt.get("states", meta["states"]) or part_names(gt) != meta["labels"]:
        raise UserError(
            f"{args.model}: trained for parts {meta['labels']} and states {meta['states']}, "
            f"but the test split has {part_names(gt)} and {gt.get('states')}; retrain"
        )
    test = _test_set(params, meta, gt)
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    model.to(device)
    start = time.perf_counter()
    outputs = predict(model, test, 1, device, desc="test")
    seconds = time.perf_counter() - start
    records = to_coco_results(outputs, test.image_ids, test.scales, gt, meta["states"])
    coco = evaluate_coco(gt, records)
    matches = match_detections(gt, records, cfg.iou_threshold, cfg.score_threshold)
    states = state_metrics(matches, meta["states"])

    results, figures = Path(args.results), Path(args.figures)
    write_csv(results / "predictions.csv", matches)
    write_csv(results / "curves.csv", coco.curves)
    write_json(results / "tables" / "detections.json", records)
    per_part = pd.DataFrame(
        [{"part": part, **values} for part, values in coco.metrics["per_part"].items()]
    )
    write_csv(results / "tables" / "per_part_ap.csv", per_part)
    pr_figure(coco.curves, figures / "precision_recall.png", parts=meta["labels"])
    state_confusion_figure(matches, meta["states"], figures / "state_confusion.png")
    drawn = min(cfg.draw_images, len(test))
    save_prediction_images(
        [img.permute(1, 2, 0).numpy() for img in test.images[:drawn]],
        outputs[:drawn],
        test.targets[:drawn],
        meta["labels"],
        meta["states"],
        figures,
        drawn,
        score_threshold=cfg.score_threshold,
    )

    x = test.images[0].to(device).float()

    @torch.no_grad()
    def run_one(_: torch.Tensor) -> Any:
        return model([x])

    metrics = {
        **{k: coco.metrics[k] for k in ("map", "map_50", "map_75")},
        "state_accuracy": states["state_accuracy"],
        "part_accuracy": states["part_accuracy"],
        "detection_precision": states["detection_precision"],
        "detection_recall": states["detection_recall"],
        "per_part": coco.metrics["per_part"],
        "per_state_recall": states["per_state_recall"],
        "state_confusion": states["confusion"],
        "counts": {
            "test_images": len(test),
            "ground_truth_boxes": states["ground_truth"],
            "detections_kept": states["detections"],
            "matched": states["matched"],
            "unmatched_detections": states["unmatched_detections"],
            "missed": states["missed"],
        },
        "thresholds": {"score": cfg.score_threshold, "iou": cfg.iou_threshold},
        "coco": {k: v for k, v in coco.metrics.items() if k not in ("per_part",)},
        "inference": {
            "ms_per_image": 1000 * seconds / max(len(test), 1),
            "batch_size": 1,
            "device": str(device),
            "threads": threads,
            "latency": {"batch_1": latency(run_one, x[None], WARMUP, params.evaluate.latency_runs)},
        },
    }
    write_json(results / "metrics.json", metrics)
    log.info(
        "test: mAP %.4f, mAP@.5 %.4f, state accuracy %s",
        metrics["map"] or 0.0,
        metrics["map_50"] or 0.0,
        metrics["state_accuracy"],
    )


def sidecar(meta: dict, files: dict[str, Path], input_hw: tuple[int, int]) -> dict:
    """What a consumer of the exported detector needs besides the files."""
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
            "name": detection_export.INPUT_NAME,
            "layout": "NCHW, batch 1",
            "dtype": "float32",
            "color": "RGB",
            "range": [0, 255],
            "size": "ONNX: fixed at image_size (height, width); resize with the aspect kept",
        },
        "output": {
            "names": list(detection_export.OUTPUT_NAMES),
            "boxes": "x1, y1, x2, y2 in input pixels",
            "labels": "index into labels, plus 1 (0 is background)",
            "states": "index into states",
            "state_scores": "probability of the predicted state",
        },
        "files": {fmt: path.name for fmt, path in files.items()},
    }


def export(task: DetectionTask, params: Params, args: argparse.Namespace) -> None:
    """TorchScript and ONNX (legacy exporter, batch 1) with parity on boxes, scores and states
    against PyTorch and latency per image; a format that cannot be exported is recorded with
    the reason instead of failing the stage."""
    from visionpipe.inference import SIDECAR

    cfg = params.export
    model, meta = load_detector(args.model)
    threads = set_threads(params.train.num_threads)
    test = _test_set(params, meta, _split_coco(args, "test"))
    example = test.images[0][None].float()
    same_size = [img[None].float() for img in test.images if img.shape == test.images[0].shape]
    parity_x = same_size[: cfg.parity_samples]
    out = Path(args.out)
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    exporters = {
        "torchscript": lambda path: detection_export.export_torchscript(model, example, path),
        "onnx": lambda path: detection_export.export_onnx(model, example, path, cfg.opset),
    }
    loaders = {
        "torchscript": lambda path: _bind(detection_export.run_torchscript, torch.jit.load(path)),
        "onnx": lambda path: _bind(
            detection_export.run_onnx, detection_export.onnx_session(path, threads)
        ),
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
        error = detection_export.try_export(exporters[fmt], path)
        if error is None:
            try:
                runners[fmt] = loaders[fmt](path)
                parity = detection_export.detection_parity(
                    reference, [runners[fmt](x) for x in parity_x]
                )
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
    write_json(out / SIDECAR, sidecar(meta, exported, tuple(example.shape[-2:])))

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
    write_json(args.metrics, results)


def _bind(run: Any, model: Any) -> Any:
    return lambda image: run(model, image)


def frame_record(
    output: dict[str, Any], labels: list[str], states: list[str], threshold: float
) -> dict[str, Any]:
    """One conveyor frame: the parts and states kept (score >= ``threshold``), and as its
    confidence the lowest box or state probability among them (1 when nothing is found)."""
    scores = torch.as_tensor(output["scores"])
    keep = scores >= threshold
    kept_labels = torch.as_tensor(output["labels"])[keep].tolist()
    kept_states = torch.as_tensor(output["states"])[keep].tolist()
    state_scores = torch.as_tensor(output["state_scores"])[keep]
    counts: dict[str, int] = {}
    for label, state in zip(kept_labels, kept_states, strict=True):
        key = f"{labels[int(label) - 1]}/{states[int(state)]}"
        counts[key] = counts.get(key, 0) + 1
    lowest = torch.minimum(scores[keep], state_scores).min() if len(kept_labels) else None
    return {
        "class": " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "none",
        "confidence": float(lowest) if lowest is not None else 1.0,
        "detections": len(kept_labels),
    }


def _frames(paths: list[Path], meta: dict) -> Iterator[Any]:
    from visionpipe.inference import Frame

    height, width = meta["image_size"]
    for path in paths:
        try:
            image = decode_scaled(path, 1.0)
            if tuple(image.shape[-2:]) != (height, width):
                scale = fit_scale(image.shape[-1], image.shape[-2], height, width)
                image = decode_scaled(path, scale)
                image = _pad(image, height, width)
            yield Frame(str(path), image[None].float())
        except DataError as exc:
            yield Frame(str(path), None, f"{path}: cannot decode image ({exc.__cause__})")


def _pad(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    out = torch.zeros((3, height, width), dtype=image.dtype)
    h, w = min(height, image.shape[1]), min(width, image.shape[2])
    out[:, :h, :w] = image[:, :h, :w]
    return out


def simulate(task: DetectionTask, params: Params, args: argparse.Namespace) -> None:
    """The conveyor loop with the exported detector: one CSV row per frame (parts and states
    found, lowest confidence, latency, missed interval)."""
    from visionpipe.inference import Predictor, read_sidecar
    from visionpipe.simulate import simulate as conveyor

    cfg = params.simulate
    threads = set_threads(params.train.num_threads)
    model_path = Path(args.model)
    meta = read_sidecar(model_path)
    if model_path.is_file():
        session = detection_export.onnx_session(model_path, threads)
        run = _bind(detection_export.run_onnx, session)
    elif "torchscript" in meta["files"]:  # ONNX could not be exported: the reason is in
        ts = model_path.parent / meta["files"]["torchscript"]  # results/export/metrics.json
        log.warning("%s: not exported; the conveyor runs %s", model_path, ts)
        run = _bind(detection_export.run_torchscript, torch.jit.load(ts))
    else:
        raise UserError(f"{model_path}: not exported (see results/export/metrics.json)")
    task.load_meta(meta)
    predictor = Predictor(model_path, meta, task, lambda image: [run(image)])
    root = Path(params.data.path)
    paths = [root / p for p in pd.read_csv(args.frames, keep_default_na=False)["path"]]
    frames = itertools.islice(_frames(paths, meta), cfg.max_frames or None)
    csv_path = Path(args.csv)
    csv_path.unlink(missing_ok=True)
    summary = conveyor(predictor, frames, cfg.interval_ms, cfg.threshold, csv_path)
    write_json(args.summary, summary)
    log.info("summary: %s", summary)
