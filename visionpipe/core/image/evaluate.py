"""The evaluate stage of the tasks with one output per image: test-split outputs, the task's
tables and figures, and latency; headline figures to metrics.json, the rest to tables/."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from visionpipe.core.batches import predict
from visionpipe.core.checkpoint import load_checkpoint
from visionpipe.core.image.split_images import split_images
from visionpipe.core.image.task import ImageTask
from visionpipe.core.io import write_json
from visionpipe.core.manifests import read_split
from visionpipe.core.params import Params
from visionpipe.core.runtime import choose_device, set_threads
from visionpipe.core.timing import model_latency

log = logging.getLogger("visionpipe.evaluate")

#: the task's evaluation: (task, outputs, targets, manifest, images, labels, params, results
#: folder, figures folder) -> (headline metrics, details); see tasks/<task>/evaluate.py
WriteResults = Callable[..., tuple[dict[str, Any], dict[str, Any]]]
DETAILS = "tables/details.json"


def evaluate(
    task: ImageTask, write_results: WriteResults, params: Params, args: argparse.Namespace
) -> None:
    """Score the checkpoint on the test split. ``metrics.json`` holds what a person compares
    between runs (``dvc metrics show``); per-class values, every latency and counts go to
    ``tables/details.json`` and the task's CSV tables."""
    model, meta = load_checkpoint(args.model)
    labels = meta["labels"]
    task.load_meta(meta)
    task.validate(params, labels)
    test_m = read_split(args.splits, "test")
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    x = split_images(params, test_m, meta["image_size"], "decoding test")
    y = task.targets(test_m, labels)
    model.to(device).to(memory_format=torch.channels_last)
    if task.needs_val_outputs(params):
        val_m = read_split(args.splits, "val")
        val_x = split_images(params, val_m, meta["image_size"], "decoding val")
        val_outputs = predict(model, val_x, params.evaluate.batch_size, device, desc="val")
        task.fit_on_val(val_outputs, task.targets(val_m, labels), labels, params)
    start = time.perf_counter()
    outputs = predict(model, x, params.evaluate.batch_size, device, desc="test")
    seconds = time.perf_counter() - start
    results = Path(args.results)
    headline, details = write_results(
        task, outputs, y, test_m, x, labels, params, results, Path(args.figures)
    )
    ms_per_sample = 1000 * seconds / max(len(x), 1)
    details["inference"] = {
        "ms_per_sample": ms_per_sample,
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
    headline["ms_per_sample"] = ms_per_sample
    write_json(results / DETAILS, details)
    write_json(results / "metrics.json", headline)
    log.info("test: %s", {k: v for k, v in headline.items() if isinstance(v, float)})
