"""Stage export: TorchScript and ONNX (classification and regression also INT8 ONNX), with
parity against PyTorch and latency."""

import argparse

from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import stage_function


def main(params: Params, args: argparse.Namespace) -> None:
    stage_function(params.base.task, "export")(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="folder for the exported models")
    parser.add_argument("--metrics", required=True, help="export metrics JSON")
    parser.add_argument("--latency", required=True, help="latency table CSV (a DVC bar plot)")
    run_stage("export", main, parser)
