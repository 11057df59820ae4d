"""Stage simulate: the conveyor loop over test images with the exported ONNX model."""

import argparse

from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.deploy.simulate import stage


def main(params: Params, args: argparse.Namespace) -> None:
    stage(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", required=True, help="manifest CSV or folder of frames")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--reference", help="manifest of the drift monitor's reference images")
    run_stage("simulate", main, parser)
