"""Stage prepare: scan data.path (class folders, or a labels table) into a manifest and report."""

import argparse
import logging
from pathlib import Path

from visionpipe.errors import DataError
from visionpipe.io import write_csv, write_json
from visionpipe.params import Params
from visionpipe.sources.folder import ScanResult, data_report, scan_folder
from visionpipe.sources.table import scan_table, table_report
from visionpipe.stage import run_stage

log = logging.getLogger("visionpipe.prepare")


def scan(params: Params) -> tuple[ScanResult, dict]:
    """The manifest from whichever source data.table selects, and its data report."""
    d = params.data
    if d.table:
        result = scan_table(d.path, d.table, d.sheet, d.image_column, d.label_column, d.classes)
        return result, table_report(result)
    result = scan_folder(d.path)
    extra = [c for c in result.classes if d.classes and c not in d.classes]
    if extra:
        raise DataError(
            f"{Path(d.path) / extra[0]}: class folder not in data.classes ({', '.join(d.classes)})"
        )
    return result, data_report(result)


def main(params: Params, args: argparse.Namespace) -> None:
    result, report = scan(params)
    write_csv(Path(args.out) / "manifest.csv", result.samples)
    write_json(args.report, report)
    log.info(
        "%d images in %d classes (%s layout), %d skipped: see %s",
        len(result.samples),
        len(result.classes),
        result.layout,
        len(result.skipped),
        args.report,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder for manifest.csv")
    parser.add_argument("--report", required=True, help="data report JSON")
    run_stage("prepare", main, parser)
