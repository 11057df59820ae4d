"""Latency of a model call, shared by the evaluate and export stages.

Kept apart from ``visionpipe.core.onnx`` so that timing the PyTorch model in ``evaluate`` does not
pull in (or make the stage depend on) the ONNX export code.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: untimed calls before the timed ones: first calls pay for allocation, autotuning, caches
WARMUP = 5


def latency(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    warmup: int,
    runs: int,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Median and p95 milliseconds per sample of ``fn(x)`` after ``warmup`` calls.

    On a CUDA ``device`` each call is bracketed by a synchronize: kernels run asynchronously,
    so without it the clock would stop before the work is done.
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn(x)
    per_sample = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        fn(x)
        sync()
        per_sample.append((time.perf_counter() - start) * 1000 / len(x))
    return {
        "median_ms": round(statistics.median(per_sample), 4),
        "p95_ms": round(float(np.percentile(per_sample, 95)), 4),
        "runs": runs,
    }


def tile_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """A batch of ``batch`` samples taken from ``x`` in order, repeating when ``x`` is shorter."""
    return x[torch.arange(batch) % len(x)]


def model_latency(
    model: torch.nn.Module,
    x: torch.Tensor,
    device: torch.device,
    batch_sizes: dict[str, int],
    runs: int,
    warmup: int = WARMUP,
) -> dict[str, Any]:
    """ms per sample of a PyTorch model on ``device`` at each named batch size.

    Batches are drawn from ``x`` (uint8 images, on the CPU) and each timed call includes the
    copy to the device, as in ``evaluation.predict``: the cost a caller of the model pays.
    """

    @torch.no_grad()
    def run(batch: torch.Tensor) -> torch.Tensor:
        return model(batch.to(device).contiguous(memory_format=torch.channels_last))

    model.eval()
    timings = {}
    for key, size in batch_sizes.items():
        timings[key] = {
            "batch_size": size,
            **latency(run, tile_batch(x, size), warmup, runs, device),
        }
        log.info("latency at batch %d on %s: %s", size, device, timings[key])
    return {"warmup": warmup, "latency": timings}
