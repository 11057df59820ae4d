"""INT8 variants of the exported classification model, side by side (a benchmark, not a test).

Quantizes ``models/export/model.onnx`` (run `dvc repro export` first) the way the export stage
does (static QDQ, per-channel, ``export.calibration_samples`` train images, seed 0), once per
variant, and prints for each the validation and test accuracy and macro F1, each class's test
F1, the share of test images where INT8 and fp32 agree, the file size and the batch-1 latency:

    python -m benchmarks.int8_variants                          # 8bit,7bit
    python -m benchmarks.int8_variants --variants 7bit,7bit-p99.9,7bit-entropy

A variant is ``8bit`` or ``7bit`` (``export.reduce_range`` false / true), optionally followed by
``-pNN.N`` (percentile calibration) or ``-entropy``; the histogram calibrations hold every
activation of every calibration image in memory (about 11 GB for Lite1 at 160 px with 64
images). Pick a variant on the validation columns; the test columns are what it costs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from visionpipe.core import onnx as onnx_export
from visionpipe.core.checkpoint import read_checkpoint
from visionpipe.core.image.split_images import calibration_images, split_images
from visionpipe.core.manifests import read_split
from visionpipe.core.params import load_params
from visionpipe.core.runtimes import onnx_session, run_onnx
from visionpipe.core.timing import WARMUP, latency
from visionpipe.tasks import get_task


def static_options(variant: str) -> tuple[bool, dict[str, Any]]:
    """``7bit-p99.9`` -> (reduce_range, quantize_static keyword arguments)."""
    from onnxruntime.quantization import CalibrationMethod

    bits, _, calibration = variant.partition("-")
    if bits not in ("7bit", "8bit"):
        raise SystemExit(f"--variants: {variant!r} must start with 7bit or 8bit")
    if not calibration:
        return bits == "7bit", {}
    if calibration == "entropy":
        return bits == "7bit", {"calibrate_method": CalibrationMethod.Entropy}
    if calibration.startswith("p"):
        try:
            percentile = float(calibration[1:])
        except ValueError:
            raise SystemExit(f"--variants: {calibration!r} is not pNN.N (e.g. p99.9)") from None
        options = {"CalibPercentile": percentile, "CalibTensorRangeSymmetric": False}
        return bits == "7bit", {
            "calibrate_method": CalibrationMethod.Percentile,
            "extra_options": options,
        }
    raise SystemExit(f"--variants: unknown calibration {calibration!r} (pNN.N or entropy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", default="8bit,7bit")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    params = load_params(Path("params.yaml"))
    _, meta = read_checkpoint("models/model.pt")
    task = get_task(meta["task"])
    task.load_meta(meta)
    size, labels, src = meta["image_size"], meta["labels"], Path("models/export/model.onnx")
    images, targets = {}, {}
    for split in ("val", "test"):
        manifest = read_split("data/splits", split)
        images[split] = split_images(params, manifest, size, f"decoding {split}")
        targets[split] = task.targets(manifest, labels)
    calib = calibration_images(params, "data/splits", size)

    def outputs(path: Path) -> tuple[dict[str, torch.Tensor], float]:
        session = onnx_session(path, args.threads)
        run = lambda x: run_onnx(session, x)  # noqa: E731
        out = {s: onnx_export.run_batched(run, images[s]) for s in images}
        one = images["test"][:1].float()
        return out, latency(run, one, WARMUP, params.export.latency_runs)["median_ms"]

    reference, fp32_ms = outputs(src)
    per_label = list(task.per_label_metrics(reference["test"], targets["test"], labels))
    print("variant | val acc / F1 | test acc / F1 | agree | " + " ".join(per_label) + " | MB | ms")

    def row(name: str, out: dict[str, torch.Tensor], path: Path, ms: float) -> None:
        cells = [name]
        for split in ("val", "test"):
            m = task.epoch_metrics(out[split], targets[split])
            cells.append(f"{m['accuracy']:.3f} / {m['f1_macro']:.3f}")
        agree = (out["test"].argmax(1) == reference["test"].argmax(1)).float().mean()
        cells.append(f"{float(agree):.3f}")
        f1 = task.per_label_metrics(out["test"], targets["test"], labels)
        cells.append(" ".join(f"{f1[k]:.3f}" for k in per_label))
        cells += [f"{path.stat().st_size / 2**20:.2f}", f"{ms:.2f}"]
        print(" | ".join(cells), flush=True)

    row("fp32", reference, src, fp32_ms)
    with tempfile.TemporaryDirectory() as work:
        for variant in args.variants.split(","):
            reduce_range, options = static_options(variant)
            dst = Path(work) / f"{variant}.onnx"
            onnx_export.quantize_onnx(src, dst, "static", calib, reduce_range, **options)
            out, ms = outputs(dst)
            row(variant, out, dst, ms)


if __name__ == "__main__":
    main()
