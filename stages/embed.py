"""Stage embed: write the embedded elpv default as a folder of class folders."""

import argparse

from visionpipe.params import Params
from visionpipe.sources import elpv
from visionpipe.stage import run_stage


def main(params: Params, args: argparse.Namespace) -> None:
    elpv.materialize(args.out, max_per_class=params.embedded.max_per_class)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the class folders to")
    run_stage("embed", main, parser)
