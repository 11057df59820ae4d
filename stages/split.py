"""Stage split: stratified train/val/test manifests from the prepared manifest."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from visionpipe.io import write_csv
from visionpipe.manifests import SPLITS
from visionpipe.params import Params
from visionpipe.split import split_manifest
from visionpipe.stage import run_stage

log = logging.getLogger("visionpipe.split")


def main(params: Params, args: argparse.Namespace) -> None:
    manifest = pd.read_csv(Path(args.prepared) / "manifest.csv", keep_default_na=False)
    s = params.split
    frame = split_manifest(manifest, s.train, s.val, s.test, params.base.seed)
    for name in SPLITS:
        part = frame[frame["split"] == name].drop(columns="split")
        write_csv(Path(args.out) / f"{name}.csv", part)
        log.info("%s: %d images", name, len(part))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="folder with manifest.csv")
    parser.add_argument("--out", required=True, help="folder for train/val/test.csv")
    run_stage("split", main, parser)
