"""simulate: a conveyor-belt loop that runs the model on frames from a folder at a fixed interval.

    python -m visionpipe.simulate models/export/model.onnx frames/ --interval-ms 250 \
        --threshold 0.55 --csv conveyor/log.csv --summary conveyor/summary.json

FRAMES may also be a video file (read with OpenCV) or a manifest CSV with a ``path`` column
(e.g. data/splits/test.csv, with --root the data folder). Each frame is printed and appended
to the CSV as it is processed (frame, time, class, confidence or value, low_confidence, latency,
whether it missed its interval, error; the detection stage puts the parts/states found in class,
their count in detections and their lowest probability in confidence). Unreadable frames are
skipped and counted. The summary gives frames, throughput, median and p95 latency and the frames
that missed their interval. By default both go to the current folder (simulate_log.csv,
simulate_summary.json), never into the pipeline's tracked results/simulate/ unless asked.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.core.errors import UserError
from visionpipe.core.io import write_json
from visionpipe.core.runtime import set_threads
from visionpipe.core.runtimes import SIDECAR
from visionpipe.core.stage import setup_logging
from visionpipe.core.thresholds import is_target
from visionpipe.deploy.decode import model_threshold
from visionpipe.deploy.drift import DriftMonitor, Reference, image_features, spread_sample
from visionpipe.deploy.predictor import (
    Frame,
    Predictor,
    cli_parser,
    image_frames,
    list_images,
    load_predictor,
    open_frames,
    predict_frame,
    read_sidecar,
)

log = logging.getLogger("visionpipe.deploy.simulate")
COLUMNS = [
    "frame",
    "path",
    "time_s",
    "class",
    "confidence",
    "value",
    "detections",
    "low_confidence",
    "latency_ms",
    "missed_interval",
    "image_distance",
    "low_share",
    "drift",
    "error",
]


def simulate(
    predictor: Predictor,
    frames: Iterable[Frame],
    interval_ms: float,
    threshold: float,
    csv_path: Path,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    monitor: DriftMonitor | None = None,
) -> dict[str, Any]:
    """Process one frame per interval; a frame whose work overruns the interval is a miss.
    With a drift ``monitor``, each frame also updates it (its columns go to the log, flagged
    frames to the summary). Ctrl-C stops the belt: the frames logged so far are summarized
    (``interrupted``)."""
    latencies, missed, bad, low = [], 0, 0, 0
    start = clock()
    finished = start  # end of the last frame's work: the wait for a frame that never came
    # (the source is lazy, so its end shows only when the next frame is due) is not counted
    count, interrupted = 0, False
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not csv_path.exists() or csv_path.stat().st_size == 0
        if not new_file:
            with csv_path.open(newline="") as existing:
                header = next(csv.reader(existing), [])
            if header != COLUMNS:
                raise UserError(
                    f"{csv_path}: a log with other columns ({len(header)}, this version "
                    f"writes {len(COLUMNS)}); move it away or pass another --csv"
                )
        with csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            source = iter(frames)
            while True:
                i = count
                due = start + i * interval_ms / 1000
                now = clock()
                if now < due:
                    sleep(due - now)
                began = clock()
                frame = next(source, None)  # decoding is part of the frame's work
                if frame is None:
                    break
                record = predict_frame(predictor, frame, threshold)
                took_ms = (clock() - began) * 1000
                row = {
                    **record,
                    "frame": i,
                    "time_s": round(began - start, 4),
                    "latency_ms": round(took_ms, 3),  # decode + model: the frame's whole work
                    "missed_interval": took_ms > interval_ms,
                }
                if monitor is not None and frame.image is not None:
                    row.update(monitor.update(i, frame.image, bool(record.get("low_confidence"))))
                writer.writerow(row)
                handle.flush()
                # a frame counts once it is logged, in every counter at once
                count += 1
                if "error" in record:
                    bad += 1
                else:
                    latencies.append(took_ms)
                    low += bool(record.get("low_confidence"))
                    missed += row["missed_interval"]
                finished = clock()
                _print_frame(i, frame, record, took_ms, bool(row.get("drift")))
    except KeyboardInterrupt:
        interrupted = True
    except OSError as exc:
        raise UserError(f"{csv_path}: cannot write the log ({exc.strerror or exc})") from None
    duration = finished - start
    return {
        "frames": count,
        "predicted": len(latencies),
        "bad_frames": bad,
        "low_confidence": low,
        "interval_ms": interval_ms,
        "duration_s": round(duration, 3),
        "throughput_fps": round(len(latencies) / duration, 3) if duration > 0 else None,
        "latency_ms": {
            "median": round(statistics.median(latencies), 3) if latencies else None,
            "p95": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        },
        "missed_interval": missed,
        **({"drift": monitor.summary()} if monitor is not None else {}),
        "interrupted": interrupted,
    }


def _print_frame(
    i: int, frame: Frame, record: dict[str, Any], took_ms: float, drift: bool = False
) -> None:
    if "error" in record:
        log.warning("frame %d skipped: %s", i, record["error"])
        return
    flag = "  LOW CONFIDENCE" if record.get("low_confidence") else ""
    flag += "  DRIFT" if drift else ""
    said = (
        f"{record['target']} {record['value']:.4g}"
        if "value" in record
        else f"{record.get('class')} {record.get('confidence', float('nan')):.3f}"
    )
    print(f"frame {i:5d} {Path(frame.name).name}: {said} ({took_ms:.1f} ms){flag}", flush=True)


class TooFewReferenceImages(UserError):
    """The reference holds fewer than two readable images: no spread to compare with."""


def drift_monitor(
    predictor: Predictor,
    reference: str | Path,
    root: str | Path,
    count: int,
    threshold: float,
    window: int,
    image_tolerance: float,
    low_share_tolerance: float,
) -> DriftMonitor:
    """A monitor whose reference is ``count`` images spread over ``reference`` (a manifest
    such as data/splits/val.csv, images the model was not trained on, or a folder), run
    through the model once before the belt starts; one line when fewer than two of them can
    be read."""
    paths = spread_sample(list_images(reference, root), count)
    features, low = [], []
    for frame in image_frames(paths, predictor):
        if frame.image is not None:
            record = predict_frame(predictor, frame, threshold)
            features.append(image_features(frame.image))
            low.append(bool(record.get("low_confidence")))
    if len(features) < 2:
        raise TooFewReferenceImages(
            f"{reference}: drift reference needs at least 2 readable images, found {len(features)}"
        )
    ref = Reference.from_frames(features, low)
    log.info(
        "drift reference: %d images of %s, %.1f%% low confidence",
        ref.images,
        reference,
        100 * ref.low_share,
    )
    return DriftMonitor(ref, window, image_tolerance, low_share_tolerance)


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser("python -m visionpipe.simulate", __doc__)
    parser.add_argument("frames", help="a folder of images (name order), a manifest CSV or a video")
    parser.add_argument("--root", default=".", help="folder a manifest's paths are relative to")
    parser.add_argument("--interval-ms", type=float, default=250.0)
    parser.add_argument(
        "--threshold",
        type=float,
        help="confidence below this is flagged low (default: the threshold the export "
        "resolved into model.json, else 0.5)",
    )
    parser.add_argument("--max-frames", type=int, default=0, help="0: all frames")
    parser.add_argument(
        "--csv", default="simulate_log.csv", help="CSV the frames are appended to (%(default)s)"
    )
    parser.add_argument(
        "--summary", default="simulate_summary.json", help="summary JSON (%(default)s)"
    )
    parser.add_argument(
        "--reference",
        help="images the frames should look like (a manifest such as data/splits/val.csv, "
        "images the model was not trained on, "
        "with --root, or a folder): turns the drift monitor on",
    )
    parser.add_argument("--reference-frames", type=int, default=100)
    parser.add_argument("--drift-window", type=int, default=50)
    parser.add_argument("--drift-tolerance", type=float, default=1.0)
    parser.add_argument("--low-share-tolerance", type=float, default=0.25)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.interval_ms <= 0:
            raise UserError(f"--interval-ms: {args.interval_ms} must be > 0")
        if args.drift_window < 2 or args.reference_frames < 2:
            raise UserError("--drift-window and --reference-frames: at least 2")
        if args.drift_tolerance <= 0 or not 0 < args.low_share_tolerance <= 1:
            raise UserError("--drift-tolerance: > 0; --low-share-tolerance: in (0, 1]")
        predictor = load_predictor(args.model, args.threads)
        threshold = predictor.threshold if args.threshold is None else args.threshold
        monitor = None
        if args.reference:
            monitor = drift_monitor(
                predictor,
                args.reference,
                args.root,
                args.reference_frames,
                threshold,
                args.drift_window,
                args.drift_tolerance,
                args.low_share_tolerance,
            )
        frames = open_frames(args.frames, predictor, root=args.root)
        frames = itertools.islice(frames, args.max_frames or None)
        summary = simulate(
            predictor, frames, args.interval_ms, threshold, Path(args.csv), monitor=monitor
        )
        write_json(args.summary, summary)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the first frame (loading the model, listing frames)
        print("interrupted before the first frame (Ctrl-C)", file=sys.stderr)
        return 130
    log.info("summary: %s", summary)
    if summary["interrupted"]:
        print(f"interrupted after {summary['frames']} frames (Ctrl-C)", file=sys.stderr)
        return 130
    return 0


#: what the simulate stage's summary.json (a DVC metric) keeps of the summary
HEADLINE = (
    "frames",
    "bad_frames",
    "low_confidence",
    "throughput_fps",
    "latency_ms",
    "missed_interval",
)


def stage_threshold(predictor: Predictor, configured: Any) -> float:
    """The threshold the export stage resolved from ``simulate.threshold`` into model.json;
    a model without one (regression has no confidence) uses the configured number."""
    resolved = model_threshold(predictor.meta)
    if resolved is not None:
        return resolved
    if is_target(configured):
        raise UserError(
            f"{predictor.path}: {SIDECAR} has no resolved threshold for the target "
            f"simulate.threshold {configured}; rerun the export stage"
        )
    return float(configured)


def stage(params: Any, args: argparse.Namespace) -> None:
    """The simulate stage: the conveyor loop over ``simulate.max_frames`` test frames spread
    over the split, with the exported model (the TorchScript file when ONNX could not be
    exported, as results/export/details.json says), watched by the drift monitor against
    validation images (``--reference``: images the model was not trained on, so their share
    of low-confidence predictions is what the belt should show)."""
    cfg = params.simulate
    threads = set_threads(params.train.num_threads)
    model = Path(args.model)
    if not model.is_file() and model.parent.joinpath(SIDECAR).is_file():
        files = read_sidecar(model).get("files", {})
        if "torchscript" in files:
            log.warning("%s: not exported; the conveyor runs %s", model, files["torchscript"])
            model = model.parent / files["torchscript"]
    predictor = load_predictor(model, threads, expect_task=params.base.task)
    threshold = stage_threshold(predictor, cfg.threshold)
    monitor, off = None, {"enabled": False, "reason": "simulate.drift_reference_frames: 0"}
    if cfg.drift_reference_frames and args.reference:
        try:
            monitor = drift_monitor(
                predictor,
                args.reference,
                params.data.path,
                cfg.drift_reference_frames,
                threshold,
                cfg.drift_window,
                cfg.drift_image_tolerance,
                cfg.drift_low_share_tolerance,
            )
        except TooFewReferenceImages as exc:  # a tiny dataset: the belt runs unwatched
            log.warning("drift monitor off: %s", exc)
            off = {"enabled": False, "reason": str(exc)}
    # test images spread over the split (its manifest is sorted by class; a belt is not)
    paths = spread_sample(list_images(args.frames, params.data.path), cfg.max_frames)
    frames = image_frames(paths, predictor)
    csv_path = Path(args.csv)
    csv_path.unlink(missing_ok=True)  # the stage's log is this run's frames only
    summary = simulate(predictor, frames, cfg.interval_ms, threshold, csv_path, monitor=monitor)
    if summary["interrupted"]:  # a partial loop is no result: the stage ends as interrupted
        raise KeyboardInterrupt
    headline = {k: summary[k] for k in HEADLINE}
    if "drift" in summary:
        headline["drift_frames"] = summary["drift"]["flagged_frames"]
    write_json(args.summary, headline)
    drift = summary.get("drift", off)  # the stage's out: always written
    write_json(Path(args.summary).with_name("drift.json"), drift)
    log.info("summary: %s", summary)


if __name__ == "__main__":
    sys.exit(main())
