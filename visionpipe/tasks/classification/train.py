"""Classification's train stage: the shared per-image training (visionpipe.core.image.train)."""

from __future__ import annotations

import argparse

from visionpipe.core.image import train as image_train
from visionpipe.core.params import Params
from visionpipe.tasks import code_fingerprint
from visionpipe.tasks.classification.model import TASK


def train(params: Params, args: argparse.Namespace) -> None:
    image_train.train(TASK(), params, args, code_fingerprint("classification", "train"))
