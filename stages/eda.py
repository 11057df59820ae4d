"""Stage eda: the task's exploratory figures and summary of all splits."""

import argparse
from pathlib import Path

from visionpipe.core.io import read_json, write_json
from visionpipe.core.manifests import read_splits
from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import task_data


def main(params: Params, args: argparse.Namespace) -> None:
    report = read_json(args.report) if Path(args.report).is_file() else None
    summary = task_data(params.base.task).eda(
        read_splits(args.splits), params, Path(args.figures), report, Path(args.splits)
    )
    write_json(args.summary, summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--report", required=True, help="the prepare stage's data report")
    parser.add_argument("--figures", required=True)
    parser.add_argument("--summary", required=True)
    run_stage("eda", main, parser)
