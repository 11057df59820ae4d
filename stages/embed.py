"""Stage embed: write the embedded elpv default: class folders and a sheet of the real cells,
and EL module panels composed from them with COCO boxes and states (the detection default)."""

import argparse

from visionpipe.core.params import Params
from visionpipe.core.stage import run_stage
from visionpipe.embedded import elpv, panels


def main(params: Params, args: argparse.Namespace) -> None:
    e = params.embedded
    elpv.materialize(args.out, max_per_class=e.max_per_class)
    panels.compose_panels(
        args.out, e.panels, e.panel_rows, e.panel_cols, e.cell_size, seed=params.base.seed
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the embedded data to")
    run_stage("embed", main, parser)
