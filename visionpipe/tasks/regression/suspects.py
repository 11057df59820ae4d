"""Regression's suspects stage: every image's target checked against k-fold predictions
(cleanlab's regression label quality, visionpipe.core.suspects)."""

from __future__ import annotations

import argparse

from visionpipe.core.params import Params
from visionpipe.core.suspects import find_suspects, image_items


def suspects(params: Params, args: argparse.Namespace) -> None:
    items = image_items(params, args.splits, "target", "value", params.data.target_column)
    find_suspects(items, params, args)
