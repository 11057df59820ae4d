"""Stage simulate: the conveyor loop over test images with the exported ONNX model."""

import argparse
import itertools
import logging
from pathlib import Path

from visionpipe.inference import load_predictor, open_frames
from visionpipe.io import write_json
from visionpipe.params import Params
from visionpipe.runtime import set_threads
from visionpipe.simulate import simulate
from visionpipe.stage import run_stage

log = logging.getLogger("visionpipe.simulate")


def main(params: Params, args: argparse.Namespace) -> None:
    cfg = params.simulate
    predictor = load_predictor(
        args.model, set_threads(params.train.num_threads), expect_task=params.base.task
    )
    frames = open_frames(args.frames, predictor.image_size, root=params.data.path)
    frames = itertools.islice(frames, cfg.max_frames or None)
    csv_path = Path(args.csv)
    csv_path.unlink(missing_ok=True)  # the stage's log is this run's frames only
    summary = simulate(predictor, frames, cfg.interval_ms, cfg.threshold, csv_path)
    write_json(args.summary, summary)
    log.info("summary: %s", summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", required=True, help="manifest CSV or folder of frames")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--summary", required=True)
    run_stage("simulate", main, parser)
