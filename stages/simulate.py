"""Stage simulate: the conveyor loop over test images with the exported ONNX model."""

import argparse

from visionpipe.params import Params
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task


def main(params: Params, args: argparse.Namespace) -> None:
    get_task(params.base.task).simulate_stage(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", required=True, help="manifest CSV or folder of frames")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--summary", required=True)
    run_stage("simulate", main, parser)
