"""Stage prepare: scan data.path (class folders, flat or pre-split) into a manifest and report."""

import argparse
import logging
from pathlib import Path

from visionpipe.io import write_csv, write_json
from visionpipe.params import Params
from visionpipe.sources.folder import data_report, scan_folder
from visionpipe.stage import run_stage

log = logging.getLogger("visionpipe.prepare")


def main(params: Params, args: argparse.Namespace) -> None:
    scan = scan_folder(params.data.path)
    write_csv(Path(args.out) / "manifest.csv", scan.samples)
    write_json(args.report, data_report(scan))
    log.info(
        "%d images in %d classes (%s layout), %d skipped: see %s",
        len(scan.samples),
        len(scan.classes),
        scan.layout,
        len(scan.skipped),
        args.report,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder for manifest.csv")
    parser.add_argument("--report", required=True, help="data report JSON")
    run_stage("prepare", main, parser)
