"""Stage evaluate: test-split metrics, predictions, curves, figures and inference latency."""

import argparse

from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import stage_function


def main(params: Params, args: argparse.Namespace) -> None:
    stage_function(params.base.task, "evaluate")(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--results", required=True, help="folder for metrics.json and the CSV tables"
    )
    parser.add_argument("--figures", required=True)
    run_stage("evaluate", main, parser)
