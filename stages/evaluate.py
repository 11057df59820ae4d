"""Stage evaluate: test-split metrics, predictions, mistakes, curves and inference latency."""

import argparse
import logging
import time
from pathlib import Path

import torch

from visionpipe.cache import cached_images
from visionpipe.checkpoint import load_checkpoint
from visionpipe.evaluation import predict
from visionpipe.io import write_json
from visionpipe.manifests import read_split
from visionpipe.params import Params
from visionpipe.runtime import choose_device, set_threads
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task
from visionpipe.timing import model_latency

log = logging.getLogger("visionpipe.evaluate")


def main(params: Params, args: argparse.Namespace) -> None:
    task = get_task(params.base.task)
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--results", required=True, help="folder for metrics.json and the CSV tables"
    )
    parser.add_argument("--figures", required=True)
    run_stage("evaluate", main, parser)
