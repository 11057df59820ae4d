"""Shared entry point of the stage scripts: logging, params validation, one-line user errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from visionpipe.core.errors import UserError
from visionpipe.core.params import Params, load_params

log = logging.getLogger("visionpipe")


def setup_logging() -> None:
    level = os.environ.get("VISIONPIPE_LOG", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_stage(
    name: str,
    main: Callable[[Params, argparse.Namespace], None],
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
) -> None:
    """Parse args, validate params.yaml, run ``main``. A UserError is one line and exit code
    2; Ctrl-C is one line and exit code 130 (what every file already written holds is whole:
    outputs are written atomically, and the training state after each epoch)."""
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    params = None
    try:
        params = load_params(args.params)
        log.info("stage %s: %s valid", name, args.params)
        main(params, args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        state = getattr(args, "state", None)
        resumes = params is not None and params.train.resume
        kept = (
            f"; the training state {state} is kept, and `dvc repro` resumes from its last "
            "epoch when params and data are unchanged"
            if resumes and state and Path(state).is_file()
            else ""
        )
        print(f"interrupted: stage {name} stopped (Ctrl-C){kept}", file=sys.stderr)
        sys.exit(130)
