"""Classification's suspects stage: every image's class label checked by confident learning
(visionpipe.core.suspects)."""

from __future__ import annotations

import argparse

from visionpipe.core.params import Params
from visionpipe.core.suspects import find_suspects, image_items


def suspects(params: Params, args: argparse.Namespace) -> None:
    name = params.data.label_column if params.data.table else "class"
    find_suspects(image_items(params, args.splits, "label", "class", name), params, args)
