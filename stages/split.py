"""Stage split: train/val/test manifests from the prepared manifest, as the task splits them."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from visionpipe.core import duplicates
from visionpipe.core.io import write_json
from visionpipe.core.manifests import SPLITS
from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.tasks import task_data

log = logging.getLogger("visionpipe.core.split")


def main(params: Params, args: argparse.Namespace) -> None:
    manifest = pd.read_csv(Path(args.prepared) / "manifest.csv", keep_default_na=False)
    task = task_data(params.base.task)
    frame = task.split(manifest, params)
    s = params.split
    root = Path(params.data.path)
    frame, found = duplicates.check_splits(frame, root, s.duplicate_distance, s.dedupe)
    write_json(args.duplicates, found)
    task.write_splits(frame, Path(args.prepared), Path(args.out))
    for name in SPLITS:
        log.info("%s: %d images", name, int((frame["split"] == name).sum()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="folder with manifest.csv")
    parser.add_argument("--out", required=True, help="folder for train/val/test.csv")
    parser.add_argument(
        "--duplicates", required=True, help="report of duplicate images across the splits"
    )
    run_stage("split", main, parser)
