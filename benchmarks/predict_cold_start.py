"""Cold start of `python -m visionpipe.predict` on one image: a fresh process each run, so the
imports, the model load and the first prediction are all counted.

    python -m benchmarks.predict_cold_start MODEL.onnx IMAGE [--runs 5] [--baseline OTHER_CHECKOUT]

With ``--baseline``, the runs alternate between this checkout and the other one (e.g. a clone of
an older commit), so both see the same machine load, and the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cold_start(checkout: Path, model: str, image: str) -> float:
    """Seconds from process start to exit of one predict call run from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "VISIONPIPE_LOG": "WARNING"}
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "visionpipe.predict", model, image],
        cwd=checkout,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare against")
    args = parser.parse_args()
    model, image = str(Path(args.model).resolve()), str(Path(args.image).resolve())
    checkouts = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    for _ in range(args.runs):
        for name, checkout in checkouts.items():
            times[name].append(cold_start(checkout, model, image))
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.2f} s over {len(values)} runs")
    if args.baseline:
        ratio = statistics.median(times["this"]) / statistics.median(times["baseline"])
        print(f"this / baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()
