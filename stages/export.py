"""Stage export: TorchScript and ONNX, with output parity against PyTorch on test images."""

import argparse
import logging
from pathlib import Path

import torch

from visionpipe import export
from visionpipe.checkpoint import load_checkpoint
from visionpipe.data import load_images
from visionpipe.io import write_json
from visionpipe.manifests import read_split
from visionpipe.params import Params
from visionpipe.runtime import set_threads
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task

log = logging.getLogger("visionpipe.export")


def main(params: Params, args: argparse.Namespace) -> None:
    task = get_task(params.base.task)
    model, meta = load_checkpoint(args.model)
    threads = set_threads(params.train.num_threads)
    test_m = read_split(args.splits, "test").head(params.export.parity_samples)
    x = load_images(
        Path(params.data.path),
        test_m["path"].tolist(),
        meta["image_size"],
        desc="decoding parity images",
    ).float()
    with torch.no_grad():
        reference = model(x)
    out = Path(args.out)
    files = {"torchscript": out / "model.ts", "onnx": out / "model.onnx"}
    export.export_torchscript(model, x[:1], files["torchscript"])
    export.export_onnx(model, x[:1], files["onnx"], params.export.opset)
    outputs = {
        "torchscript": export.run_torchscript(files["torchscript"], x),
        "onnx": export.run_onnx(files["onnx"], x, threads),
    }
    results = {"num_images": int(len(x)), "opset": params.export.opset}
    for fmt, other in outputs.items():
        size_mb = round(files[fmt].stat().st_size / 2**20, 3)
        results[fmt] = {**task.parity(reference, other), "size_mb": size_mb}
        log.info("%s: %s", fmt, results[fmt])
    write_json(args.metrics, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="folder for model.ts and model.onnx")
    parser.add_argument("--metrics", required=True, help="export metrics JSON")
    run_stage("export", main, parser)
