"""Regression's export stage: TorchScript, ONNX and INT8 ONNX with parity
(visionpipe.core.image.export)."""

from __future__ import annotations

import argparse

from visionpipe.core.image import export as image_export
from visionpipe.core.params import Params
from visionpipe.tasks.regression.model import TASK


def export(params: Params, args: argparse.Namespace) -> None:
    image_export.export(TASK(), params, args)
