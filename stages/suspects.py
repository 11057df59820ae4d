"""Stage suspects: likely label errors, ranked by confident learning (cleanlab) on k-fold
probabilities from frozen ImageNet features (``suspects.enabled: false`` turns it off)."""

import argparse
from pathlib import Path

from visionpipe.core import suspects
from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import stage_function


def main(params: Params, args: argparse.Namespace) -> None:
    if not params.suspects.enabled:
        suspects.off(Path(args.out), Path(args.figures), "suspects.enabled: false")
        return
    stage_function(params.base.task, "suspects")(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument(
        "--out", required=True, help="folder for suspects.csv, summary.json and details.json"
    )
    parser.add_argument("--figures", required=True, help="folder for top_suspects.png")
    run_stage("suspects", main, parser)
