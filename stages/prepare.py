"""Stage prepare: scan data.path (class folders, a table, or COCO annotations) into a manifest
and a data report."""

import argparse
import logging
from pathlib import Path

from visionpipe.core.io import write_json
from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import task_data

log = logging.getLogger("visionpipe.prepare")


def main(params: Params, args: argparse.Namespace) -> None:
    task = task_data(params.base.task)
    result, report = task.scan(params)
    task.write_prepared(result, Path(args.out))
    write_json(args.report, report)
    log.info(
        "%d images (%s layout), %d skipped: see %s",
        len(result.samples),
        result.layout,
        len(result.skipped),
        args.report,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder for manifest.csv")
    parser.add_argument("--report", required=True, help="data report JSON")
    run_stage("prepare", main, parser)
