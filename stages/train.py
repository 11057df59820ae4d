"""Stage train: fit the task's model on the train split, keep the best epoch by its monitor.

Resumes from ``--state`` after an interruption (same params and data). The task runs it through
the one training engine (with ``train.nproc > 1`` as that many DDP processes under torchrun).
"""

import argparse

from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import stage_function


def main(params: Params, args: argparse.Namespace) -> None:
    stage_function(params.base.task, "train")(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--class-index", required=True, help="class index JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory")
    parser.add_argument("--state", required=True, help="last epoch's state, for resuming")
    run_stage("train", main, parser)
