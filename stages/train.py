"""Stage train: fit the task's model on the train split, keep the best epoch by its monitor.

Resumes from ``--state`` after an interruption (same params and data). The task runs it: one
loop for classification and regression (with ``train.nproc > 1`` as that many DDP processes
under torchrun), Faster R-CNN with a state head for detection.
"""

import argparse

from visionpipe.params import Params
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task


def main(params: Params, args: argparse.Namespace) -> None:
    get_task(params.base.task).train_stage(params, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--class-index", required=True, help="class index JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory")
    parser.add_argument("--state", required=True, help="last epoch's state, for resuming")
    run_stage("train", main, parser)
