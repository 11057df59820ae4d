"""Stage split: train/val/test manifests from the prepared manifest, as the task splits them."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from visionpipe.io import write_csv
from visionpipe.manifests import SPLITS
from visionpipe.params import Params
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task

log = logging.getLogger("visionpipe.split")


def main(params: Params, args: argparse.Namespace) -> None:
    manifest = pd.read_csv(Path(args.prepared) / "manifest.csv", keep_default_na=False)
    frame = get_task(params.base.task).split(manifest, params)
    for name in SPLITS:
        part = frame[frame["split"] == name].drop(columns="split")
        write_csv(Path(args.out) / f"{name}.csv", part)
        log.info("%s: %d images", name, len(part))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="folder with manifest.csv")
    parser.add_argument("--out", required=True, help="folder for train/val/test.csv")
    run_stage("split", main, parser)
